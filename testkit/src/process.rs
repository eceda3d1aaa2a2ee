//! Running a program to completion within a deadline, for tests that must fail (not hang)
//! when a program hangs.
//!
//! Output goes to anonymous temp files rather than pipes: waiting with a deadline needs no
//! reader threads and a chatty program cannot block on a full pipe. A program still running
//! at the deadline is SIGKILLed through its unreaped child handle (so by its own PID, which
//! cannot have been recycled) and reaped; the error carries what it printed until then.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestkitError;

/// Runs `cmd` (stdin as the caller set it) and returns its output, or
/// [`TestkitError::Timeout`] after killing it when it runs longer than `timeout`.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output, TestkitError> {
    let program = format!("{:?}", cmd.get_program());
    let io = |what: &str| {
        let what = format!("{what} ({program})");
        move |source| TestkitError::Io { what, source }
    };
    let capture = || tempfile::tempfile().map_err(io("creating an output file"));
    let (mut stdout, mut stderr) = (capture()?, capture()?);
    cmd.stdout(stdout.try_clone().map_err(io("duplicating stdout"))?)
        .stderr(stderr.try_clone().map_err(io("duplicating stderr"))?);
    let mut child = cmd.spawn().map_err(io("starting"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let output = [&mut stdout, &mut stderr]
                    .map(|f| String::from_utf8_lossy(&read_all(f).unwrap_or_default()).into_owned())
                    .concat();
                return Err(TestkitError::Timeout {
                    what: format!("{cmd:?}"),
                    after: timeout,
                    output,
                });
            }
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io("waiting")(source));
            }
        }
    };
    Ok(Output {
        status,
        stdout: read_all(&mut stdout).map_err(io("reading stdout"))?,
        stderr: read_all(&mut stderr).map_err(io("reading stderr"))?,
    })
}

fn read_all(f: &mut File) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status_are_returned() {
        let out = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn a_hung_program_is_killed_with_its_output_so_far() {
        let err = output_within(
            Command::new("sh").args(["-c", "echo started; exec sleep 1000"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        match &err {
            TestkitError::Timeout { output, .. } => assert_eq!(output, "started\n"),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("killed"), "{err}");
    }
}
