//! `vitastor-nbd`: serves a Vitastor image over NBD, on a socket (`serve`) or as a kernel
//! block device (`map`, `unmap`, `ls`).
//!
//! Module map:
//! - [`proto`] — NBD wire constants and message encoding (pure).
//! - [`session`] — one connection's handshake and request framing (pure).
//! - [`plan`] — what each request becomes in cluster ops; the alignment policy (pure).
//! - [`server`] — the single-threaded poll loop over the sockets and the cluster client.
//! - [`kernel`] — `/dev/nbdN` attachment by ioctl, `unmap`, `ls`.
//! - [`sys`] — the system calls std lacks, and all the `unsafe`.
//! - [`error`] — the one error type.
//!
//! This file owns the command line, start-up (cluster, image lookup with a timeout,
//! daemonizing `map`) and exit codes. It must never serve data itself.

mod error;
mod kernel;
mod plan;
mod server;
mod sys;

// The pure protocol modules live in the library (shared with the fuzz target).
use vitastor_nbd::{proto, session};

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use tracing::{error, info};
use vitastor::{Callback, Client, ClientOptions, WatchResult};

use crate::error::NbdError;
use crate::plan::Geometry;
use crate::server::{Export, Listener, Mode, Server, Stream};

/// How long start-up waits for etcd and the image: the client retries forever, but a
/// command that never answers is worse than one that says what it waited for.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pool id bits at the top of an inode number (as in Vitastor).
const POOL_SHIFT: u32 = 48;

#[derive(Parser, Debug)]
#[command(
    name = "vitastor-nbd",
    version,
    about = "NBD proxy for Vitastor images"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve an image to NBD clients on a Unix or TCP socket until SIGTERM.
    Serve(ServeArgs),
    /// Attach an image to a kernel NBD device and serve it in the background.
    Map(MapArgs),
    /// Detach a kernel NBD device (its serving process exits).
    Unmap {
        /// The device, e.g. /dev/nbd0.
        device: PathBuf,
    },
    /// List attached NBD devices.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct ClusterArgs {
    /// etcd address(es), e.g. 127.0.0.1:2379/v3 (or from the config file).
    #[arg(long = "etcd_address")]
    etcd_address: Option<String>,
    /// Vitastor config file (default /etc/vitastor/vitastor.conf when it exists).
    #[arg(long = "config_path")]
    config_path: Option<String>,
    /// etcd key prefix (default /vitastor).
    #[arg(long = "etcd_prefix")]
    etcd_prefix: Option<String>,
    /// Seconds an OSD may leave requests unanswered before it is pinged, then dropped
    /// (libvitastor's default 5).
    #[arg(long = "client_op_timeout")]
    client_op_timeout: Option<String>,
    /// Milliseconds before a failed request part is tried again (libvitastor's default 50).
    #[arg(long = "client_retry_interval")]
    client_retry_interval: Option<String>,
    /// Seconds a connection to an OSD may take before it is retried (libvitastor's default 5).
    #[arg(long = "peer_connect_timeout")]
    peer_connect_timeout: Option<String>,
    /// Image name (also the NBD export name).
    #[arg(long, conflicts_with_all = ["pool", "inode"])]
    image: Option<String>,
    /// Pool id, with --inode and --size, to serve an inode that has no image entry.
    #[arg(long, requires_all = ["inode", "size"])]
    pool: Option<u64>,
    /// Inode number inside --pool.
    #[arg(long, requires = "pool")]
    inode: Option<u64>,
    /// Size in bytes for --pool/--inode.
    #[arg(long, requires = "pool")]
    size: Option<u64>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Unix socket path to listen on.
    #[arg(long, conflicts_with = "listen", required_unless_present = "listen")]
    socket: Option<PathBuf>,
    /// TCP address to listen on, e.g. 127.0.0.1:10809 (port 0 picks one).
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Args, Debug)]
struct MapArgs {
    /// The device (default: the first free /dev/nbdN).
    device: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Stay in the foreground instead of serving from a background process.
    #[arg(long)]
    foreground: bool,
    /// Log file of the background process (default: logs are discarded).
    #[arg(long)]
    logfile: Option<PathBuf>,
    /// Kernel request timeout in seconds (0 = the kernel's default).
    #[arg(long = "nbd_timeout", default_value_t = 300)]
    nbd_timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let result = match cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Map(a) => map(a),
        Cmd::Unmap { device } => kernel::disconnect(&device),
        Cmd::Ls { json } => {
            ls(json);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vitastor-nbd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(a: ServeArgs) -> Result<(), NbdError> {
    // Before the client starts its etcd thread, so that thread inherits the blocked mask.
    let signals = sys::signal_fd().map_err(NbdError::io("signalfd"))?;
    let (client, export) = open_export(&a.cluster)?;
    let (listener, shown) = match (&a.socket, &a.listen) {
        (Some(path), _) => {
            let l = UnixListener::bind(path)
                .map_err(NbdError::io(format!("binding {}", path.display())))?;
            l.set_nonblocking(true)
                .map_err(NbdError::io("non-blocking listener"))?;
            (
                Listener::Unix(l, path.clone()),
                format!("unix:{}", path.display()),
            )
        }
        (None, Some(addr)) => {
            let l = TcpListener::bind(addr).map_err(NbdError::io(format!("binding {addr}")))?;
            l.set_nonblocking(true)
                .map_err(NbdError::io("non-blocking listener"))?;
            let local = l.local_addr().map_err(NbdError::io("listener address"))?;
            (Listener::Tcp(l), local.to_string())
        }
        (None, None) => unreachable!("clap requires --socket or --listen"),
    };
    info!(
        "serving image {} ({} bytes, inode {:#x}) on {shown}",
        export.name, export.geometry.size, export.inode
    );
    // Scripts and tests wait for this line.
    println!("listening on {shown}");
    let _ = std::io::stdout().flush();
    let mut server = Server::new(client, export, signals, Mode::Listen);
    server.set_listener(listener);
    server.run().map_err(NbdError::io("poll"))?;
    info!("exiting");
    Ok(())
}

fn map(a: MapArgs) -> Result<(), NbdError> {
    let dev = kernel::pick_device(a.device.as_deref())?;
    if a.foreground {
        let signals = sys::signal_fd().map_err(NbdError::io("signalfd"))?;
        return map_and_serve(&a, &dev, signals, None);
    }
    // Fork before the client exists: the child must start single-threaded.
    let (mut parent_end, child_end) =
        UnixStream::pair().map_err(NbdError::io("status socketpair"))?;
    match sys::fork().map_err(NbdError::io("fork"))? {
        sys::Forked::Parent => {
            drop(child_end);
            let mut status = String::new();
            let _ = parent_end.read_to_string(&mut status);
            match status.strip_prefix("ok ") {
                Some(dev) => {
                    println!("{}", dev.trim());
                    Ok(())
                }
                None if status.is_empty() => Err(NbdError::Invalid(
                    "the background process exited without attaching the device".into(),
                )),
                None => Err(NbdError::Invalid(status.trim().to_string())),
            }
        }
        sys::Forked::Child => {
            drop(parent_end);
            let r = detach(a.logfile.as_deref()).and_then(|()| {
                let signals = sys::signal_fd().map_err(NbdError::io("signalfd"))?;
                map_and_serve(&a, &dev, signals, Some(child_end))
            });
            if let Err(e) = &r {
                error!("{e}");
            }
            // The parent already reported the outcome; never run the parent's exit path.
            std::process::exit(if r.is_ok() { 0 } else { 1 });
        }
    }
}

/// Leaves the terminal: new session, stdin from /dev/null, stdout/stderr to the log file.
fn detach(logfile: Option<&Path>) -> Result<(), NbdError> {
    sys::setsid().map_err(NbdError::io("setsid"))?;
    let null = std::fs::File::open("/dev/null").map_err(NbdError::io("/dev/null"))?;
    let log = match logfile {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(NbdError::io(format!("opening {}", p.display())))?,
        None => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(NbdError::io("/dev/null"))?,
    };
    sys::dup2(null.as_raw_fd(), 0).map_err(NbdError::io("redirecting stdin"))?;
    sys::dup2(log.as_raw_fd(), 1).map_err(NbdError::io("redirecting stdout"))?;
    sys::dup2(log.as_raw_fd(), 2).map_err(NbdError::io("redirecting stderr"))?;
    Ok(())
}

fn map_and_serve(
    a: &MapArgs,
    dev: &Path,
    signals: OwnedFd,
    mut status: Option<UnixStream>,
) -> Result<(), NbdError> {
    let attached = open_export(&a.cluster).and_then(|(client, export)| {
        let att = kernel::attach(dev, &export, a.nbd_timeout)?;
        Ok((client, export, att))
    });
    let (client, export, att) = match attached {
        Ok(x) => x,
        Err(e) => {
            if let Some(s) = status.as_mut() {
                let _ = write!(s, "{e}");
            }
            return Err(e);
        }
    };
    info!("{}: serving image {}", dev.display(), export.name);
    match status.take() {
        Some(mut s) => {
            let _ = write!(s, "ok {}", dev.display());
        }
        None => println!("{}", dev.display()),
    }
    let mut server = Server::new(client, export, signals, Mode::Kernel);
    server
        .add_transmission_conn(Stream::Unix(att.stream))
        .map_err(NbdError::io("kernel socket"))?;
    let signalled = server.run().map_err(NbdError::io("poll"))?;
    if signalled {
        // The kernel still has the device: tell it to stop so NBD_DO_IT returns.
        let _ = kernel::disconnect(dev);
    }
    let _ = att.thread.join();
    Ok(())
}

fn ls(json: bool) {
    let devs = kernel::list();
    if json {
        println!("{}", serde_json::Value::Object(devs));
        return;
    }
    for (dev, v) in devs {
        let what = v
            .get("image")
            .and_then(|x| x.as_str())
            .map(|i| format!("image {i}"))
            .or_else(|| {
                let pool = v.get("pool")?.as_str()?;
                let inode = v.get("inode")?.as_str()?;
                Some(format!("pool {pool} inode {inode}"))
            })
            .unwrap_or_else(|| "-".into());
        println!("{dev}\t{what}\tpid {}", v["pid"]);
    }
}

/// Connects to the cluster and resolves the image (or raw inode) to serve.
fn open_export(c: &ClusterArgs) -> Result<(Client, Export), NbdError> {
    let mut opts = ClientOptions::new();
    for (k, v) in [
        ("etcd_address", &c.etcd_address),
        ("config_path", &c.config_path),
        ("etcd_prefix", &c.etcd_prefix),
        // Passed as given: libvitastor checks them like the same keys of the config file.
        ("client_op_timeout", &c.client_op_timeout),
        ("client_retry_interval", &c.client_retry_interval),
        ("peer_connect_timeout", &c.peer_connect_timeout),
    ] {
        if let Some(v) = v {
            opts.set(k, v);
        }
    }
    let mut client = Client::new(&opts)?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !client.is_ready() {
        if Instant::now() > deadline {
            return Err(NbdError::Timeout("the cluster state from etcd"));
        }
        client.wait_events(Some(Duration::from_millis(100)));
    }
    if let Some(name) = &c.image {
        let found: Rc<RefCell<Option<WatchResult>>> = Rc::new(RefCell::new(None));
        let f = Rc::clone(&found);
        client.watch_inode(
            name,
            Callback::Boxed(Box::new(move |r| *f.borrow_mut() = Some(r))),
        );
        while found.borrow().is_none() {
            if Instant::now() > deadline {
                return Err(NbdError::Timeout("the image lookup"));
            }
            client.wait_events(Some(Duration::from_millis(100)));
        }
        let watch = found.borrow_mut().take().expect("checked above")?;
        let info = watch.info();
        if info.bitmap_granularity == 0 || info.block_size == 0 {
            return Err(NbdError::Invalid(format!(
                "image {name}: its pool (inode {:#x}) is not configured",
                info.inode
            )));
        }
        let export = Export {
            name: name.clone(),
            inode: info.inode,
            geometry: Geometry {
                size: info.size,
                granularity: info.bitmap_granularity.into(),
                object: info.block_size.into(),
                readonly: info.readonly,
            },
            watch: Some(watch),
        };
        return Ok((client, export));
    }
    let (Some(pool), Some(inode), Some(size)) = (c.pool, c.inode, c.size) else {
        return Err(NbdError::Invalid(
            "give --image NAME, or --pool P --inode I --size S".into(),
        ));
    };
    if pool == 0 || pool >= 1 << (64 - POOL_SHIFT) || inode == 0 || inode >= 1 << POOL_SHIFT {
        return Err(NbdError::Invalid(format!(
            "pool {pool} / inode {inode} out of range"
        )));
    }
    let full = (pool << POOL_SHIFT) | inode;
    let Some((block_size, granularity, _)) = client.pool_info(full) else {
        return Err(NbdError::Invalid(format!("pool {pool} does not exist")));
    };
    let export = Export {
        name: format!("pool{pool}-inode{inode}"),
        inode: full,
        geometry: Geometry {
            size,
            granularity: granularity.into(),
            object: block_size.into(),
            readonly: false,
        },
        watch: None,
    };
    Ok((client, export))
}
