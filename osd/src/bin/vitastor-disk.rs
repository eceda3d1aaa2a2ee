//! `vitastor-disk`: prepare and inspect OSD stores. The commands live in
//! `vitastor_osd::disk_tool`; this binary only maps their outcome to an exit status.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

use clap::Parser;
use vitastor_osd::disk_tool::{run, Cli, ToolError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = run(&cli, &mut out).and_then(|()| out.flush().map_err(ToolError::Output));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing left to tell anyone.
        Err(ToolError::Output(e)) if e.kind() == ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vitastor-disk: {e}");
            ExitCode::FAILURE
        }
    }
}
