//! Running a program to completion within a deadline, for tests that must fail (not hang)
//! when a program hangs.
//!
//! Output goes to anonymous temp files rather than pipes: waiting with a deadline needs no
//! reader threads and a chatty program cannot block on a full pipe. A program still running
//! at the deadline is SIGKILLed through its unreaped child handle (so by its own PID, which
//! cannot have been recycled) and reaped; the error carries what it printed until then.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::process::{Child, Command, Output};
use std::sync::mpsc;
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

/// The first line `child` writes to its (piped) stdout, without the newline, waiting at most
/// `timeout` for it (a daemon's "listening on ..." line); `None` when stdout closes first.
/// The pipe's read end is closed once the line is read. On a timeout the child is left to
/// the caller, who holds its handle and kills it.
pub fn first_line_within(
    child: &mut Child,
    timeout: Duration,
) -> Result<Option<String>, TestkitError> {
    let stdout = child.stdout.take().ok_or_else(|| {
        TestkitError::InvalidOptions("first_line_within needs a piped stdout".into())
    })?;
    let (tx, rx) = mpsc::channel();
    // The reader ends by itself: with the line, or at EOF once the caller kills the child.
    thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout)
            .read_line(&mut line)
            .map(|n| (n > 0).then_some(line));
        let _ = tx.send(read);
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(line)) => Ok(line.map(|l| l.trim_end_matches('\n').to_string())),
        Ok(Err(source)) => Err(TestkitError::Io {
            what: format!("reading the first line of pid {}", child.id()),
            source,
        }),
        Err(_) => Err(TestkitError::Timeout {
            what: format!("the first line of pid {}", child.id()),
            after: timeout,
            output: String::new(),
        }),
    }
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
    fn first_lines_are_read_within_the_deadline() {
        let spawn = |script: &str| {
            Command::new("sh")
                .args(["-c", script])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut child = spawn("echo listening on x; echo more");
        let line = first_line_within(&mut child, Duration::from_secs(30)).unwrap();
        assert_eq!(line.as_deref(), Some("listening on x"));
        child.wait().unwrap();
        let mut child = spawn("exit 0");
        assert_eq!(
            first_line_within(&mut child, Duration::from_secs(30)).unwrap(),
            None
        );
        child.wait().unwrap();
        let mut child = spawn("exec sleep 1000");
        let err = first_line_within(&mut child, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, TestkitError::Timeout { .. }), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
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
