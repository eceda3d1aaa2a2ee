//! `vitastor-osd`: the OSD daemon. For now it serves the handshake, PING and the secondary
//! (OSD ↔ OSD) ops of one local blockstore; see `vitastor_osd::server`. Options are described
//! in `vitastor_osd::options`.

use std::io::Write;
use std::process::ExitCode;

use vitastor_blockstore::Blockstore;
use vitastor_osd::options::{command, from_matches};
use vitastor_osd::server::Server;
use vitastor_osd::shutdown::Shutdown;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vitastor-osd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let opts = from_matches(&command().get_matches())?;
    if let Some(etcd) = &opts.etcd_address {
        eprintln!(
            "vitastor-osd: warning: --etcd_address {etcd} ignored: this OSD does not use etcd yet"
        );
    }
    // Before anything slow, so a signal during startup is held and acted on at the first wait.
    let shutdown = Shutdown::install()?;
    let bs = Blockstore::open(&opts.store)?;
    let mut server = Server::bind(opts.bind, opts.osd_num, bs)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", server.local_addr()?)?;
    out.flush()?;
    drop(out);
    server.run(&shutdown)?;
    eprintln!("vitastor-osd: stopped");
    Ok(())
}
