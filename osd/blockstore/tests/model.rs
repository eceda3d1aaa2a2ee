//! Model-based property test: random sequences of every blockstore operation and restarts,
//! checked against an in-memory model of object versions (data and external bitmap), with
//! zero-length writes and writes carrying an explicit external bitmap among them.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use vitastor_blockstore::simdisk::SimEngine;
use vitastor_blockstore::{Blockstore, BsError, BsOp, BsReply, ListFilter, ObjVerId, ObjectId};

const BLOCK: u32 = 16384;
const GRANULES: u32 = BLOCK / GRAN;
const OBJECTS: u64 = 6;

#[derive(Clone, Debug)]
enum Action {
    Write {
        obj: u64,
        first: u32,
        count: u32,
        stable: bool,
        /// Explicit external bitmap (one byte: the object has 4 granules).
        attr: Option<u8>,
    },
    Delete {
        obj: u64,
    },
    Sync,
    Stabilize {
        obj: u64,
    },
    Rollback {
        obj: u64,
    },
    Read {
        obj: u64,
    },
    List,
    FlushAll,
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (0..OBJECTS, 0..GRANULES, 1..=GRANULES, any::<bool>()).prop_map(|(obj, first, count, stable)| {
            let count = count.min(GRANULES - first);
            Action::Write { obj, first, count, stable, attr: None }
        }),
        2 => (0..OBJECTS, 0..GRANULES, 0..=GRANULES, any::<bool>(), proptest::option::of(0u8..16))
            .prop_map(|(obj, first, count, stable, attr)| {
                let count = count.min(GRANULES - first);
                Action::Write { obj, first, count, stable, attr }
            }),
        1 => (0..OBJECTS).prop_map(|obj| Action::Delete { obj }),
        2 => Just(Action::Sync),
        2 => (0..OBJECTS).prop_map(|obj| Action::Stabilize { obj }),
        1 => (0..OBJECTS).prop_map(|obj| Action::Rollback { obj }),
        3 => (0..OBJECTS).prop_map(|obj| Action::Read { obj }),
        1 => Just(Action::List),
        1 => Just(Action::FlushAll),
        1 => Just(Action::Restart),
    ]
}

#[derive(Clone, Debug)]
struct Ver {
    version: u64,
    /// Granule writer ids; `None` = deleted.
    content: Option<Vec<u64>>,
    /// External bitmap.
    attr: u8,
    stable: bool,
    synced: bool,
}

#[derive(Default)]
struct Model {
    objs: BTreeMap<u64, Vec<Ver>>,
    next_id: u64,
}

impl Model {
    /// Everything is durable; a durable stable version commits every older one.
    fn synced_all(&mut self) {
        for vs in self.objs.values_mut() {
            for v in vs.iter_mut() {
                v.synced = true;
            }
            if let Some(i) = vs.iter().rposition(|v| v.stable) {
                for v in vs[..i].iter_mut() {
                    v.stable = true;
                }
            }
        }
    }

    fn latest(&self, obj: u64) -> Option<&Ver> {
        self.objs.get(&obj).and_then(|v| v.last())
    }
}

fn oid(obj: u64) -> ObjectId {
    ObjectId::new(1 << 48 | 1, obj * BLOCK as u64)
}

fn check_read(bs: &mut Blockstore<SimEngine>, m: &Model, obj: u64) {
    let (version, bitmap, data) = match bs
        .exec(BsOp::Read {
            oid: oid(obj),
            version: vitastor_blockstore::NEWEST,
            offset: 0,
            len: BLOCK,
        })
        .expect("read")
    {
        BsReply::Read {
            version,
            bitmap,
            data,
        } => (version, bitmap, data.to_vec()),
        other => panic!("unexpected reply {other:?}"),
    };
    let expect = m.latest(obj);
    match expect {
        None => {
            assert_eq!(version, 0);
            assert_eq!(bitmap, [0]);
            assert!(data.iter().all(|&b| b == 0));
        }
        Some(v) => {
            assert_eq!(bitmap, [v.attr], "object {obj} bitmap");
            // A flushed deletion leaves nothing behind, not even its version.
            if !(v.content.is_none() && version == 0) {
                assert_eq!(version, v.version, "object {obj}");
            }
            for g in 0..GRANULES {
                let got = decode_pattern(&data[(g * GRAN) as usize..((g + 1) * GRAN) as usize], g);
                let want = v.content.as_ref().map(|c| c[g as usize]).unwrap_or(0);
                assert_eq!(
                    got,
                    Some(want),
                    "object {obj} granule {g} version {}",
                    v.version
                );
            }
        }
    }
}

fn run(actions: Vec<Action>, seed: u64) {
    let mut cfg = small_cfg(BLOCK, 256 * 1024);
    let immediate = seed % 2 == 1;
    if immediate {
        cfg.immediate_commit = vitastor_blockstore::ImmediateCommit::All;
    }
    let disks = sim_disks(&cfg, 2 << 20);
    let mut bs = open_sim(&cfg, disks, seed);
    let mut m = Model::default();
    let mut restarts = 0;
    for a in actions {
        match a {
            Action::Write {
                obj,
                first,
                count,
                stable,
                attr,
            } => {
                m.next_id += 1;
                let id = m.next_id;
                let r = bs.exec(BsOp::Write {
                    oid: oid(obj),
                    version: 0,
                    offset: first * GRAN,
                    data: write_buf(id, first, count),
                    bitmap: attr.map(|a| vec![a]),
                    stable,
                });
                match r {
                    Ok(BsReply::Written { version, .. }) => {
                        let (mut content, prev_attr) = match m.latest(obj) {
                            Some(Ver {
                                content: Some(c),
                                attr,
                                ..
                            }) => (c.clone(), *attr),
                            _ => (vec![0; GRANULES as usize], 0),
                        };
                        let range: u8 = (first..first + count).map(|g| 1u8 << g).sum();
                        let attr = attr.unwrap_or(prev_attr | range);
                        for g in 0..GRANULES {
                            if range & 1 << g != 0 {
                                content[g as usize] = id;
                            } else if prev_attr & !attr & 1 << g != 0 {
                                // The write clears this granule's external bit: it is gone.
                                content[g as usize] = 0;
                            }
                        }
                        m.objs.entry(obj).or_default().push(Ver {
                            version,
                            content: Some(content),
                            attr,
                            stable,
                            synced: immediate,
                        });
                        if immediate {
                            m.synced_all();
                        }
                    }
                    Err(BsError::NoSpace(_)) => {}
                    other => panic!("write: {other:?}"),
                }
            }
            Action::Delete { obj } => {
                if m.latest(obj).is_none_or(|v| v.content.is_none()) {
                    continue;
                }
                match bs.exec(BsOp::Delete {
                    oid: oid(obj),
                    version: 0,
                    stable: false,
                }) {
                    Ok(BsReply::Written { version, .. }) => {
                        m.objs.get_mut(&obj).unwrap().push(Ver {
                            version,
                            content: None,
                            attr: 0,
                            stable: false,
                            synced: immediate,
                        })
                    }
                    Err(BsError::NoSpace(_)) => {}
                    other => panic!("delete: {other:?}"),
                }
            }
            Action::Sync => {
                bs.exec(BsOp::Sync).expect("sync");
                m.synced_all();
            }
            Action::Stabilize { obj } => {
                let Some(v) = m.latest(obj).cloned() else {
                    continue;
                };
                let all_synced = m.objs[&obj].iter().all(|x| x.synced || x.stable);
                let r = bs.exec(BsOp::Stabilize(vec![ObjVerId::new(oid(obj), v.version)]));
                if all_synced {
                    r.expect("stabilize");
                    for x in m.objs.get_mut(&obj).unwrap() {
                        x.stable = true;
                    }
                } else {
                    assert!(
                        matches!(r, Err(BsError::NotSynced)),
                        "stabilize of unsynced: {r:?}"
                    );
                }
            }
            Action::Rollback { obj } => {
                let Some(vs) = m.objs.get(&obj) else { continue };
                let Some(target) = vs
                    .iter()
                    .rev()
                    .find(|v| v.stable)
                    .map(|v| v.version)
                    .or(Some(0))
                else {
                    continue;
                };
                if vs.iter().any(|v| v.version > target && v.stable) {
                    continue;
                }
                if target == 0 && vs.first().is_some_and(|v| v.stable) {
                    continue;
                }
                // Versions flushed before this test's model knew (none) — rollback to the newest
                // stable one, or to 0 when nothing is stable.
                bs.exec(BsOp::Rollback(vec![ObjVerId::new(oid(obj), target)]))
                    .expect("rollback");
                m.objs
                    .get_mut(&obj)
                    .unwrap()
                    .retain(|v| v.version <= target);
            }
            Action::Read { obj } => check_read(&mut bs, &m, obj),
            Action::List => {
                let r = bs.exec(BsOp::List(ListFilter::default())).expect("list");
                let BsReply::List { stable, unstable } = r else {
                    panic!()
                };
                let mut want_stable = Vec::new();
                let mut want_unstable = Vec::new();
                for (&obj, vs) in &m.objs {
                    if let Some(v) = vs.iter().rev().find(|v| v.stable) {
                        if v.content.is_some() {
                            want_stable.push(ObjVerId::new(oid(obj), v.version));
                        }
                    }
                    if let Some(v) = vs.iter().rev().find(|v| !v.stable) {
                        want_unstable.push(ObjVerId::new(oid(obj), v.version));
                    }
                }
                want_stable.sort();
                want_unstable.sort();
                assert_eq!(stable, want_stable);
                assert_eq!(unstable, want_unstable);
            }
            Action::FlushAll => bs.flush_all().expect("flush"),
            Action::Restart => {
                bs.exec(BsOp::Sync).expect("sync");
                m.synced_all();
                bs.wait_idle().unwrap();
                let disks = bs_into_disks(bs);
                restarts += 1;
                bs = open_sim(&cfg, disks, seed + restarts);
            }
        }
        // Older stable versions are folded away by flushes: keep the newest one of the stable
        // prefix and everything after it.
        for vs in m.objs.values_mut() {
            let prefix = vs.iter().take_while(|v| v.stable).count();
            if prefix > 1 {
                vs.drain(..prefix - 1);
            }
        }
    }
    for obj in 0..OBJECTS {
        check_read(&mut bs, &m, obj);
    }
}

fn bs_into_disks(bs: Blockstore<SimEngine>) -> Vec<vitastor_blockstore::simdisk::SimDisk> {
    let mut bs = bs;
    let disks = bs.engine_mut().power_loss_none();
    drop(bs);
    disks
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn model_matches(actions in proptest::collection::vec(action(), 1..250), seed in any::<u64>()) {
        run(actions, seed);
    }
}

#[test]
fn long_fixed_sequence() {
    let mut acts = Vec::new();
    for i in 0..600u64 {
        let obj = i % OBJECTS;
        acts.push(Action::Write {
            obj,
            first: (i % 3) as u32,
            count: (i % 3) as u32,
            stable: i % 5 == 0,
            attr: (i % 4 == 1).then_some((i % 16) as u8),
        });
        if i % 7 == 0 {
            acts.push(Action::Sync);
            acts.push(Action::Stabilize { obj });
        }
        if i % 50 == 0 {
            acts.push(Action::Restart);
        }
        if i % 11 == 0 {
            acts.push(Action::Read { obj });
        }
    }
    run(acts, 42);
}
