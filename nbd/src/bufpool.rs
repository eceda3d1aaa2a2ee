//! Recycled data buffers of one connection: write payloads and read replies.
//!
//! # What this module owns
//! - A bounded free list of `Vec<u8>` that requests borrow and give back once their data
//!   has gone to the cluster (writes) or to the socket (reads). A fresh `vec![0; len]` per
//!   request costs an allocation, zeroing every byte and, for large ones, page faults on
//!   memory that was just returned to the kernel; a buffer taken back is only zeroed where it
//!   must grow.
//!
//! # What it must never do
//! - Hold more than [`MAX_POOLED_BYTES`] or [`MAX_POOLED`] buffers, or keep one larger than
//!   [`MAX_POOLED_BUF`]: the pool caches what a connection's queue depth keeps reusing, it
//!   never grows with the input. An idle connection keeps at most [`IDLE_POOLED_BYTES`]
//!   (the server calls [`BufPool::trim`]), so many quiet clients hold little memory.
//! - Hand out a buffer whose length is not the one asked for.

/// Buffers kept at most.
pub const MAX_POOLED: usize = 128;
/// Bytes kept at most (sum of the buffers' lengths).
pub const MAX_POOLED_BYTES: usize = 128 << 20;
/// Larger buffers are freed, not kept.
pub const MAX_POOLED_BUF: usize = 8 << 20;
/// Bytes an idle connection keeps.
pub const IDLE_POOLED_BYTES: usize = 8 << 20;

/// A connection's free buffers.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

impl BufPool {
    /// An empty pool.
    pub fn new() -> BufPool {
        BufPool::default()
    }

    /// A buffer of exactly `len` bytes (contents unspecified where it was used before).
    /// Takes the smallest kept buffer that is long enough, else the longest one and grows
    /// it, else allocates.
    pub fn take(&mut self, len: usize) -> Vec<u8> {
        let mut best: Option<usize> = None;
        for (i, b) in self.free.iter().enumerate() {
            let better = match best {
                None => true,
                Some(j) => {
                    let cur = self.free[j].len();
                    if cur >= len {
                        b.len() >= len && b.len() < cur
                    } else {
                        b.len() > cur
                    }
                }
            };
            if better {
                best = Some(i);
            }
        }
        let Some(i) = best else {
            return vec![0; len];
        };
        let mut buf = self.free.swap_remove(i);
        self.bytes -= buf.len();
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        buf
    }

    /// Keeps `buf` for a later [`BufPool::take`] if the limits allow.
    pub fn give(&mut self, buf: Vec<u8>) {
        let len = buf.len();
        if len == 0
            || len > MAX_POOLED_BUF
            || self.free.len() >= MAX_POOLED
            || self.bytes + len > MAX_POOLED_BYTES
        {
            return;
        }
        self.bytes += len;
        self.free.push(buf);
    }

    /// Frees buffers until at most `max_bytes` are kept.
    pub fn trim(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes {
            let Some(b) = self.free.pop() else { break };
            self.bytes -= b.len();
        }
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Buffers kept.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_best_fit_and_keeps_exact_lengths() {
        let mut p = BufPool::new();
        let small = p.take(4096);
        let big = p.take(4 << 20);
        let (sp, bp) = (small.as_ptr(), big.as_ptr());
        p.give(small);
        p.give(big);
        let a = p.take(4096);
        assert_eq!((a.len(), a.as_ptr()), (4096, sp));
        let b = p.take(1 << 20);
        assert_eq!((b.len(), b.as_ptr()), (1 << 20, bp));
        assert!(p.is_empty());
        // Nothing long enough: the longest one grows, its new tail zeroed.
        let mut c = a;
        c.fill(7);
        p.give(c);
        let d = p.take(8192);
        assert_eq!(d.len(), 8192);
        assert!(d[..4096].iter().all(|&x| x == 7) && d[4096..].iter().all(|&x| x == 0));
    }

    #[test]
    fn bounded() {
        let mut p = BufPool::new();
        p.give(vec![0; MAX_POOLED_BUF + 1]);
        p.give(Vec::new());
        assert!(p.is_empty());
        for _ in 0..MAX_POOLED + 10 {
            p.give(vec![0; 16]);
        }
        assert_eq!(p.len(), MAX_POOLED);
        let mut p = BufPool::new();
        for _ in 0..(MAX_POOLED_BYTES / MAX_POOLED_BUF) + 3 {
            p.give(vec![0; MAX_POOLED_BUF]);
        }
        assert_eq!(p.len(), MAX_POOLED_BYTES / MAX_POOLED_BUF);
        p.trim(IDLE_POOLED_BYTES);
        assert!(p.bytes() <= IDLE_POOLED_BYTES);
        assert_eq!(p.len(), IDLE_POOLED_BYTES / MAX_POOLED_BUF);
    }
}
