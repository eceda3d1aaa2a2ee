//! `qemu-img` through block-vitastor.so: convert a qcow2 image holding a real ext4 file system
//! into a vitastor image and back, info, create, resize (grow and shrink), read-only images
//! and the errors users meet (unknown image, existing image, unreachable etcd).
//!
//! Needs qemu-img, qemu-io, mkfs.ext4 and e2fsck (`make setup` installs them; see testkit's
//! `require_tools`).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use vitastor_testkit::{process, require_tools};

/// A directory tree of files of assorted sizes, some larger than an object (128 KiB).
fn make_tree(root: &Path) {
    for d in 0..6u64 {
        let dir = root.join(format!("dir{d}/sub"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..20u64 {
            let len = ((d * 20 + f) * 7919 % 300_000 + 1) as usize;
            fs::write(dir.join(format!("file{f}.bin")), pattern(d * 100 + f, len)).unwrap();
        }
    }
    fs::write(root.join("README"), b"vitastor qemu-img test\n").unwrap();
}

fn run_ok(cmd: &mut Command) {
    let out = process::output_within(cmd.stdin(Stdio::null()), RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr_of(program: &str, args: &[&str]) -> String {
    let out = qemu(program, args);
    assert!(!out.status.success(), "{program} {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn convert_ext4_qcow2_in_and_out() {
    if !require_tools(&["qemu-img", "mkfs.ext4", "e2fsck"]) {
        return;
    }
    let cl = start_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree);
    let raw = tmp.path().join("fs.raw");
    let qcow = tmp.path().join("fs.qcow2");
    let back = tmp.path().join("back.qcow2");
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&raw)
            .arg("64M"),
    );
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow),
    );

    // Into a new vitastor image (convert creates it), and back.
    let spec = image_spec(&cl, "ext4");
    let (qcow_s, back_s) = (qcow.to_str().unwrap(), back.to_str().unwrap());
    qemu_ok(
        "qemu-img",
        &["convert", "-p", "-f", "qcow2", "-O", "raw", qcow_s, &spec],
    );
    let i = info(&spec);
    assert_eq!(i["virtual-size"], json!(64 * MIB), "{i}");
    assert_eq!(i["format"], json!("raw"), "{i}");
    qemu_ok(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", &spec, back_s],
    );
    qemu_ok(
        "qemu-img",
        &["compare", "-f", "qcow2", "-F", "qcow2", qcow_s, back_s],
    );
    qemu_ok(
        "qemu-img",
        &["compare", "-f", "qcow2", "-F", "raw", qcow_s, &spec],
    );
    // The file system itself survived the round trip.
    let back_raw = tmp.path().join("back.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw", back_s])
            .arg(&back_raw),
    );
    run_ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&back_raw));
    assert_eq!(fs::read(&raw).unwrap(), fs::read(&back_raw).unwrap());
    // Converting onto an existing image needs -n, as with any block device.
    let err = stderr_of(
        "qemu-img",
        &["convert", "-f", "qcow2", "-O", "raw", qcow_s, &spec],
    );
    assert!(err.contains("image 'ext4' already exists"), "{err}");
    qemu_ok(
        "qemu-img",
        &["convert", "-n", "-f", "qcow2", "-O", "raw", qcow_s, &spec],
    );
}

#[test]
fn create_info_resize_readonly_and_errors() {
    if !require_tools(&["qemu-img", "qemu-io"]) {
        return;
    }
    let cl = start_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let spec = image_spec(&cl, "made");
    let out = qemu_ok("qemu-img", &["create", "-f", "raw", &spec, "32M"]);
    assert!(out.contains("Formatting"), "{out}");
    let i = info(&spec);
    assert_eq!(i["virtual-size"], json!(32 * MIB), "{i}");
    assert_eq!(i["cluster-size"], json!(128 * 1024), "{i}");
    // The keys a vitastor-cli would write: inode config, name index, maxid.
    let keys: Vec<String> = cl
        .get_prefix("")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for k in ["index/image/made", "index/maxid/1", "config/inode/1/1"] {
        assert!(keys.iter().any(|x| x == k), "{k} missing in {keys:?}");
    }
    let err = stderr_of("qemu-img", &["create", "-f", "raw", &spec, "32M"]);
    assert!(err.contains("image 'made' already exists"), "{err}");
    let err = stderr_of(
        "qemu-img",
        &["create", "-f", "raw", &image_spec(&cl, "odd"), "1000"],
    );
    assert!(err.contains("not a multiple of 4096"), "{err}");

    // Grow, fill the end, shrink into the filled part, grow back: the cut-off data is gone.
    qemu_ok("qemu-img", &["resize", "-f", "raw", &spec, "48M"]);
    assert_eq!(info(&spec)["virtual-size"], json!(48 * MIB));
    qemu_ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x77 40M 8M", &spec],
    );
    qemu_ok(
        "qemu-img",
        &["resize", "-f", "raw", "--shrink", &spec, "41960K"],
    );
    assert_eq!(info(&spec)["virtual-size"], json!(41960 * 1024));
    qemu_ok("qemu-img", &["resize", "-f", "raw", &spec, "64M"]);
    assert_eq!(info(&spec)["virtual-size"], json!(64 * MIB));
    qemu_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0x77 40M 1000K",
            "-c",
            "read -P 0 41960K 23576K",
            &spec,
        ],
    );
    let data = read_image(&spec, tmp.path(), 40 * MIB, MIB);
    assert!(data[..1000 * 1024].iter().all(|&b| b == 0x77));
    assert!(data[1000 * 1024..].iter().all(|&b| b == 0));

    // A read-only image opens read-only (qemu-io -r), and refuses read-write.
    cl.put_json(
        "config/inode/1/50",
        &json!({"name": "frozen", "size": 4 * MIB, "readonly": true}),
    )
    .unwrap();
    cl.put_json("index/image/frozen", &json!({"id": 50, "pool_id": 1}))
        .unwrap();
    let frozen = image_spec(&cl, "frozen");
    qemu_ok(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0 0 4M", &frozen],
    );
    let err = stderr_of("qemu-io", &["-f", "raw", "-c", "write 0 4k", &frozen]);
    assert!(err.contains("read-only"), "{err}");

    // Unknown image: a clear error at once.
    let err = stderr_of("qemu-img", &["info", &image_spec(&cl, "nosuch")]);
    assert!(err.contains("image 'nosuch' does not exist"), "{err}");
    // Bad filenames.
    let err = stderr_of("qemu-img", &["info", "vitastor:image"]);
    assert!(err.contains("has no value"), "{err}");
    let err = stderr_of("qemu-img", &["info", "vitastor:imag=x"]);
    assert!(
        err.contains("unknown vitastor filename option 'imag'"),
        "{err}"
    );

    // Client options reach libvitastor, which refuses bad values by name (filename keys,
    // json: and --image-opts alike) and serves with good ones.
    for bad in [
        "client_op_timeout=0",
        "client_retry_interval=soon",
        "peer_connect_timeout=0",
    ] {
        let err = stderr_of("qemu-img", &["info", &format!("{spec}:{bad}")]);
        let name = bad.split('=').next().unwrap();
        assert!(err.contains(&format!("invalid option {name}")), "{err}");
    }
    let err = stderr_of(
        "qemu-img",
        &[
            "info",
            &format!(
                "json:{}",
                json!({"driver": "vitastor", "image": "made",
                       "etcd_host": cl.etcd_address(), "client_op_timeout": "x"})
            ),
        ],
    );
    assert!(err.contains("invalid option client_op_timeout"), "{err}");
    let err = stderr_of(
        "qemu-img",
        &[
            "info",
            "--image-opts",
            &format!(
                "driver=vitastor,image=made,etcd-host={},peer-connect-timeout=0",
                cl.etcd_address()
            ),
        ],
    );
    assert!(err.contains("invalid option peer_connect_timeout"), "{err}");
    let good =
        format!("{spec}:client_op_timeout=3:client_retry_interval=20:peer_connect_timeout=2");
    qemu_ok(
        "qemu-io",
        &["-f", "raw", "-c", "read -P 0x77 40M 1000K", &good],
    );
    assert_eq!(info(&good)["virtual-size"], json!(64 * MIB));
    qemu_ok(
        "qemu-img",
        &[
            "info",
            "--image-opts",
            &format!(
                "driver=vitastor,image=made,etcd-host={},client-op-timeout=3",
                cl.etcd_address()
            ),
        ],
    );
}

#[test]
fn unreachable_etcd_fails_within_the_timeout() {
    if !require_tools(&["qemu-img"]) {
        return;
    }
    // A port nobody listens on: the listener is bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("vitastor:image=x:etcd_host=127.0.0.1\\:{port}/v3");
    let start = Instant::now();
    let err = stderr_of("qemu-img", &["info", &spec]);
    assert!(err.contains("is etcd reachable?"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    let err = stderr_of("qemu-img", &["create", "-f", "raw", &spec, "1M"]);
    assert!(err.contains("cannot connect to etcd"), "{err}");
}

/// With only `image=` in the filename, create and info find etcd through the config file
/// named by `VITASTOR_CONFIG_PATH`, like every other program (the driver's own etcd calls
/// for create and resize included).
#[test]
fn create_and_resize_use_vitastor_config_path() {
    if !require_tools(&["qemu-img"]) {
        return;
    }
    let cl = start_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("vitastor.conf");
    fs::write(
        &conf,
        json!({"etcd_address": cl.etcd_address()}).to_string(),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = process::output_within(
            Command::new("qemu-img")
                .args(args)
                .env("LD_PRELOAD", driver())
                .env("VITASTOR_CONFIG_PATH", &conf)
                .stdin(Stdio::null()),
            RUN_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["create", "-f", "raw", "vitastor:image=byconf", "8M"]);
    run(&["resize", "-f", "raw", "vitastor:image=byconf", "16M"]);
    let i: serde_json::Value = serde_json::from_str(&run(&[
        "info",
        "-f",
        "raw",
        "--output=json",
        "vitastor:image=byconf",
    ]))
    .unwrap();
    assert_eq!(i["virtual-size"], json!(16 * MIB), "{i}");
}
