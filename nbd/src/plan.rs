//! What each NBD request becomes in cluster operations: range checks, alignment policy and
//! the split of TRIM/WRITE_ZEROES into object deletes and zero writes.
//!
//! Alignment policy (the client library only accepts offsets and lengths that are multiples
//! of the pool's bitmap granularity, 4 KiB by default; the server advertises that granularity
//! as the minimum block size in `NBD_INFO_BLOCK_SIZE`, and the kernel is given it as its block
//! size, so well-behaved clients never send anything else):
//! - READ at any alignment is served: the aligned range around it is read and the requested
//!   bytes are cut out. Reads never change data, so this needs no ordering.
//! - WRITE and WRITE_ZEROES that are not aligned are refused with `EINVAL`. A
//!   read-modify-write would have to lock the partial granules against every concurrent
//!   write; no client that honours the advertised minimum needs it.
//! - TRIM is advisory: an unaligned TRIM discards only the aligned part inside it.
//!
//! # What this module owns
//! - The mapping from one request to a [`Plan`] and the errors for bad requests (`EINVAL`,
//!   `ENOSPC`, `EPERM`).
//!
//! # What it must never do
//! - Submit anything or size a buffer: it returns numbers, checked against the export size
//!   and [`MAX_PAYLOAD`], that the server then acts on.

use crate::proto::*;

/// The export's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Size in bytes.
    pub size: u64,
    /// The pool's bitmap granularity: the alignment of every cluster op.
    pub granularity: u64,
    /// The pool's object size: the unit of deletes.
    pub object: u64,
    /// The image refuses writes.
    pub readonly: bool,
}

/// A byte range `[offset, offset + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// How to zero an aligned range: delete the whole objects inside it, write zeroes over the
/// partial objects at either end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroPlan {
    /// Zero write at the start (inside one object).
    pub head: Option<Range>,
    /// Whole objects to delete.
    pub whole: Option<Range>,
    /// Zero write at the end (inside one object).
    pub tail: Option<Range>,
}

/// What one request becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Reply at once with this error (0 = success, no data).
    Reply(u32),
    /// Read `cover` (aligned), reply with `len` bytes starting `skip` bytes into it.
    Read {
        /// The aligned range read from the cluster.
        cover: Range,
        /// Bytes of `cover` before the requested data.
        skip: u64,
        /// Requested length.
        len: u64,
    },
    /// Write the payload at this (aligned) offset.
    Write(u64),
    /// Zero a range (TRIM and WRITE_ZEROES).
    Zero(ZeroPlan),
    /// Make every completed write durable.
    Flush,
    /// Finish the requests in flight, then close.
    Disconnect,
}

/// Maps a request to its plan.
pub fn plan(req: &Request, g: &Geometry) -> Plan {
    let len = u64::from(req.len);
    let end = req.offset.checked_add(len);
    let inside = end.is_some_and(|e| e <= g.size);
    let aligned = req.offset % g.granularity == 0 && len % g.granularity == 0;
    let modifies = matches!(req.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if modifies && g.readonly {
        return Plan::Reply(EPERM);
    }
    match req.kind {
        CMD_READ => {
            if req.len > MAX_PAYLOAD || !inside {
                return Plan::Reply(EINVAL);
            }
            if len == 0 {
                return Plan::Reply(0);
            }
            let start = round_down(req.offset, g.granularity);
            let stop = round_up(req.offset + len, g.granularity);
            Plan::Read {
                cover: Range {
                    offset: start,
                    len: stop - start,
                },
                skip: req.offset - start,
                len,
            }
        }
        CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM => {
            if !inside {
                return Plan::Reply(ENOSPC);
            }
            let (offset, len) = if req.kind == CMD_TRIM {
                let start = round_up(req.offset, g.granularity);
                let stop = round_down(req.offset + len, g.granularity);
                (start, stop.saturating_sub(start))
            } else if aligned {
                (req.offset, len)
            } else {
                return Plan::Reply(EINVAL);
            };
            if len == 0 {
                Plan::Reply(0)
            } else if req.kind == CMD_WRITE {
                Plan::Write(offset)
            } else {
                Plan::Zero(split_zero(offset, len, g.object))
            }
        }
        CMD_FLUSH => Plan::Flush,
        CMD_DISC => Plan::Disconnect,
        _ => Plan::Reply(EINVAL),
    }
}

/// Splits `[offset, offset + len)` at object boundaries (`object` bytes).
pub fn split_zero(offset: u64, len: u64, object: u64) -> ZeroPlan {
    let end = offset + len;
    let first_whole = round_up(offset, object);
    let last_whole = round_down(end, object);
    if first_whole >= last_whole {
        // No whole object inside: at most two partial pieces, split at the object boundary.
        let boundary = first_whole.min(end);
        let head = Range {
            offset,
            len: boundary - offset,
        };
        let tail = Range {
            offset: boundary,
            len: end - boundary,
        };
        return ZeroPlan {
            head: (head.len > 0).then_some(head),
            whole: None,
            tail: (tail.len > 0).then_some(tail),
        };
    }
    let head = Range {
        offset,
        len: first_whole - offset,
    };
    let tail = Range {
        offset: last_whole,
        len: end - last_whole,
    };
    ZeroPlan {
        head: (head.len > 0).then_some(head),
        whole: Some(Range {
            offset: first_whole,
            len: last_whole - first_whole,
        }),
        tail: (tail.len > 0).then_some(tail),
    }
}

fn round_down(x: u64, a: u64) -> u64 {
    x - x % a
}

fn round_up(x: u64, a: u64) -> u64 {
    round_down(x + a - 1, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;
    const OBJ: u64 = 128 * K;

    fn geom() -> Geometry {
        Geometry {
            size: 100 * OBJ,
            granularity: 4 * K,
            object: OBJ,
            readonly: false,
        }
    }

    fn req(kind: u16, offset: u64, len: u32) -> Request {
        Request {
            flags: 0,
            kind,
            cookie: 9,
            offset,
            len,
        }
    }

    fn r(offset: u64, len: u64) -> Option<Range> {
        Some(Range { offset, len })
    }

    #[test]
    fn reads() {
        let g = geom();
        assert_eq!(
            plan(&req(CMD_READ, 4 * K, 8192), &g),
            Plan::Read {
                cover: Range {
                    offset: 4 * K,
                    len: 8192
                },
                skip: 0,
                len: 8192
            }
        );
        // 512-byte aligned read: served from the 4 KiB cover.
        assert_eq!(
            plan(&req(CMD_READ, 4 * K + 512, 1024), &g),
            Plan::Read {
                cover: Range {
                    offset: 4 * K,
                    len: 4 * K
                },
                skip: 512,
                len: 1024
            }
        );
        assert_eq!(plan(&req(CMD_READ, g.size, 4096), &g), Plan::Reply(EINVAL));
        assert_eq!(
            plan(&req(CMD_READ, u64::MAX - 10, 4096), &g),
            Plan::Reply(EINVAL)
        );
        assert_eq!(plan(&req(CMD_READ, 0, u32::MAX), &g), Plan::Reply(EINVAL));
        assert_eq!(plan(&req(CMD_READ, 0, 0), &g), Plan::Reply(0));
    }

    #[test]
    fn writes_and_policy() {
        let g = geom();
        assert_eq!(plan(&req(CMD_WRITE, 8 * K, 4096), &g), Plan::Write(8 * K));
        assert_eq!(plan(&req(CMD_WRITE, 512, 4096), &g), Plan::Reply(EINVAL));
        assert_eq!(
            plan(&req(CMD_WRITE, g.size - 4096, 8192), &g),
            Plan::Reply(ENOSPC)
        );
        assert_eq!(
            plan(&req(CMD_WRITE_ZEROES, 0, 1000), &g),
            Plan::Reply(EINVAL)
        );
        let ro = Geometry {
            readonly: true,
            ..g
        };
        for kind in [CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
            assert_eq!(plan(&req(kind, 0, 4096), &ro), Plan::Reply(EPERM));
        }
        assert!(matches!(
            plan(&req(CMD_READ, 0, 4096), &ro),
            Plan::Read { .. }
        ));
        assert_eq!(plan(&req(CMD_FLUSH, 0, 0), &g), Plan::Flush);
        assert_eq!(plan(&req(CMD_DISC, 0, 0), &g), Plan::Disconnect);
        assert_eq!(plan(&req(99, 0, 0), &g), Plan::Reply(EINVAL));
    }

    #[test]
    fn trims_shrink_to_aligned_interior() {
        let g = geom();
        assert_eq!(
            plan(&req(CMD_TRIM, 512, 4096), &g),
            Plan::Reply(0),
            "no aligned granule inside"
        );
        assert_eq!(
            plan(&req(CMD_TRIM, 512, 3 * 4096), &g),
            Plan::Zero(ZeroPlan {
                head: r(4 * K, 8 * K),
                whole: None,
                tail: None
            })
        );
    }

    #[test]
    fn zero_splits() {
        assert_eq!(
            split_zero(0, 3 * OBJ, OBJ),
            ZeroPlan {
                head: None,
                whole: r(0, 3 * OBJ),
                tail: None
            }
        );
        assert_eq!(
            split_zero(4 * K, 3 * OBJ, OBJ),
            ZeroPlan {
                head: r(4 * K, OBJ - 4 * K),
                whole: r(OBJ, 2 * OBJ),
                tail: r(3 * OBJ, 4 * K)
            }
        );
        // Inside one object.
        assert_eq!(
            split_zero(8 * K, 8 * K, OBJ),
            ZeroPlan {
                head: r(8 * K, 8 * K),
                whole: None,
                tail: None
            }
        );
        // Straddling one boundary, no whole object.
        assert_eq!(
            split_zero(OBJ - 4 * K, 8 * K, OBJ),
            ZeroPlan {
                head: r(OBJ - 4 * K, 4 * K),
                whole: None,
                tail: r(OBJ, 4 * K)
            }
        );
        // Ends on a boundary.
        assert_eq!(
            split_zero(OBJ - 4 * K, OBJ + 4 * K, OBJ),
            ZeroPlan {
                head: r(OBJ - 4 * K, 4 * K),
                whole: r(OBJ, OBJ),
                tail: None
            }
        );
        // Every split covers the range exactly, in order.
        for (off, len) in [(0, 4 * K), (4 * K, 10 * OBJ), (OBJ, OBJ), (12 * K, OBJ)] {
            let p = split_zero(off, len, OBJ);
            let mut at = off;
            for piece in [p.head, p.whole, p.tail].into_iter().flatten() {
                assert_eq!(piece.offset, at);
                at += piece.len;
            }
            assert_eq!(at, off + len);
        }
    }
}
