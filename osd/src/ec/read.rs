//! Which parts to read for a byte range of an EC/XOR object, and how the range and the
//! object's bitmap are put together from what came back: straight from the data parts
//! when they are all reachable, else reconstructed from any `k` reachable parts (degraded
//! read) — data and bitmaps alike, since a parity part carries the code of the data
//! parts' bitmaps as its attribute (see [`super::write`]).
//!
//! Pure: [`plan`] decides, [`ReadPlan::rebuild`] computes from the replies; the executor
//! sends the sub-reads (SEC_READ of the object's current version, bitmap included) and
//! never reads a part it was not told to.
//!
//! What it must never do: return bytes or bits of a part it neither read nor rebuilt, or
//! rebuild from fewer than `k` parts.

use std::ops::Range;

use super::codec::Codec;
use super::geometry::Geometry;
use super::EcError;

/// One sub-read: part bytes `range` (possibly empty: the bitmap alone) of part `part`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRead {
    /// Part number (0..k data, k.. parity).
    pub part: u32,
    /// Bytes of the part.
    pub range: Range<u32>,
}

/// What came back for one sub-read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartData {
    /// A data part's bitmap, a parity part's attribute (the code of the data parts'
    /// bitmaps); `part_bitmap_bytes` either way.
    pub bitmap: Vec<u8>,
    /// The bytes of the sub-read's range.
    pub data: Vec<u8>,
}

/// The sub-reads for wanted ranges of the data parts. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    geo: Geometry,
    /// Per data part: the bytes wanted from it (empty: its bitmap only).
    wanted: Vec<Range<u32>>,
    /// The sub-reads to send.
    pub reads: Vec<PartRead>,
    /// Data parts rebuilt from the others.
    pub rebuilt: Vec<u32>,
    /// The columns read from every source part when some part is rebuilt.
    columns: Range<u32>,
}

/// The smallest range holding both (an empty range holds nothing).
fn hull(a: &Range<u32>, b: &Range<u32>) -> Range<u32> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.clone(),
        (_, true) => a.clone(),
        _ => a.start.min(b.start)..a.end.max(b.end),
    }
}

/// Plans reads of `wanted[j]` from every data part `j` (every data part is read, at least
/// for its bitmap). `reachable[p]`: part `p`'s holder has the current version and can be
/// read; `local`: the part this OSD holds, preferred among parity parts.
pub fn plan(
    geo: &Geometry,
    wanted: Vec<Range<u32>>,
    reachable: &[bool],
    local: Option<u32>,
) -> Result<ReadPlan, EcError> {
    let k = geo.data_parts;
    let n = geo.total_parts();
    if wanted.len() != k as usize || reachable.len() != n as usize {
        return Err(EcError::Shape(format!(
            "{} wanted ranges and {} parts for a {}+{} stripe",
            wanted.len(),
            reachable.len(),
            k,
            geo.parity_parts
        )));
    }
    let rebuilt: Vec<u32> = (0..k).filter(|&j| !reachable[j as usize]).collect();
    let columns = rebuilt
        .iter()
        .fold(0..0, |acc, &j| hull(&acc, &wanted[j as usize]));
    let mut reads: Vec<PartRead> = (0..k)
        .filter(|&j| reachable[j as usize])
        .map(|j| PartRead {
            part: j,
            range: hull(&wanted[j as usize], &columns),
        })
        .collect();
    if !rebuilt.is_empty() {
        let mut parity: Vec<u32> = (k..n).filter(|&p| reachable[p as usize]).collect();
        parity.sort_by_key(|&p| Some(p) != local);
        let need = rebuilt.len();
        if parity.len() < need {
            return Err(EcError::TooFewParts {
                have: reads.len() + parity.len(),
                need: k as usize,
            });
        }
        reads.extend(parity.into_iter().take(need).map(|part| PartRead {
            part,
            range: columns.clone(),
        }));
    }
    Ok(ReadPlan {
        geo: *geo,
        wanted,
        reads,
        rebuilt,
        columns,
    })
}

/// Plans the recovery of part `part` (data or parity): the whole of every data part, read
/// from any `k` reachable parts other than `part` itself.
pub fn plan_recovery(
    geo: &Geometry,
    part: u32,
    reachable: &[bool],
    local: Option<u32>,
) -> Result<ReadPlan, EcError> {
    let mut others = reachable.to_vec();
    if let Some(r) = others.get_mut(part as usize) {
        *r = false;
    }
    plan(
        geo,
        vec![0..geo.block_size; geo.data_parts as usize],
        &others,
        local,
    )
}

/// Plans a client READ of `len` bytes at `offset` of the object.
pub fn plan_range(
    geo: &Geometry,
    offset: u64,
    len: u64,
    reachable: &[bool],
    local: Option<u32>,
) -> Result<ReadPlan, EcError> {
    let mut wanted = vec![0..0; geo.data_parts as usize];
    for p in geo.data_ranges(offset, len) {
        wanted[p.part as usize] = p.range;
    }
    plan(geo, wanted, reachable, local)
}

impl ReadPlan {
    /// Per data part: its bitmap and the bytes of its wanted range, from the replies to
    /// [`ReadPlan::reads`] (in the same order).
    pub fn rebuild(&self, codec: &Codec, replies: &[PartData]) -> Result<Vec<PartData>, EcError> {
        if replies.len() != self.reads.len() {
            return Err(EcError::Shape(format!(
                "{} replies for {} reads",
                replies.len(),
                self.reads.len()
            )));
        }
        let bb = self.geo.part_bitmap_bytes();
        for (r, d) in self.reads.iter().zip(replies) {
            if d.bitmap.len() != bb || d.data.len() != r.range.len() {
                return Err(EcError::Shape(format!(
                    "part {} answered {} bitmap and {} data bytes, expected {bb} and {}",
                    r.part,
                    d.bitmap.len(),
                    d.data.len(),
                    r.range.len()
                )));
            }
        }
        let n = self.geo.total_parts() as usize;
        let mut out: Vec<Option<PartData>> = vec![None; self.geo.data_parts as usize];
        for (r, d) in self.reads.iter().zip(replies) {
            if let Some(slot) = out.get_mut(r.part as usize) {
                let w = &self.wanted[r.part as usize];
                let data = if w.is_empty() {
                    Vec::new()
                } else {
                    let from = (w.start - r.range.start) as usize;
                    d.data[from..from + w.len()].to_vec()
                };
                *slot = Some(PartData {
                    bitmap: d.bitmap.clone(),
                    data,
                });
            }
        }
        if !self.rebuilt.is_empty() {
            let mut bitmaps: Vec<Option<Vec<u8>>> = vec![None; n];
            let mut columns: Vec<Option<Vec<u8>>> = vec![None; n];
            for (r, d) in self.reads.iter().zip(replies) {
                bitmaps[r.part as usize] = Some(d.bitmap.clone());
                if !self.columns.is_empty() {
                    let from = (self.columns.start - r.range.start) as usize;
                    columns[r.part as usize] =
                        Some(d.data[from..from + self.columns.len()].to_vec());
                }
            }
            codec.reconstruct(&mut bitmaps)?;
            if !self.columns.is_empty() {
                codec.reconstruct(&mut columns)?;
            }
            for &j in &self.rebuilt {
                let w = &self.wanted[j as usize];
                let data = if w.is_empty() {
                    Vec::new()
                } else {
                    let from = (w.start - self.columns.start) as usize;
                    let col = columns[j as usize].take().unwrap_or_default();
                    col[from..from + w.len()].to_vec()
                };
                out[j as usize] = Some(PartData {
                    bitmap: bitmaps[j as usize].take().unwrap_or_default(),
                    data,
                });
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Part `part`'s whole content and bitmap from the replies to a [`plan_recovery`] plan:
    /// a data part as rebuilt, a parity part encoded from the data parts.
    pub fn recover(
        &self,
        codec: &Codec,
        replies: &[PartData],
        part: u32,
    ) -> Result<PartData, EcError> {
        let k = self.geo.data_parts as usize;
        let n = self.geo.total_parts() as usize;
        let full = 0..self.geo.block_size;
        if part as usize >= n || self.wanted.iter().any(|w| *w != full) {
            return Err(EcError::Shape(format!(
                "part {part} cannot be recovered from this plan"
            )));
        }
        let mut parts = self.rebuild(codec, replies)?;
        if (part as usize) < k {
            return Ok(std::mem::take(&mut parts[part as usize]));
        }
        parts.resize(n, PartData::default());
        for p in &mut parts[k..] {
            p.data = vec![0; self.geo.block_size as usize];
            p.bitmap = vec![0; self.geo.part_bitmap_bytes()];
        }
        let mut data: Vec<&mut [u8]> = parts.iter_mut().map(|p| p.data.as_mut_slice()).collect();
        codec.encode(&mut data)?;
        let mut bitmaps: Vec<&mut [u8]> =
            parts.iter_mut().map(|p| p.bitmap.as_mut_slice()).collect();
        codec.encode(&mut bitmaps)?;
        Ok(std::mem::take(&mut parts[part as usize]))
    }

    /// A client READ's answer: the object's bitmap and the `len` bytes at `offset` the plan
    /// was made for (with [`plan_range`]).
    pub fn assemble(
        &self,
        codec: &Codec,
        replies: &[PartData],
        offset: u64,
        len: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), EcError> {
        let parts = self.rebuild(codec, replies)?;
        let bitmaps: Vec<&[u8]> = parts.iter().map(|p| p.bitmap.as_slice()).collect();
        let mut data = vec![0u8; len as usize];
        for piece in self.geo.data_ranges(offset, len) {
            let src = &parts[piece.part as usize].data;
            data[piece.buf_offset..piece.buf_offset + src.len()].copy_from_slice(src);
        }
        Ok((self.geo.object_bitmap(&bitmaps), data))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A stripe as stored: data parts, parity parts (data and bitmaps encoded).
    pub(crate) fn stripe(geo: &Geometry, codec: &Codec, seed: u8) -> Vec<PartData> {
        let bs = geo.block_size as usize;
        let bb = geo.part_bitmap_bytes();
        let mut parts: Vec<PartData> = (0..geo.total_parts() as usize)
            .map(|p| PartData {
                bitmap: (0..bb).map(|i| (p * 37 + i) as u8 ^ seed).collect(),
                data: (0..bs).map(|i| (p * 131 + i * 7) as u8 ^ seed).collect(),
            })
            .collect();
        let mut d: Vec<&mut [u8]> = parts.iter_mut().map(|p| p.data.as_mut_slice()).collect();
        codec.encode(&mut d).unwrap();
        let mut b: Vec<&mut [u8]> = parts.iter_mut().map(|p| p.bitmap.as_mut_slice()).collect();
        codec.encode(&mut b).unwrap();
        parts
    }

    fn answer(plan: &ReadPlan, stored: &[PartData]) -> Vec<PartData> {
        plan.reads
            .iter()
            .map(|r| PartData {
                bitmap: stored[r.part as usize].bitmap.clone(),
                data: stored[r.part as usize].data[r.range.start as usize..r.range.end as usize]
                    .to_vec(),
            })
            .collect()
    }

    fn expected(geo: &Geometry, stored: &[PartData], off: u64, len: u64) -> (Vec<u8>, Vec<u8>) {
        let bitmaps: Vec<&[u8]> = stored.iter().map(|p| p.bitmap.as_slice()).collect();
        let flat: Vec<u8> = stored[..geo.data_parts as usize]
            .iter()
            .flat_map(|p| p.data.iter().copied())
            .collect();
        (
            geo.object_bitmap(&bitmaps),
            flat[off as usize..(off + len) as usize].to_vec(),
        )
    }

    #[test]
    fn a_healthy_stripe_is_read_from_its_data_parts_only() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let p = plan_range(&geo, 12288, 8192, &[true; 3], Some(2)).unwrap();
        assert_eq!(
            p.reads,
            [
                PartRead {
                    part: 0,
                    range: 12288..16384
                },
                PartRead {
                    part: 1,
                    range: 0..4096
                }
            ]
        );
        let p = plan_range(&geo, 0, 4096, &[true; 3], None).unwrap();
        assert_eq!(p.reads[1].range, 0..0, "part 1 only for its bitmap");
    }

    #[test]
    fn a_lost_data_part_is_rebuilt_from_k_survivors_with_its_bitmap() {
        let geo = Geometry::new(2, 1, 16384, 4096).unwrap();
        let codec = Codec::xor(2).unwrap();
        let stored = stripe(&geo, &codec, 5);
        let p = plan_range(&geo, 16384, 4096, &[true, false, true], None).unwrap();
        assert_eq!(p.rebuilt, [1]);
        assert_eq!(
            p.reads,
            [
                PartRead {
                    part: 0,
                    range: 0..4096
                },
                PartRead {
                    part: 2,
                    range: 0..4096
                }
            ]
        );
        let got = p
            .assemble(&codec, &answer(&p, &stored), 16384, 4096)
            .unwrap();
        assert_eq!(got, expected(&geo, &stored, 16384, 4096));
    }

    #[test]
    fn more_lost_parts_than_parity_is_an_error() {
        let geo = Geometry::new(4, 2, 16384, 4096).unwrap();
        let e = plan_range(
            &geo,
            0,
            4096,
            &[false, true, true, false, false, true],
            None,
        );
        assert_eq!(e, Err(EcError::TooFewParts { have: 3, need: 4 }));
    }

    #[test]
    fn the_local_parity_part_is_preferred() {
        let geo = Geometry::new(2, 2, 16384, 4096).unwrap();
        let p = plan_range(&geo, 0, 4096, &[false, true, true, true], Some(3)).unwrap();
        assert_eq!(p.reads.iter().map(|r| r.part).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn recovery_reads_k_other_parts() {
        let geo = Geometry::new(2, 2, 16384, 4096).unwrap();
        let p = plan_recovery(&geo, 3, &[true; 4], Some(2)).unwrap();
        assert_eq!(p.reads.iter().map(|r| r.part).collect::<Vec<_>>(), [0, 1]);
        let p = plan_recovery(&geo, 0, &[true, true, false, true], None).unwrap();
        assert_eq!(p.reads.iter().map(|r| r.part).collect::<Vec<_>>(), [1, 3]);
        assert!(p.reads.iter().all(|r| r.range == (0..16384)));
        assert!(plan_recovery(&geo, 0, &[true, false, false, true], None).is_err());
    }

    proptest! {
        /// Any lost part rebuilt from k others equals what was stored, data and bitmap.
        #[test]
        fn recovered_parts_equal_the_stored_ones(
            rs in any::<bool>(),
            part in 0u32..6,
            other_lost in proptest::option::of(0u32..6),
            seed in any::<u8>(),
        ) {
            let (geo, codec) = if rs {
                (Geometry::new(4, 2, 16384, 4096).unwrap(), Codec::reed_solomon(4, 2).unwrap())
            } else {
                (Geometry::new(4, 1, 16384, 4096).unwrap(), Codec::xor(4).unwrap())
            };
            let n = geo.total_parts();
            let part = part % n;
            let mut reachable = vec![true; n as usize];
            reachable[part as usize] = false;
            if let Some(o) = other_lost.filter(|_| geo.parity_parts > 1) {
                reachable[(o % n) as usize] = false;
            }
            let stored = stripe(&geo, &codec, seed);
            let p = plan_recovery(&geo, part, &reachable, None).unwrap();
            prop_assert!(p.reads.iter().all(|r| reachable[r.part as usize]));
            prop_assert_eq!(p.reads.len(), geo.data_parts as usize);
            let got = p.recover(&codec, &answer(&p, &stored), part).unwrap();
            prop_assert_eq!(&got, &stored[part as usize]);
        }

        /// Any range, any m lost parts: the answer equals the stripe as written.
        #[test]
        fn degraded_reads_return_what_was_written(
            rs in any::<bool>(),
            off in 0u64..(4 * 16384),
            len in 0u64..(4 * 16384),
            lost in proptest::collection::vec(0u32..6, 0..3),
            seed in any::<u8>(),
        ) {
            let (geo, codec) = if rs {
                (Geometry::new(4, 2, 16384, 4096).unwrap(), Codec::reed_solomon(4, 2).unwrap())
            } else {
                (Geometry::new(4, 1, 16384, 4096).unwrap(), Codec::xor(4).unwrap())
            };
            let n = geo.total_parts();
            let mut reachable = vec![true; n as usize];
            for l in lost.iter().take(geo.parity_parts as usize) {
                reachable[(*l % n) as usize] = false;
            }
            let off = off % geo.object_size();
            let len = len.min(geo.object_size() - off);
            let stored = stripe(&geo, &codec, seed);
            let p = plan_range(&geo, off, len, &reachable, None).unwrap();
            prop_assert!(p.reads.iter().all(|r| reachable[r.part as usize]));
            let got = p.assemble(&codec, &answer(&p, &stored), off, len).unwrap();
            prop_assert_eq!(got, expected(&geo, &stored, off, len));
        }
    }
}
