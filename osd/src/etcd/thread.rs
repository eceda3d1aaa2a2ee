//! The handle the data path holds: spawning the side thread, draining its events, sending it
//! commands and stopping it.

use std::os::fd::RawFd;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use vitastor_layout::OsdNum;

use super::event::{EventSink, WakeFd};
use super::session::Runner;
use super::{
    EtcdAddress, EtcdCommand, EtcdError, EtcdEvent, DEFAULT_CALL_TIMEOUT, DEFAULT_PREFIX,
    DEFAULT_REPORT_INTERVAL, MIN_LEASE_TTL,
};

/// Extra time [`Drop`] gives the thread beyond one call timeout (the lease revoke) to exit.
const JOIN_SLACK: Duration = Duration::from_secs(1);
/// How often [`Drop`] checks whether the thread has finished.
const JOIN_POLL: Duration = Duration::from_millis(5);

/// What the side thread needs. Build with [`EtcdConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Where etcd is.
    pub address: EtcdAddress,
    /// Key prefix (`etcd_prefix`), without a trailing slash.
    pub prefix: String,
    /// This OSD's number: the state key is `<prefix>/osd/state/<osd_num>`.
    pub osd_num: OsdNum,
    /// The value of the state key, written verbatim (see [`osd_state_json`]).
    pub state: Value,
    /// `etcd_report_interval`: keepalive period.
    pub report_interval: Duration,
    /// Lease TTL; `None` means `max(3 * report_interval, MIN_LEASE_TTL)`: three missed
    /// keepalives in a row before etcd declares the OSD down, and never less than
    /// [`MIN_LEASE_TTL`]. Rounded up to whole seconds (etcd's unit).
    pub lease_ttl: Option<Duration>,
    /// Bound on every single etcd call.
    pub call_timeout: Duration,
}

impl EtcdConfig {
    /// Defaults: prefix `/vitastor`, 5 s report interval, derived TTL, 5 s call timeout.
    pub fn new(address: EtcdAddress, osd_num: OsdNum, state: Value) -> EtcdConfig {
        EtcdConfig {
            address,
            prefix: DEFAULT_PREFIX.to_string(),
            osd_num,
            state,
            report_interval: DEFAULT_REPORT_INTERVAL,
            lease_ttl: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The TTL asked for, in whole seconds.
    pub fn lease_ttl(&self) -> Duration {
        let ttl = self
            .lease_ttl
            .unwrap_or_else(|| (self.report_interval * 3).max(MIN_LEASE_TTL));
        Duration::from_secs(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
    }

    fn validate(mut self) -> Result<EtcdConfig, EtcdError> {
        let bad = |s: String| Err(EtcdError::BadConfig(s));
        if self.report_interval.is_zero() || self.call_timeout.is_zero() {
            return bad("report interval and call timeout must be positive".to_string());
        }
        // A TTL not above the interval would let the lease lapse between two keepalives.
        if self.lease_ttl() <= self.report_interval {
            return bad(format!(
                "lease TTL {:?} must exceed the report interval {:?}",
                self.lease_ttl(),
                self.report_interval
            ));
        }
        match vitastor_etcd::normalize_prefix(&self.prefix) {
            Ok(prefix) => self.prefix = prefix,
            Err(e) => return bad(e.to_string()),
        }
        Ok(self)
    }
}

/// The state JSON an OSD reports (`osd/state/<osd_num>`), built from the layout's type so
/// that the OSD writes exactly what the monitor and the clients parse; `version` is this
/// program's, as the original's tools show it.
pub fn osd_state_json(
    addresses: &[String],
    port: u16,
    host: &str,
    primary_enabled: bool,
    blockstore_enabled: bool,
) -> Value {
    vitastor_layout::OsdState {
        state: "up".to_string(),
        addresses: addresses.to_vec(),
        port,
        host: host.to_string(),
        primary_enabled,
        blockstore_enabled,
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
    .to_json()
}

/// The data path's handle on the etcd side thread. Dropping it shuts the thread down.
#[derive(Debug)]
pub struct EtcdThread {
    commands: UnboundedSender<EtcdCommand>,
    events: mpsc::Receiver<EtcdEvent>,
    wake: Arc<WakeFd>,
    handle: Option<JoinHandle<()>>,
    join_timeout: Duration,
}

impl EtcdThread {
    /// Starts the side thread. Fails only on a bad configuration or if the OS refuses an
    /// eventfd, a runtime or a thread; an unreachable etcd is retried on the thread.
    pub fn spawn(cfg: EtcdConfig) -> Result<EtcdThread, EtcdError> {
        let cfg = cfg.validate()?;
        let wake = Arc::new(WakeFd::new()?);
        let (event_tx, events) = mpsc::channel();
        let (commands, command_rx) = unbounded_channel();
        // Built here rather than on the thread so a failure is returned, not lost.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| EtcdError::Io {
                what: "building the etcd thread's runtime",
                source,
            })?;
        let join_timeout = cfg.call_timeout + JOIN_SLACK;
        let sink = EventSink {
            tx: event_tx,
            wake: Arc::clone(&wake),
        };
        let runner = Runner::new(cfg, sink, command_rx);
        let handle = thread::Builder::new()
            .name("osd-etcd".to_string())
            .spawn(move || runtime.block_on(runner.run()))
            .map_err(|source| EtcdError::Io {
                what: "spawning the etcd thread",
                source,
            })?;
        Ok(EtcdThread {
            commands,
            events,
            wake,
            handle: Some(handle),
            join_timeout,
        })
    }

    /// An fd that is readable whenever [`Self::drain`] has something to return.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.raw()
    }

    /// Clears the wake fd and returns every pending event, without blocking.
    pub fn drain(&self) -> Vec<EtcdEvent> {
        // Clear first: an event sent after this point signals the fd again, so none is left
        // behind with a quiet fd.
        self.wake.clear();
        self.events.try_iter().collect()
    }

    /// Queues a command; never blocks. Commands after the thread has ended are dropped.
    pub fn send(&self, command: EtcdCommand) {
        // An error means the thread has exited (only after Shutdown); nothing left to do.
        let _ = self.commands.send(command);
    }
}

impl Drop for EtcdThread {
    /// Sends [`EtcdCommand::Shutdown`] and waits (bounded) for the thread: the lease revoke
    /// has at most one call timeout. A thread still running after that is left to finish on
    /// its own rather than holding up the OSD's exit.
    fn drop(&mut self) {
        self.send(EtcdCommand::Shutdown);
        let Some(handle) = self.handle.take() else {
            return;
        };
        let deadline = Instant::now() + self.join_timeout;
        while !handle.is_finished() && Instant::now() < deadline {
            thread::sleep(JOIN_POLL);
        }
        if handle.is_finished() {
            // The thread catches nothing that could panic; a panic would already be printed.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> EtcdConfig {
        EtcdConfig::new(
            EtcdAddress::parse("127.0.0.1:2379/v3").unwrap(),
            OsdNum(1),
            json!({}),
        )
    }

    #[test]
    fn lease_ttl_defaults_and_rounding() {
        let mut c = cfg();
        assert_eq!(c.lease_ttl(), Duration::from_secs(15));
        c.report_interval = Duration::from_secs(1);
        assert_eq!(c.lease_ttl(), MIN_LEASE_TTL);
        c.lease_ttl = Some(Duration::from_millis(2500));
        assert_eq!(c.lease_ttl(), Duration::from_secs(3));
    }

    #[test]
    fn validation() {
        let mut c = cfg();
        c.prefix = "/vitastor/".to_string();
        assert_eq!(c.validate().unwrap().prefix, "/vitastor");
        let mut c = cfg();
        c.prefix = "vitastor".to_string();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.lease_ttl = Some(Duration::from_secs(5));
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.call_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
    }
}
