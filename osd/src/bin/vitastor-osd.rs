//! `vitastor-osd`: the OSD daemon. It stores the data of the PGs placed on it (secondary ops
//! from the local blockstore) and leads the PGs it is primary of (client ops, peering,
//! replication, recovery); see `vitastor_osd::server`. Options are described in
//! `vitastor_osd::options`.

use std::io::Write;
use std::process::ExitCode;

use vitastor_blockstore::Blockstore;
use vitastor_osd::etcd::{osd_state_json, EtcdAddress, EtcdConfig, EtcdThread};
use vitastor_osd::options::{command, from_matches, hostname};
use vitastor_osd::peers::PeerTimeouts;
use vitastor_osd::server::{Server, ServerConfig, ServerError};
use vitastor_osd::shutdown::Shutdown;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vitastor-osd: {e}");
            // A failed device exits with its errno (5 for EIO), so a supervisor or an
            // operator tells a broken disk from any other failure.
            match e.downcast_ref::<ServerError>() {
                Some(ServerError::DeviceFailed(errno)) => {
                    ExitCode::from(u8::try_from(*errno).unwrap_or(1))
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let opts = from_matches(&command().get_matches())?;
    // Checked before anything slow, so a typo fails at once.
    let etcd_address = opts
        .etcd_address
        .as_deref()
        .map(EtcdAddress::parse)
        .transpose()?;
    // Before anything slow, so a signal during startup is held and acted on at the first wait.
    let shutdown = Shutdown::install()?;
    let bs = Blockstore::open(&opts.store)?;
    let cfg = ServerConfig {
        osd_num: opts.osd_num,
        peer_timeouts: PeerTimeouts {
            connect: opts.peer_connect_timeout,
            ping: opts.osd_ping_timeout,
            op: opts.osd_op_timeout,
            retry: opts.peer_connect_interval,
        },
        recovery_queue_depth: opts.recovery_queue_depth,
        stats_interval: opts.etcd_stats_interval,
        slow_log_interval: opts.slow_log_interval,
        debug_ec_crash: opts.debug_ec_crash.clone(),
    };
    let listener = std::net::TcpListener::bind(opts.bind)?;
    let port = listener.local_addr()?.port();
    let etcd = match etcd_address {
        Some(address) => {
            let state = osd_state_json(
                &[opts.public_address.to_string()],
                port,
                &hostname(),
                true,
                true,
            );
            let mut ecfg = EtcdConfig::new(address, opts.osd_num, state);
            ecfg.prefix = opts.etcd_prefix.clone();
            ecfg.report_interval = opts.etcd_report_interval;
            Some(EtcdThread::spawn(ecfg)?)
        }
        None => None,
    };
    let mut server = Server::with_listener(listener, cfg, bs, etcd)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", server.local_addr()?)?;
    out.flush()?;
    drop(out);
    server.run(&shutdown)?;
    tracing::info!("stopped");
    Ok(())
}
