//! Copying the granules a layer lacks from the layers below it: the data movement of
//! `flatten` and `merge-data` (and of `rm` of a snapshot in a chain).
//!
//! For each object of the target layer, the bitmaps of the target and of the source layers
//! (bitmap-only reads, not merged) give the granules some source holds and the target does
//! not; only those are written. Their data comes from a layered read of the target, which
//! returns, per granule, the highest layer holding it — for those granules, a source's.
//!
//! The target may be in use while this runs: each object's writes are compare-and-set
//! against the version its read returned, so a client write landing in between makes the
//! OSD refuse ours (`-EINTR`) and the object starts over, rather than our stale data
//! overwriting the client's. A target that already holds a granule is never written there,
//! so an interrupted run simply runs again: done objects are skipped by their bitmaps.
//!
//! The one exception is an overwriting copy ([`CopyJob::overwrite`], `rm`'s merge of a small
//! child down into its snapshot): the source lies *above* the target, so every granule the
//! source holds is written, the target's own included, with data from a layered read of the
//! source and the compare-and-set version from a read of the target. Both layers are
//! read-only or stopped, so re-running writes the same bytes again.
//!
//! # What this module owns
//! - The per-object state machine ([`ObjectCopy`], pure) and the loop driving it on the
//!   client library, at most `iodepth` objects at a time, with progress on a terminal or as
//!   JSON lines.
//!
//! # What it must never do
//! - Write a granule the target holds (unless the job says the source overwrites it), or
//!   write without the compare-and-set version.
//! - Touch etcd: the callers change metadata once the data is in place.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::rc::Rc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use vitastor::{Client, ClientError, OpDone};

use crate::error::{CliError, Result};

/// One poll of the client's event loop.
const POLL: Duration = Duration::from_millis(100);
/// `-EINTR`: the OSD refused a compare-and-set write (the object changed).
const EINTR: i32 = 4;
/// Restarts of one object before giving up (each means a client wrote it meanwhile).
const MAX_RESTARTS: u32 = 1000;

/// What to copy.
#[derive(Debug, Clone)]
pub struct CopyJob {
    /// The layer written (inode with pool bits).
    pub target: u64,
    /// The layers read from (with pool bits), any order.
    pub sources: Vec<u64>,
    /// Bytes of the target to cover.
    pub size: u64,
    /// The target pool's object size.
    pub block: u64,
    /// The target pool's bitmap granularity.
    pub granularity: u64,
    /// Objects in flight.
    pub iodepth: u32,
    /// Give up when nothing finishes for this long (PGs not active); zero = never.
    pub stall_timeout: Duration,
    /// Progress as JSON lines on stdout instead of a bar.
    pub json_progress: bool,
    /// The one source lies above the target and wins: every granule it holds is written
    /// (see the module docs).
    pub overwrite: bool,
}

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// Objects looked at.
    pub objects: u64,
    /// Objects that needed data.
    pub copied_objects: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Objects started over because a client wrote them meanwhile.
    pub restarts: u64,
}

/// An I/O the state machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Io {
    /// Bitmap-only read of layer `layer` (0 = target, then the sources in order).
    Bitmap { layer: usize },
    /// Layered read of the target's object (its version; and the data unless overwriting).
    Read,
    /// Layered read of the first source's object: the data of an overwriting copy.
    ReadSource,
    /// Write `len` bytes at `offset` (within the object) with compare-and-set `version`.
    Write { offset: u64, len: u64, version: u64 },
}

/// One object's copy: bitmaps, then the layered read, then the writes, one at a time (each
/// write bumps the object's version, which the next one's compare-and-set expects).
#[derive(Debug)]
pub struct ObjectCopy {
    granularity: u64,
    len: u64,
    layers: usize,
    overwrite: bool,
    bitmaps_left: usize,
    reads_left: usize,
    own: Vec<u8>,
    merged: Vec<u8>,
    runs: Vec<(u64, u64)>,
    next_run: usize,
    version: u64,
    /// Bytes written so far.
    pub bytes: u64,
    /// Times started over.
    pub restarts: u32,
}

/// The state machine's answer to an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Issue these.
    Issue(Vec<Io>),
    /// Nothing to do until the other answers arrive.
    Wait,
    /// The object is complete.
    Done,
}

impl ObjectCopy {
    /// An object of `len` bytes over `layers` layers (target + sources); `overwrite` as in
    /// [`CopyJob::overwrite`].
    pub fn new(len: u64, granularity: u64, layers: usize, overwrite: bool) -> ObjectCopy {
        ObjectCopy {
            granularity,
            len,
            layers,
            overwrite,
            bitmaps_left: 0,
            reads_left: 0,
            own: Vec::new(),
            merged: Vec::new(),
            runs: Vec::new(),
            next_run: 0,
            version: 0,
            bytes: 0,
            restarts: 0,
        }
    }

    /// The first I/Os: every layer's bitmap.
    pub fn start(&mut self) -> Step {
        self.bitmaps_left = self.layers;
        self.own.clear();
        self.merged.clear();
        self.runs.clear();
        self.next_run = 0;
        Step::Issue((0..self.layers).map(|layer| Io::Bitmap { layer }).collect())
    }

    /// A bitmap arrived.
    pub fn bitmap(&mut self, layer: usize, bits: &[u8]) -> Step {
        let target = if layer == 0 {
            &mut self.own
        } else {
            &mut self.merged
        };
        if target.len() < bits.len() {
            target.resize(bits.len(), 0);
        }
        for (t, b) in target.iter_mut().zip(bits) {
            *t |= b;
        }
        self.bitmaps_left -= 1;
        if self.bitmaps_left > 0 {
            return Step::Wait;
        }
        let bit = |v: &[u8], i: u64| {
            v.get((i / 8) as usize)
                .is_some_and(|b| b & (1 << (i % 8)) != 0)
        };
        let wanted = |i: u64| bit(&self.merged, i) && (self.overwrite || !bit(&self.own, i));
        let granules = self.len / self.granularity;
        let mut i = 0;
        while i < granules {
            if !wanted(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < granules && wanted(i) {
                i += 1;
            }
            self.runs
                .push((start * self.granularity, (i - start) * self.granularity));
        }
        if self.runs.is_empty() {
            Step::Done
        } else if self.overwrite {
            self.reads_left = 2;
            Step::Issue(vec![Io::Read, Io::ReadSource])
        } else {
            self.reads_left = 1;
            Step::Issue(vec![Io::Read])
        }
    }

    /// The layered read of the target returned the object's version in the target.
    pub fn read(&mut self, version: u64) -> Step {
        self.version = version;
        self.read_done()
    }

    /// The layered read of the source (overwriting copies) returned the data.
    pub fn source_read(&mut self) -> Step {
        self.read_done()
    }

    fn read_done(&mut self) -> Step {
        self.reads_left -= 1;
        if self.reads_left > 0 {
            return Step::Wait;
        }
        self.next_write()
    }

    /// A write finished: `Ok`, refused by compare-and-set (start over), or failed.
    pub fn written(&mut self, refused: bool) -> Step {
        if refused {
            self.restarts += 1;
            return self.start();
        }
        self.bytes += self.runs[self.next_run].1;
        self.version += 1;
        self.next_run += 1;
        self.next_write()
    }

    fn next_write(&mut self) -> Step {
        match self.runs.get(self.next_run) {
            Some(&(offset, len)) => Step::Issue(vec![Io::Write {
                offset,
                len,
                version: self.version + 1,
            }]),
            None => Step::Done,
        }
    }

    /// The runs to write (offset, len) within the object.
    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }
}

enum Answer {
    Bitmap(usize, OpDone),
    Read(OpDone),
    SourceRead(OpDone),
    Written(OpDone),
}

/// Runs `job` on `client` (loaded). Returns what was done.
pub fn copy_missing(client: &mut Client, job: &CopyJob) -> Result<CopyStats> {
    let total = job.size.div_ceil(job.block);
    let layers: Vec<u64> = std::iter::once(job.target)
        .chain(job.sources.iter().copied())
        .collect();
    let bar = progress_bar(total, job.json_progress);
    let answers: Rc<RefCell<Vec<(u64, Answer)>>> = Rc::default();
    let mut objects: Vec<Option<(u64, ObjectCopy, Vec<u8>)>> = Vec::new();
    let mut next = 0u64;
    let (mut finished, mut inflight) = (0u64, 0u32);
    let mut stats = CopyStats {
        objects: total,
        ..CopyStats::default()
    };
    let mut last_progress = Instant::now();
    let mut last_json = 0u64;
    while finished < total {
        while inflight < job.iodepth && next < total {
            let offset = next * job.block;
            let len = job.block.min(job.size - offset);
            let mut obj = ObjectCopy::new(len, job.granularity, layers.len(), job.overwrite);
            let step = obj.start();
            let slot = next;
            next += 1;
            inflight += 1;
            objects.push(Some((offset, obj, Vec::new())));
            issue(client, &answers, &layers, slot, offset, len, step, &[]);
        }
        client.wait_events(Some(POLL));
        let batch = std::mem::take(&mut *answers.borrow_mut());
        if !batch.is_empty() {
            last_progress = Instant::now();
        }
        for (slot, answer) in batch {
            let Some((offset, obj, data)) = objects[slot as usize].as_mut() else {
                continue;
            };
            let (offset, len) = (*offset, obj.len);
            let step = match answer {
                Answer::Bitmap(layer, done) => {
                    done.result.map_err(|e| fail(job, offset, e))?;
                    obj.bitmap(layer, &done.bitmap)
                }
                Answer::Read(done) => {
                    let version = done.version;
                    if !job.overwrite {
                        *data = done.buf;
                    }
                    done.result.map_err(|e| fail(job, offset, e))?;
                    obj.read(version)
                }
                Answer::SourceRead(done) => {
                    *data = done.buf;
                    done.result.map_err(|e| fail(job, offset, e))?;
                    obj.source_read()
                }
                Answer::Written(done) => match done.result {
                    Ok(_) => obj.written(false),
                    Err(ClientError::Osd { errno: EINTR, .. }) => {
                        if obj.restarts >= MAX_RESTARTS {
                            return Err(CliError::Refused(format!(
                                "object at {offset} of inode {:#x} kept changing; re-run",
                                job.target
                            )));
                        }
                        obj.written(true)
                    }
                    Err(e) => return Err(fail(job, offset, e)),
                },
            };
            if step == Step::Done {
                if let Some((_, obj, _)) = objects[slot as usize].take() {
                    stats.bytes += obj.bytes;
                    stats.restarts += u64::from(obj.restarts);
                    stats.copied_objects += u64::from(obj.bytes > 0);
                }
                finished += 1;
                inflight -= 1;
                bar.inc(1);
                if job.json_progress
                    && (finished * 100 / total != last_json * 100 / total || finished == total)
                {
                    last_json = finished;
                    println!("{}", json!({"progress": finished, "total": total}));
                }
            } else if let Some((_, _, data)) = objects[slot as usize].as_ref() {
                issue(client, &answers, &layers, slot, offset, len, step, data);
            }
        }
        if !job.stall_timeout.is_zero() && last_progress.elapsed() > job.stall_timeout {
            bar.finish_and_clear();
            return Err(CliError::Refused(format!(
                "no I/O finished for {:?}: PGs are not active (see pg-list); re-run to resume",
                job.stall_timeout
            )));
        }
    }
    bar.finish_and_clear();
    // Copies in pools without immediate_commit=all are durable only after a sync.
    let synced: Rc<RefCell<Option<OpDone>>> = Rc::default();
    let s = Rc::clone(&synced);
    client.sync(move |d| *s.borrow_mut() = Some(d));
    while synced.borrow().is_none() {
        client.wait_events(Some(POLL));
    }
    if let Some(Err(e)) = synced.borrow_mut().take().map(|d| d.result) {
        return Err(CliError::Client(e));
    }
    Ok(stats)
}

fn fail(job: &CopyJob, offset: u64, e: ClientError) -> CliError {
    CliError::Refused(format!(
        "copying into inode {:#x} at offset {offset}: {e}; re-run to resume",
        job.target
    ))
}

#[allow(clippy::too_many_arguments)]
fn issue(
    client: &mut Client,
    answers: &Rc<RefCell<Vec<(u64, Answer)>>>,
    layers: &[u64],
    slot: u64,
    offset: u64,
    len: u64,
    step: Step,
    data: &[u8],
) {
    let Step::Issue(ios) = step else {
        return;
    };
    for io in ios {
        let a = Rc::clone(answers);
        match io {
            Io::Bitmap { layer } => client.read_bitmap(layers[layer], offset, len, move |d| {
                a.borrow_mut().push((slot, Answer::Bitmap(layer, d)))
            }),
            Io::Read => client.read(layers[0], offset, vec![0; len as usize], move |d| {
                a.borrow_mut().push((slot, Answer::Read(d)))
            }),
            Io::ReadSource => client.read(layers[1], offset, vec![0; len as usize], move |d| {
                a.borrow_mut().push((slot, Answer::SourceRead(d)))
            }),
            Io::Write {
                offset: at,
                len: n,
                version,
            } => client.write(
                layers[0],
                offset + at,
                data[at as usize..(at + n) as usize].to_vec(),
                version,
                move |d| a.borrow_mut().push((slot, Answer::Written(d))),
            ),
        }
    }
}

fn progress_bar(total: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("copying {bar:40} {pos}/{len} objects, {per_sec}, eta {eta}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(POLL);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 4096;

    #[test]
    fn only_granules_a_source_holds_and_the_target_lacks() {
        let mut o = ObjectCopy::new(8 * G, G, 3, false);
        assert_eq!(
            o.start(),
            Step::Issue((0..3).map(|layer| Io::Bitmap { layer }).collect())
        );
        assert_eq!(o.bitmap(0, &[0b0000_0110]), Step::Wait);
        assert_eq!(o.bitmap(2, &[0b1000_0011]), Step::Wait);
        assert_eq!(o.bitmap(1, &[0b0000_1000]), Step::Issue(vec![Io::Read]));
        // Granule 0 (source 2), 3 (source 1), 7 (source 2); 1 and 2 are the target's own.
        assert_eq!(o.runs(), &[(0, G), (3 * G, G), (7 * G, G)]);
        assert_eq!(
            o.read(5),
            Step::Issue(vec![Io::Write {
                offset: 0,
                len: G,
                version: 6
            }])
        );
        assert_eq!(
            o.written(false),
            Step::Issue(vec![Io::Write {
                offset: 3 * G,
                len: G,
                version: 7
            }])
        );
        // A client wrote meanwhile: start over from the bitmaps.
        assert_eq!(o.written(true), o_start(3));
        assert_eq!(o.restarts, 1);
        o.bitmap(0, &[0b0000_1111]);
        o.bitmap(1, &[0b0000_1000]);
        assert_eq!(o.bitmap(2, &[0b1000_0011]), Step::Issue(vec![Io::Read]));
        assert_eq!(o.runs(), &[(7 * G, G)]);
        assert_eq!(
            o.read(9),
            Step::Issue(vec![Io::Write {
                offset: 7 * G,
                len: G,
                version: 10
            }])
        );
        assert_eq!(o.written(false), Step::Done);
        assert_eq!(o.bytes, 2 * G);
    }

    #[test]
    fn an_overwriting_copy_writes_every_granule_the_source_holds() {
        let mut o = ObjectCopy::new(8 * G, G, 2, true);
        o.start();
        assert_eq!(o.bitmap(0, &[0b0000_0110]), Step::Wait);
        assert_eq!(
            o.bitmap(1, &[0b1000_0011]),
            Step::Issue(vec![Io::Read, Io::ReadSource])
        );
        // Granule 1 is the target's own, and the source's wins there too.
        assert_eq!(o.runs(), &[(0, 2 * G), (7 * G, G)]);
        assert_eq!(o.source_read(), Step::Wait);
        assert_eq!(
            o.read(5),
            Step::Issue(vec![Io::Write {
                offset: 0,
                len: 2 * G,
                version: 6
            }])
        );
        // A source holding nothing costs no read.
        let mut empty = ObjectCopy::new(8 * G, G, 2, true);
        empty.start();
        empty.bitmap(0, &[0xff]);
        assert_eq!(empty.bitmap(1, &[0]), Step::Done);
    }

    fn o_start(layers: usize) -> Step {
        Step::Issue((0..layers).map(|layer| Io::Bitmap { layer }).collect())
    }

    #[test]
    fn a_full_target_or_empty_sources_cost_no_read() {
        let mut full = ObjectCopy::new(8 * G, G, 2, false);
        full.start();
        full.bitmap(1, &[0xff]);
        assert_eq!(full.bitmap(0, &[0xff]), Step::Done);
        let mut empty = ObjectCopy::new(8 * G, G, 2, false);
        empty.start();
        empty.bitmap(0, &[]);
        assert_eq!(empty.bitmap(1, &[]), Step::Done);
    }
}
