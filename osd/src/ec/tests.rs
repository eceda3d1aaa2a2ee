//! The EC write and peering's torn-stripe decision together: a write is cut by a crash at
//! any point (any subset of its part writes and stabilizes reached the stores), peering
//! settles the object from the parts' version listings, and a read of the settled version
//! gives the whole old object or the whole new one — never a mix — and the new one whenever
//! the client was told the write succeeded.

use std::collections::BTreeMap;

use proptest::prelude::*;
use vitastor_blockstore::AlignedBuf;
use vitastor_layout::OsdNum;

use super::codec::Codec;
use super::geometry::Geometry;
use super::read::{self, PartData};
use super::torn::{self, PartListing, Settle};
use super::write::{Action, EcWriteOp, Event, Facts};

/// One part's store: every version it holds, with its bytes, bitmap and stability.
#[derive(Debug, Clone, Default)]
struct Store {
    versions: BTreeMap<u64, (PartData, bool)>,
}

impl Store {
    fn newest(&self) -> (u64, &PartData) {
        let (v, (d, _)) = self.versions.iter().next_back().expect("a version");
        (*v, d)
    }

    fn listing(&self, part: u32) -> PartListing {
        PartListing {
            part,
            osd: OsdNum(u64::from(part) + 1),
            stable: self
                .versions
                .iter()
                .rev()
                .find(|(_, (_, s))| *s)
                .map(|(v, _)| *v),
            unstable: self
                .versions
                .iter()
                .filter(|(_, (_, s))| !s)
                .map(|(v, _)| *v)
                .collect(),
        }
    }
}

/// Parts of a stripe holding `image` as stable version 1.
fn initial(geo: &Geometry, codec: &Codec, image: &[u8], bitmaps: &[Vec<u8>]) -> Vec<Store> {
    let n = geo.total_parts() as usize;
    let bs = geo.block_size as usize;
    let mut data: Vec<Vec<u8>> = image.chunks(bs).map(<[u8]>::to_vec).collect();
    data.resize(n, vec![0; bs]);
    let mut refs: Vec<&mut [u8]> = data.iter_mut().map(Vec::as_mut_slice).collect();
    codec.encode(&mut refs).unwrap();
    let mut bm = bitmaps.to_vec();
    bm.resize(n, vec![0; geo.part_bitmap_bytes()]);
    let mut refs: Vec<&mut [u8]> = bm.iter_mut().map(Vec::as_mut_slice).collect();
    codec.encode(&mut refs).unwrap();
    data.into_iter()
        .zip(bm)
        .map(|(data, bitmap)| Store {
            versions: BTreeMap::from([(1, (PartData { bitmap, data }, true))]),
        })
        .collect()
}

/// The object at `version` read from `holders`: its bitmap and bytes.
fn read_at(
    geo: &Geometry,
    codec: &Codec,
    stores: &[Store],
    holders: &[u32],
    version: u64,
) -> (Vec<u8>, Vec<u8>) {
    let reachable: Vec<bool> = (0..geo.total_parts())
        .map(|p| holders.contains(&p))
        .collect();
    let plan = read::plan_range(geo, 0, geo.object_size(), &reachable, None).unwrap();
    let replies: Vec<PartData> = plan
        .reads
        .iter()
        .map(|r| {
            let (d, _) = &stores[r.part as usize].versions[&version];
            PartData {
                bitmap: d.bitmap.clone(),
                data: d.data[r.range.start as usize..r.range.end as usize].to_vec(),
            }
        })
        .collect();
    plan.assemble(codec, &replies, 0, geo.object_size())
        .unwrap()
}

/// Runs one write to the end of its writes; `reach` picks which part writes reach the
/// stores, `stab_reach` which stabilizes. Returns whether the client was answered Ok.
fn write_cut(
    geo: &Geometry,
    codec: &Codec,
    stores: &mut [Store],
    offset: u64,
    data: Vec<u8>,
    stabilize_now: bool,
    (reach, stab_reach): (u8, u8),
) -> bool {
    let n = geo.total_parts();
    let mut op = EcWriteOp::new(*geo, 0, offset, AlignedBuf::from_slice(&data));
    let facts = Facts {
        active: true,
        degraded: false,
        recovery_waits: None,
        members: (1..=u64::from(n)).map(|o| Some(OsdNum(o))).collect(),
        local: Some(0),
        current: 1,
        purged_up_to: 0,
        stabilize_now,
    };
    let mut pending = op.advance(codec, Event::Locked(facts));
    let mut acked = false;
    // A part whose write did not reach its store: the crash came first, and nothing after
    // it is delivered.
    let mut crashed = false;
    while !pending.is_empty() && !crashed {
        let mut next = Vec::new();
        for a in pending {
            let ev = match a {
                Action::Read {
                    tag,
                    part,
                    version,
                    range,
                    ..
                } => {
                    let (d, _) = &stores[part as usize].versions[&version];
                    Event::Read {
                        tag,
                        result: Ok(PartData {
                            bitmap: d.bitmap.clone(),
                            data: d.data[range.start as usize..range.end as usize].to_vec(),
                        }),
                    }
                }
                Action::Write {
                    part,
                    version,
                    offset,
                    data,
                    attr,
                    ..
                } => {
                    if reach & (1 << part) == 0 {
                        crashed = true;
                        continue;
                    }
                    let s = &mut stores[part as usize];
                    let (_, old) = s.newest();
                    let mut new = old.clone();
                    let at = offset as usize;
                    new.data[at..at + data.len()].copy_from_slice(&data);
                    match attr {
                        Some(a) => new.bitmap = a,
                        None => geo.mark(&mut new.bitmap, offset..offset + data.len() as u32),
                    }
                    s.versions.insert(version, (new, false));
                    Event::Sub {
                        part,
                        result: Ok(()),
                    }
                }
                Action::Stabilize { part, version, .. } => {
                    if stab_reach & (1 << part) == 0 {
                        crashed = true;
                        continue;
                    }
                    for (v, (_, stable)) in stores[part as usize].versions.iter_mut() {
                        if *v <= version {
                            *stable = true;
                        }
                    }
                    Event::Sub {
                        part,
                        result: Ok(()),
                    }
                }
                Action::Reply(r) => {
                    acked = r.is_ok();
                    continue;
                }
                _ => continue,
            };
            next.extend(op.advance(codec, ev));
        }
        pending = next;
    }
    acked
}

proptest! {
    #[test]
    fn a_torn_write_settles_whole_old_or_whole_new(
        rs in any::<bool>(),
        off in 0u64..16,
        len in 1u64..16,
        fill in any::<u8>(),
        stabilize_now in any::<bool>(),
        reach in any::<u8>(),
        stab_reach in any::<u8>(),
    ) {
        let (geo, codec) = if rs {
            (Geometry::new(4, 2, 16384, 4096).unwrap(), Codec::reed_solomon(4, 2).unwrap())
        } else {
            (Geometry::new(2, 1, 16384, 4096).unwrap(), Codec::xor(2).unwrap())
        };
        let k = geo.data_parts;
        let size = geo.object_size();
        let old_image: Vec<u8> = (0..size).map(|i| (i / 4096) as u8).collect();
        // The old object has every other granule written.
        let mut old_bitmaps = vec![vec![0u8; geo.part_bitmap_bytes()]; k as usize];
        for (p, bm) in old_bitmaps.iter_mut().enumerate() {
            for g in (0..geo.part_granules()).filter(|g| (g + p as u32).is_multiple_of(2)) {
                geo.mark(bm, g * 4096..(g + 1) * 4096);
            }
        }
        let mut stores = initial(&geo, &codec, &old_image, &old_bitmaps);
        let all_parts: Vec<u32> = (0..geo.total_parts()).collect();
        let old = read_at(&geo, &codec, &stores, &all_parts, 1);
        prop_assert_eq!(&old.1, &old_image);

        let off = (off * 4096) % size;
        let len = (len * 4096).min(size - off);
        let data = vec![fill; len as usize];
        let mut new_image = old_image.clone();
        new_image[off as usize..(off + len) as usize].copy_from_slice(&data);
        let mut new_bitmaps = old_bitmaps.clone();
        for p in geo.data_ranges(off, len) {
            geo.mark(&mut new_bitmaps[p.part as usize], p.range);
        }
        let bitmaps: Vec<&[u8]> = new_bitmaps.iter().map(Vec::as_slice).collect();
        let new = (geo.object_bitmap(&bitmaps), new_image);

        let acked = write_cut(&geo, &codec, &mut stores, off, data, stabilize_now, (reach, stab_reach));

        // Peering after the crash.
        let listings: Vec<PartListing> = (0..geo.total_parts())
            .map(|p| stores[p as usize].listing(p))
            .collect();
        let Settle::At { version, holders, stabilize, rollback, .. } = torn::settle(k, &listings)
        else {
            panic!("nothing stable was lost");
        };
        for (part, _, to) in rollback {
            stores[part as usize].versions.retain(|v, (_, s)| *v <= to || *s);
        }
        for (part, _, to) in stabilize {
            for (v, (_, s)) in stores[part as usize].versions.iter_mut() {
                if *v <= to {
                    *s = true;
                }
            }
        }
        let holders: Vec<u32> = holders.iter().map(|&(p, _)| p).collect();
        prop_assert!(holders.len() >= k as usize);
        for &p in &holders {
            prop_assert_eq!(stores[p as usize].newest().0, version);
        }
        let got = read_at(&geo, &codec, &stores, &holders, version);
        match version {
            1 => {
                prop_assert!(!acked, "an acknowledged write was rolled back");
                prop_assert_eq!(got, old);
            }
            2 => prop_assert_eq!(got, new),
            v => prop_assert!(false, "settled at version {}", v),
        }
    }
}
