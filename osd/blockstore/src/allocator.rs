//! Data block allocator: one bit per data block, next-fit search. Block 0 holds the superblock
//! copy and is never handed out. It knows nothing about durability: the blockstore frees a
//! block only once no durable record and no in-flight read refers to it.

/// Free/used map of data blocks.
pub struct Allocator {
    words: Vec<u64>,
    total: u64,
    free: u64,
    cursor: u64,
}

impl Allocator {
    /// All blocks free except block 0.
    pub fn new(total: u64) -> Self {
        let mut a = Allocator {
            words: vec![0; total.div_ceil(64) as usize],
            total,
            free: total,
            cursor: 1,
        };
        a.set_used(0);
        a
    }

    /// Mark `b` used (at load time and on allocation).
    pub fn set_used(&mut self, b: u64) {
        let (w, m) = ((b / 64) as usize, 1u64 << (b % 64));
        if self.words[w] & m == 0 {
            self.words[w] |= m;
            self.free -= 1;
        }
    }

    /// Whether `b` is in use.
    pub fn is_used(&self, b: u64) -> bool {
        self.words[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    /// Return `b` to the free pool.
    pub fn free(&mut self, b: u64) {
        debug_assert!(b != 0, "block 0 is reserved");
        let (w, m) = ((b / 64) as usize, 1u64 << (b % 64));
        debug_assert!(self.words[w] & m != 0, "double free of data block {b}");
        if self.words[w] & m != 0 {
            self.words[w] &= !m;
            self.free += 1;
        }
    }

    /// Take a free block, if any.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.free == 0 {
            return None;
        }
        let nwords = self.words.len();
        let start = (self.cursor / 64) as usize;
        for i in 0..=nwords {
            let w = (start + i) % nwords;
            let word = self.words[w];
            if word != u64::MAX {
                let bit = (!word).trailing_zeros() as u64;
                let b = w as u64 * 64 + bit;
                if b < self.total {
                    self.set_used(b);
                    self.cursor = b + 1;
                    return Some(b);
                }
            }
        }
        None
    }

    /// Free blocks.
    pub fn free_count(&self) -> u64 {
        self.free
    }

    /// All blocks (including the reserved one).
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_cycle() {
        let mut a = Allocator::new(130);
        let mut got = Vec::new();
        while let Some(b) = a.alloc() {
            got.push(b);
        }
        assert_eq!(got.len(), 129);
        assert!(!got.contains(&0));
        assert_eq!(a.free_count(), 0);
        a.free(77);
        assert_eq!(a.alloc(), Some(77));
        assert_eq!(a.alloc(), None);
    }
}
