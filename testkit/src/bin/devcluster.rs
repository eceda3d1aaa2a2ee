//! `devcluster`: a local cluster for development and demos.
//!
//! `devcluster up --dir DIR [--osds 3] [--pg-size 2] [--pg-count 32] [--immediate-commit all]
//! [--ec K+M | --xor K+1] [--osd-size BYTES] [--osd-fill]` starts a supervisor in the
//! background (etcd on a free loopback port, the OSDs on files in DIR, reserved or with
//! `--osd-fill` written out, pool 1 `testpool` and its `pg/config`), waits until every PG is active,
//! prints `key=value` lines (`etcd_address=127.0.0.1:PORT/v3`, pids, data dir) and exits,
//! leaving the cluster running. `devcluster down --dir DIR` stops it: the supervisor stops
//! the OSDs and etcd it started, by PID.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use vitastor_testkit::{Cluster, ClusterOptions};

#[derive(Parser)]
#[command(name = "devcluster", about = "Start and stop a local vitastor cluster")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct UpArgs {
    /// Directory for data, configs, logs and the supervisor's pid file
    #[arg(long)]
    dir: PathBuf,
    /// Number of OSDs
    #[arg(long, default_value_t = 3)]
    osds: usize,
    /// Replicas per PG (a replicated pool; --ec and --xor set it to K+M)
    #[arg(long = "pg-size", default_value_t = 2)]
    pg_size: usize,
    /// An erasure-coded pool (Reed-Solomon) of K data and M parity parts, e.g. 2+1
    #[arg(long, value_name = "K+M", conflicts_with = "xor")]
    ec: Option<String>,
    /// An XOR pool of K data parts and one parity part, e.g. 2+1
    #[arg(long, value_name = "K+1")]
    xor: Option<String>,
    /// PGs in the pool
    #[arg(long = "pg-count", default_value_t = 32)]
    pg_count: u32,
    /// all | none
    #[arg(long = "immediate-commit", default_value = "all")]
    immediate_commit: String,
    /// Size of each OSD's data file in bytes
    #[arg(long = "osd-size", default_value_t = 4 << 30)]
    osd_size: u64,
    /// Write each OSD's data file out once (`vitastor-disk prepare --fill`) instead of only
    /// reserving its blocks, so that no first write into it costs more than an overwrite
    /// (benchmarks); takes as long as writing the files
    #[arg(long = "osd-fill")]
    osd_fill: bool,
    /// Run a monitor (vitastor-mon) to place PGs instead of writing pg/config by hand
    #[arg(long)]
    monitor: bool,
    /// Also create an image with this name in the pool
    #[arg(long)]
    image: Option<String>,
    /// Size of that image in bytes
    #[arg(long = "image-size", default_value_t = 10 << 30)]
    image_size: u64,
    /// Extra option for every OSD, repeatable (e.g. --osd-arg=--disable_data_fsync --osd-arg=true)
    #[arg(long = "osd-arg", allow_hyphen_values = true)]
    osd_arg: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster in the background and print how to reach it
    Up(UpArgs),
    /// Stop the cluster started in DIR
    Down {
        /// The directory given to `up`
        #[arg(long)]
        dir: PathBuf,
    },
    /// Run the cluster in the foreground until SIGTERM/SIGINT (what `up` starts)
    Serve(UpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Up(args) => up(&args),
        Cmd::Down { dir } => down(&dir),
        Cmd::Serve(args) => serve(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devcluster: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `K+M` with K, M >= 1.
fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let parse = |x: &str| x.trim().parse::<usize>().ok().filter(|&n| n >= 1);
    s.split_once('+')
        .and_then(|(k, m)| Some((parse(k)?, parse(m)?)))
        .ok_or_else(|| format!("{s:?}: expected K+M (data and parity parts), e.g. 2+1"))
}

fn env_file(dir: &Path) -> PathBuf {
    dir.join("cluster.env")
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("devcluster.pid")
}

fn up(args: &UpArgs) -> Result<(), String> {
    if !["all", "none"].contains(&args.immediate_commit.as_str()) {
        return Err("--immediate-commit must be all or none".into());
    }
    for shape in args.ec.iter().chain(&args.xor) {
        parse_shape(shape)?;
    }
    fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let dir = args.dir.canonicalize().map_err(|e| e.to_string())?;
    if let Some(pid) = running_pid(&dir) {
        return Err(format!(
            "a cluster is already running in {} (pid {pid}); run devcluster down first",
            dir.display()
        ));
    }
    let _ = fs::remove_file(env_file(&dir));
    let log = fs::File::create(dir.join("devcluster.log")).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--dir")
        .arg(&dir)
        .args(["--osds", &args.osds.to_string()])
        .args(["--pg-size", &args.pg_size.to_string()])
        .args(["--pg-count", &args.pg_count.to_string()])
        .args(args.ec.iter().flat_map(|s| ["--ec", s.as_str()]))
        .args(args.xor.iter().flat_map(|s| ["--xor", s.as_str()]))
        .args(["--immediate-commit", &args.immediate_commit])
        .args(["--osd-size", &args.osd_size.to_string()])
        .args(args.osd_fill.then_some("--osd-fill"))
        .args(["--image-size", &args.image_size.to_string()])
        .args(args.monitor.then_some("--monitor"))
        .args(args.osd_arg.iter().map(|a| format!("--osd-arg={a}")))
        .args(args.image.iter().flat_map(|i| ["--image", i.as_str()]))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe; the supervisor leaves our session so that
    // closing the terminal does not stop the cluster.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the supervisor: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(text) = fs::read_to_string(env_file(&dir)) {
            print!("{text}");
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(dir.join("devcluster.log")).unwrap_or_default();
            return Err(format!("the supervisor exited with {status}:\n{log}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the cluster did not become ready; see {}",
                dir.join("devcluster.log").display()
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn running_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

fn down(dir: &Path) -> Result<(), String> {
    let Some(pid) = running_pid(dir) else {
        println!("no cluster running in {}", dir.display());
        return Ok(());
    };
    // SAFETY: kill(2) on the supervisor whose pid it wrote itself.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_pid(dir).is_some() {
        if Instant::now() > deadline {
            return Err(format!("supervisor {pid} did not stop"));
        }
        thread::sleep(Duration::from_millis(50));
    }
    println!("stopped");
    Ok(())
}

fn serve(args: &UpArgs) -> Result<(), String> {
    // Block the stop signals before any thread exists, so sigwait below gets them.
    // SAFETY: plain signal-mask calls on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let bin_dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no binary directory")?;
    let mut opts = ClusterOptions::new(bin_dir);
    opts.osds = args.osds;
    opts.pg_size = args.pg_size;
    if let Some((scheme, shape)) =
        (args.ec.as_ref().map(|s| ("ec", s))).or_else(|| args.xor.as_ref().map(|s| ("xor", s)))
    {
        let (k, m) = parse_shape(shape)?;
        if scheme == "xor" && m != 1 {
            return Err(format!("--xor {shape}: an XOR pool has one parity part"));
        }
        opts.scheme = scheme.into();
        opts.pg_size = k + m;
        opts.parity_chunks = m;
        opts.pg_minsize = Some(k);
    }
    opts.pg_count = args.pg_count;
    opts.immediate_commit = args.immediate_commit.clone();
    opts.osd_size = args.osd_size;
    opts.osd_fill = args.osd_fill;
    opts.dir = Some(args.dir.clone());
    if args.monitor {
        opts.monitors = 1;
    }
    opts.osd_args = args.osd_arg.clone();
    fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    if let Some(pid) = running_pid(&args.dir) {
        return Err(format!(
            "a cluster is already running in {} (pid {pid})",
            args.dir.display()
        ));
    }
    fs::write(pid_file(&args.dir), std::process::id().to_string()).map_err(|e| e.to_string())?;
    let cluster = Cluster::start(opts).map_err(|e| e.to_string())?;
    let image = match &args.image {
        Some(name) => {
            let id = cluster
                .create_image(name, args.image_size)
                .map_err(|e| e.to_string())?;
            Some((name.clone(), id))
        }
        None => None,
    };
    let mut env = format!(
        "etcd_address={}\nsupervisor_pid={}\netcd_pid={}\ndata_dir={}\n",
        cluster.etcd_address(),
        std::process::id(),
        cluster.etcd.pid().unwrap_or(0),
        args.dir.display()
    );
    for (num, pid) in cluster.osd_pids() {
        env.push_str(&format!("osd{num}_pid={pid}\n"));
    }
    if let Some((name, id)) = &image {
        env.push_str(&format!("image={name}\nimage_inode={id}\npool=1\n"));
    }
    let tmp = args.dir.join("cluster.env.tmp");
    fs::write(&tmp, &env).map_err(|e| e.to_string())?;
    fs::rename(&tmp, env_file(&args.dir)).map_err(|e| e.to_string())?;
    eprintln!("devcluster: ready\n{env}");
    let mut sig: libc::c_int = 0;
    // SAFETY: waits for one of the blocked signals in `set`.
    unsafe { libc::sigwait(&set, &mut sig) };
    eprintln!("devcluster: signal {sig}, stopping");
    drop(cluster);
    let _ = fs::remove_file(env_file(&args.dir));
    let _ = fs::remove_file(pid_file(&args.dir));
    Ok(())
}
