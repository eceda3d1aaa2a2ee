//! `vitastor-cli` reads values larger than gRPC's default 4 MiB reply limit: a `pg/config` of
//! 100,000 PGs is one key of ~5 MB (etcd stores it once started with a larger
//! `--max-request-bytes`, as large clusters must be).

use std::fmt::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use vitastor_testkit::etcd::{EtcdOptions, EtcdServer};

const CLI: &str = env!("CARGO_BIN_EXE_vitastor-cli");
const PGS: u32 = 100_000;

#[test]
fn pg_list_reads_a_pg_config_above_four_mib() {
    let etcd = EtcdServer::start(EtcdOptions {
        extra_args: vec!["--max-request-bytes=10485760".into()],
        ..EtcdOptions::default()
    })
    .expect("etcd");
    let pools = format!(
        r#"{{"1":{{"name":"big","scheme":"replicated","pg_size":3,"pg_minsize":2,"pg_count":{PGS},"failure_domain":"osd"}}}}"#
    );
    etcd.etcdctl(&["put", "/vitastor/config/pools", &pools])
        .expect("put pools");
    let mut items = String::new();
    for pg in 1..=PGS {
        let sep = if pg == 1 { "" } else { "," };
        write!(
            items,
            r#"{sep}"{pg}":{{"osd_set":[1,2,3],"primary":1,"pause":false}}"#
        )
        .unwrap();
    }
    let config = format!(r#"{{"items":{{"1":{{{items}}}}}}}"#);
    assert!(config.len() > 4 << 20, "{} bytes", config.len());
    // etcdctl refuses to send more than 2 MiB; etcd-client sends any size.
    let endpoint = etcd.client_url();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let mut client = etcd_client::Client::connect([endpoint], None).await?;
            client.put("/vitastor/pg/config", config, None).await
        })
        .expect("put pg/config");

    let out = Command::new(CLI)
        .args(["--etcd_address", &etcd.etcd_address(), "pg-list", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("running vitastor-cli");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vitastor-cli pg-list: {stderr}");
    let pgs: Value = serde_json::from_slice(&out.stdout).expect("pg-list prints JSON");
    assert_eq!(pgs.as_array().map(Vec::len), Some(PGS as usize));
}
