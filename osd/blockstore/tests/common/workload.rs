//! A random concurrent workload over a blockstore that reports what it does as events, and a
//! checker that decides, after a crash or power loss, whether what reads back is allowed:
//! every granule must hold the value of its newest durable write or of a later write.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vitastor_blockstore::{
    Blockstore, BsError, BsOp, BsReply, Completion, IoEngine, ObjVerId, ObjectId, NEWEST,
};

use super::{decode_pattern, write_buf, GRAN};

/// What the workload did, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Write `id` of granules `first..first+count` of `obj` submitted (`count` 0: a version
    /// without data).
    Write {
        id: u64,
        obj: u64,
        first: u32,
        count: u32,
    },
    /// Deletion `id` of `obj` submitted.
    Delete { id: u64, obj: u64 },
    /// Operation `id` completed successfully.
    Done { id: u64 },
    /// Operation `id` failed (it changed nothing).
    Failed { id: u64 },
    /// Sync `id` submitted / completed.
    SyncStart { id: u64 },
    /// Sync completed.
    SyncDone { id: u64 },
}

impl Event {
    /// One text line (for the crash test's pipe).
    pub fn line(&self) -> String {
        match self {
            Event::Write {
                id,
                obj,
                first,
                count,
            } => format!("W {id} {obj} {first} {count}\n"),
            Event::Delete { id, obj } => format!("X {id} {obj}\n"),
            Event::Done { id } => format!("C {id}\n"),
            Event::Failed { id } => format!("E {id}\n"),
            Event::SyncStart { id } => format!("S {id}\n"),
            Event::SyncDone { id } => format!("Z {id}\n"),
        }
    }

    /// Parse a line; `None` for a torn last line.
    pub fn parse(l: &str) -> Option<Event> {
        let f: Vec<u64> = l
            .split(' ')
            .skip(1)
            .map(|x| x.parse().ok())
            .collect::<Option<Vec<_>>>()?;
        Some(match (l.chars().next()?, f.as_slice()) {
            ('W', [id, obj, first, count]) => Event::Write {
                id: *id,
                obj: *obj,
                first: *first as u32,
                count: *count as u32,
            },
            ('X', [id, obj]) => Event::Delete { id: *id, obj: *obj },
            ('C', [id]) => Event::Done { id: *id },
            ('E', [id]) => Event::Failed { id: *id },
            ('S', [id]) => Event::SyncStart { id: *id },
            ('Z', [id]) => Event::SyncDone { id: *id },
            _ => return None,
        })
    }
}

/// Object id of workload object `obj`.
pub fn oid(obj: u64, block: u32) -> ObjectId {
    ObjectId::new(2 << 48 | 7, obj * block as u64)
}

/// Workload parameters.
pub struct Workload {
    pub objects: u64,
    pub granules: u32,
    pub block: u32,
    pub queue_depth: usize,
    pub rng: SmallRng,
    pub next_id: u64,
    inflight: HashMap<u64, (u64, u64)>,
    /// Newest completed version per object, for stabilize.
    versions: HashMap<u64, u64>,
    commit_all: bool,
    /// Stabilize everything once this sync completes (stabilize needs synced versions).
    commit_after_sync: Option<u64>,
    /// Device errors (injected faults) are expected, not a test failure.
    pub device_errors_ok: bool,
}

impl Workload {
    pub fn new(objects: u64, block: u32, queue_depth: usize, seed: u64, first_id: u64) -> Self {
        Workload {
            objects,
            granules: block / GRAN,
            block,
            queue_depth,
            rng: SmallRng::seed_from_u64(seed),
            next_id: first_id,
            inflight: HashMap::new(),
            versions: HashMap::new(),
            commit_all: false,
            commit_after_sync: None,
            device_errors_ok: false,
        }
    }

    /// Keep the queue full and handle completions for `steps` poll rounds (or forever when
    /// `steps` is `None`), reporting every event to `sink`.
    pub fn run<E: IoEngine>(
        &mut self,
        bs: &mut Blockstore<E>,
        steps: Option<u64>,
        sink: &mut dyn FnMut(Event),
    ) {
        let mut out: Vec<Completion> = Vec::new();
        let mut step = 0u64;
        // After a restart, relearn the versions that may still need stabilizing.
        if let Ok(BsReply::List { stable, unstable }) = bs.exec(BsOp::List(Default::default())) {
            for ov in stable.into_iter().chain(unstable) {
                let obj = ov.oid.stripe / self.block as u64;
                let v = self.versions.entry(obj).or_insert(0);
                *v = (*v).max(ov.version);
            }
        }
        loop {
            while self.inflight.len() < self.queue_depth {
                self.submit_one(bs, sink);
            }
            bs.run();
            bs.poll(true).expect("poll");
            bs.take_completions(&mut out);
            for c in out.drain(..) {
                let Some((id, obj)) = self.inflight.remove(&c.id) else {
                    continue;
                };
                match c.result {
                    Ok(BsReply::Written { version, .. }) => {
                        sink(Event::Done { id });
                        let v = self.versions.entry(obj).or_insert(0);
                        *v = (*v).max(version);
                    }
                    Ok(BsReply::Done) if id >> 62 == 1 => {
                        sink(Event::SyncDone {
                            id: id & !(1 << 62),
                        });
                        if self.commit_after_sync == Some(id) {
                            self.commit_after_sync = None;
                            // One op per object: a stale version must not block the others.
                            let list: Vec<ObjVerId> = self
                                .versions
                                .iter()
                                .map(|(&obj, &v)| ObjVerId::new(oid(obj, self.block), v))
                                .collect();
                            for ov in list {
                                let op = bs.submit(BsOp::Stabilize(vec![ov]));
                                self.inflight.insert(op, (2 << 62, 0));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(BsError::NoSpace(_)) | Err(BsError::NotSynced) | Err(BsError::NotFound) => {
                        if id >> 62 == 0 {
                            sink(Event::Failed { id });
                            // A full journal of unstable writes waits for commits, as on an OSD.
                            self.commit_all = true;
                        }
                    }
                    // Not acknowledged, yet possibly (partly) written: like an operation in
                    // flight at a crash, so it gets no event.
                    Err(BsError::DeviceIo(_)) | Err(BsError::ReadOnly) if self.device_errors_ok => {
                    }
                    Err(e) => panic!("workload op failed: {e}"),
                }
            }
            step += 1;
            if steps.is_some_and(|s| step >= s) {
                return;
            }
        }
    }

    fn submit_one<E: IoEngine>(&mut self, bs: &mut Blockstore<E>, sink: &mut dyn FnMut(Event)) {
        if self.commit_after_sync.is_none() && std::mem::take(&mut self.commit_all) {
            let id = self.next_id;
            self.next_id += 1;
            sink(Event::SyncStart { id });
            let op = bs.submit(BsOp::Sync);
            self.inflight.insert(op, (id | 1 << 62, 0));
            self.commit_after_sync = Some(id | 1 << 62);
            return;
        }
        let obj = self.rng.gen_range(0..self.objects);
        let r = self.rng.gen_range(0..100);
        if r < 75 {
            let id = self.next_id;
            self.next_id += 1;
            let first = self.rng.gen_range(0..self.granules);
            let count = if self.rng.gen_bool(0.2) {
                self.granules - first
            } else {
                self.rng.gen_range(1..=self.granules - first)
            };
            // Some versions carry no data at all (as erasure-coded pools write them).
            let (first, count) = if self.rng.gen_bool(0.15) {
                (0, self.granules)
            } else if self.rng.gen_bool(0.05) {
                (first, 0)
            } else {
                (first, count)
            };
            sink(Event::Write {
                id,
                obj,
                first,
                count,
            });
            let op = bs.submit(BsOp::Write {
                oid: oid(obj, self.block),
                version: 0,
                offset: first * GRAN,
                data: write_buf(id, first, count),
                bitmap: None,
                stable: self.rng.gen_bool(0.85),
            });
            self.inflight.insert(op, (id, obj));
        } else if r < 80 {
            let id = self.next_id;
            self.next_id += 1;
            sink(Event::Delete { id, obj });
            let op = bs.submit(BsOp::Delete {
                oid: oid(obj, self.block),
                version: 0,
                stable: self.rng.gen_bool(0.7),
            });
            self.inflight.insert(op, (id, obj));
        } else if r < 90 {
            let id = self.next_id;
            self.next_id += 1;
            sink(Event::SyncStart { id });
            let op = bs.submit(BsOp::Sync);
            self.inflight.insert(op, (id | 1 << 62, 0));
        } else {
            // Commit the newest completed version; NotSynced (lazy mode) and NotFound (after a
            // restart versions are relearned) are fine.
            let Some(&v) = self.versions.get(&obj) else {
                return;
            };
            let op = bs.submit(BsOp::Stabilize(vec![ObjVerId::new(
                oid(obj, self.block),
                v,
            )]));
            self.inflight.insert(op, (2 << 62, obj));
        }
    }
}

type OpRange = (u64, Option<(u32, u32)>);

/// Reconstructs, from events, which values each granule may hold after a crash.
#[derive(Default)]
pub struct Checker {
    /// Per object, in order: (id, written granules `first, count`; `None` = delete).
    ops: BTreeMap<u64, Vec<OpRange>>,
    done: HashMap<u64, u64>,
    failed: std::collections::HashSet<u64>,
    durable: std::collections::HashSet<u64>,
    syncs: HashMap<u64, u64>,
    seq: u64,
    /// Per object and granule: the value known durable before this round.
    base: HashMap<(u64, u32), u64>,
    pub immediate: bool,
}

impl Checker {
    /// `immediate`: completions are durable by themselves.
    pub fn new(immediate: bool) -> Self {
        Checker {
            immediate,
            ..Default::default()
        }
    }

    pub fn feed(&mut self, e: &Event) {
        self.seq += 1;
        match *e {
            Event::Write {
                id,
                obj,
                first,
                count,
            } => self
                .ops
                .entry(obj)
                .or_default()
                .push((id, Some((first, count)))),
            Event::Delete { id, obj } => self.ops.entry(obj).or_default().push((id, None)),
            Event::Done { id } => {
                self.done.insert(id, self.seq);
                if self.immediate {
                    self.durable.insert(id);
                }
            }
            Event::Failed { id } => {
                self.failed.insert(id);
            }
            Event::SyncStart { id } => {
                self.syncs.insert(id, self.seq);
            }
            Event::SyncDone { id } => {
                let start = self.syncs[&id];
                for (&w, &at) in &self.done {
                    if at < start {
                        self.durable.insert(w);
                    }
                }
            }
        }
    }

    /// Check one object's content after restart and adopt it as the new baseline.
    pub fn check_object(&mut self, obj: u64, granules: u32, data: &[u8]) -> Result<(), String> {
        let ops: Vec<OpRange> = self
            .ops
            .get(&obj)
            .map(|v| {
                v.iter()
                    .filter(|(id, _)| !self.failed.contains(id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for g in 0..granules {
            let got = decode_pattern(&data[(g * GRAN) as usize..((g + 1) * GRAN) as usize], g)
                .ok_or_else(|| format!("object {obj} granule {g}: garbage"))?;
            // Values this granule took, in order, starting from the baseline.
            let mut vals: Vec<(u64, bool)> = vec![(*self.base.get(&(obj, g)).unwrap_or(&0), true)];
            for &(id, range) in &ops {
                let v = match range {
                    None => 0,
                    Some((f, c)) if g >= f && g < f + c => id,
                    Some(_) => continue,
                };
                vals.push((v, self.durable.contains(&id)));
            }
            let last_durable = vals.iter().rposition(|&(_, d)| d).unwrap();
            if !vals[last_durable..].iter().any(|&(v, _)| v == got) {
                return Err(format!(
                    "object {obj} granule {g}: read {got}, allowed {:?} (durable from index {last_durable} of {vals:?})",
                    vals[last_durable..].iter().map(|x| x.0).collect::<Vec<_>>()
                ));
            }
            self.base.insert((obj, g), got);
        }
        Ok(())
    }

    /// Forget the round's operations (after every object was checked).
    pub fn next_round(&mut self) {
        if std::env::var("VITASTOR_TEST_DEBUG").is_ok() {
            let nonzero = self.base.values().filter(|&&v| v != 0).count();
            eprintln!(
                "round: ops={} done={} durable={} failed={} nonzero_granules={nonzero}",
                self.ops.values().map(|v| v.len()).sum::<usize>(),
                self.done.len(),
                self.durable.len(),
                self.failed.len()
            );
        }
        self.ops.clear();
        self.done.clear();
        self.failed.clear();
        self.durable.clear();
        self.syncs.clear();
    }
}

/// Read every workload object and check it.
pub fn verify<E: IoEngine>(
    bs: &mut Blockstore<E>,
    checker: &mut Checker,
    objects: u64,
    block: u32,
) -> Result<(), String> {
    for obj in 0..objects {
        let r = bs
            .exec(BsOp::Read {
                oid: oid(obj, block),
                version: NEWEST,
                offset: 0,
                len: block,
            })
            .map_err(|e| e.to_string())?;
        let BsReply::Read { data, .. } = r else {
            unreachable!()
        };
        checker
            .check_object(obj, block / GRAN, &data)
            .map_err(|e| format!("{e}\n  store: {}", bs.debug_object(oid(obj, block))))?;
    }
    checker.next_round();
    Ok(())
}
