//! Parity of one stripe: XOR for `xor` pools, systematic Reed-Solomon over GF(2^8) (the
//! `reed-solomon-erasure` crate's Vandermonde-derived matrix) for `ec`/`jerasure` pools.
//!
//! Shards are given in part order: the `k` data parts, then the `m` parity parts, all of one
//! length. The same code runs over chunk data and over chunk bitmaps (see `bitmap.rs`).
//!
//! Reed-Solomon parity is computed here, not by the crate, with the crate's coefficients:
//! a product by a constant in GF(2^8) is a sum of doublings, and a doubling of 8 bytes
//! packed in a `u64` is a few shifts and masks, which the compiler vectorizes for any
//! x86-64. That is 2–3× the crate's byte-by-byte table lookups for the small coefficients
//! of few parity parts (2+1: 3 and 2), and still faster for 4+2. The crate's faster SIMD
//! (`simd-accel`) is out: its C code is built for Haswell (`-march=haswell`) with the
//! instruction set chosen at compile time, so a Debian package built with it would not
//! run on every amd64 machine. Decoding stays the crate's (recovery and degraded reads).
//!
//! What it must never do: hand back a shard it could not compute (too few survivors is an
//! error, never zeroes).

use reed_solomon_erasure::galois_8::ReedSolomon;
use vitastor_layout::{PoolConfig, Scheme};

use super::EcError;

/// The parity code of a pool.
#[derive(Debug)]
pub enum Codec {
    /// `k` data parts and one parity part, their XOR.
    Xor {
        /// Data parts.
        k: usize,
    },
    /// `k` data parts and `m` Reed-Solomon parity parts.
    ReedSolomon {
        /// The crate's code (boxed: it carries its matrices), for decoding.
        rs: Box<ReedSolomon>,
        /// Its parity rows: parity part `i` is the sum of `coef[i * k + j]` × data part `j`.
        coef: Vec<u8>,
    },
}

impl Codec {
    /// The code of an `xor` or `ec`/`jerasure` pool (`None` for a replicated one).
    pub fn for_pool(pool: &PoolConfig) -> Option<Result<Codec, EcError>> {
        let k = pool.data_chunks() as usize;
        match pool.scheme {
            Scheme::Replicated => None,
            Scheme::Xor => Some(Codec::xor(k)),
            Scheme::Ec => Some(Codec::reed_solomon(k, pool.parity_chunks as usize)),
        }
    }

    /// XOR over `k` data parts.
    pub fn xor(k: usize) -> Result<Codec, EcError> {
        if k == 0 {
            return Err(EcError::Shape(format!("xor needs data parts, got {k}")));
        }
        Ok(Codec::Xor { k })
    }

    /// Reed-Solomon with `k` data and `m` parity parts (`k + m` at most 256 in GF(2^8)).
    pub fn reed_solomon(k: usize, m: usize) -> Result<Codec, EcError> {
        let rs = ReedSolomon::new(k, m)
            .map_err(|e| EcError::Shape(format!("reed-solomon {k}+{m}: {e:?}")))?;
        // The code is linear: data part j = 1 and the others 0 gives column j of the rows.
        let mut coef = vec![0u8; m * k];
        for j in 0..k {
            let mut unit: Vec<[u8; 1]> = (0..k + m).map(|i| [u8::from(i == j)]).collect();
            rs.encode(&mut unit)
                .map_err(|e| EcError::Shape(format!("reed-solomon {k}+{m}: {e:?}")))?;
            for i in 0..m {
                coef[i * k + j] = unit[k + i][0];
            }
        }
        Ok(Codec::ReedSolomon {
            rs: Box::new(rs),
            coef,
        })
    }

    /// Data parts.
    pub fn data_parts(&self) -> usize {
        match self {
            Codec::Xor { k } => *k,
            Codec::ReedSolomon { rs, .. } => rs.data_shard_count(),
        }
    }

    /// Parity parts.
    pub fn parity_parts(&self) -> usize {
        match self {
            Codec::Xor { .. } => 1,
            Codec::ReedSolomon { rs, .. } => rs.parity_shard_count(),
        }
    }

    /// Every part.
    pub fn total_parts(&self) -> usize {
        self.data_parts() + self.parity_parts()
    }

    /// Computes the parity shards from the data shards.
    pub fn encode(&self, shards: &mut [&mut [u8]]) -> Result<(), EcError> {
        let (data, parity) = shards.split_at_mut(self.data_parts().min(shards.len()));
        let data: Vec<&[u8]> = data.iter().map(|d| &**d).collect();
        self.encode_sep(&data, parity)
    }

    /// Computes the parity shards from data shards that may live anywhere (a write's
    /// column buffers or the client's data as it arrived).
    pub fn encode_sep(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), EcError> {
        self.check_shape(
            data.len() + parity.len(),
            data.iter()
                .map(|s| s.len())
                .chain(parity.iter().map(|s| s.len())),
        )?;
        if data.len() != self.data_parts() {
            return Err(EcError::Shape(format!(
                "{} data shards for {}",
                data.len(),
                self.data_parts()
            )));
        }
        match self {
            Codec::Xor { .. } => {
                let parity = &mut parity[0];
                parity.copy_from_slice(data[0]);
                for d in &data[1..] {
                    xor_into(parity, d);
                }
            }
            Codec::ReedSolomon { coef, .. } => rs_encode(coef, data, parity),
        }
        Ok(())
    }

    /// Fills every `None` shard from the present ones; needs at least `k` present.
    pub fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), EcError> {
        let present = shards.iter().filter(|s| s.is_some()).count();
        if present < self.data_parts() {
            return Err(EcError::TooFewParts {
                have: present,
                need: self.data_parts(),
            });
        }
        self.check_shape(shards.len(), shards.iter().flatten().map(Vec::len))?;
        if present == shards.len() {
            return Ok(());
        }
        match self {
            Codec::Xor { .. } => {
                // Exactly one is missing (k of k+1 present): it is the XOR of the others.
                let len = shards.iter().flatten().map(Vec::len).next().unwrap_or(0);
                let mut rebuilt = vec![0u8; len];
                for s in shards.iter().flatten() {
                    xor_into(&mut rebuilt, s);
                }
                if let Some(slot) = shards.iter_mut().find(|s| s.is_none()) {
                    *slot = Some(rebuilt);
                }
                Ok(())
            }
            Codec::ReedSolomon { rs, .. } => rs
                .reconstruct(shards)
                .map_err(|e| EcError::Shape(format!("reconstruct: {e:?}"))),
        }
    }

    fn check_shape(
        &self,
        count: usize,
        mut lens: impl Iterator<Item = usize>,
    ) -> Result<(), EcError> {
        if count != self.total_parts() {
            return Err(EcError::Shape(format!(
                "{count} shards for a {}+{} code",
                self.data_parts(),
                self.parity_parts()
            )));
        }
        if let Some(first) = lens.next() {
            if lens.any(|l| l != first) {
                return Err(EcError::Shape("shards of different lengths".into()));
            }
        }
        Ok(())
    }
}

/// Bytes per block of [`rs_encode`]: a block's doublings stay in the L1 cache.
const RS_BLOCK: usize = 4096;

/// Each byte of `x` times 2 in GF(2^8) with the crate's polynomial (x^8 + x^4 + x^3 + x^2 + 1).
fn gf_double(x: u64) -> u64 {
    ((x & 0x7f7f_7f7f_7f7f_7f7f) << 1) ^ (((x >> 7) & 0x0101_0101_0101_0101) * 0x1d)
}

/// `parity[i] = Σ_j coef[i * k + j] · data[j]` over GF(2^8), block by block: each data
/// block is doubled up to the highest coefficient bit of its column once, and every parity
/// row whose coefficient has that bit takes the current multiple (the block itself for the
/// lowest bit, read where it is: the data is touched once per doubling, never copied).
fn rs_encode(coef: &[u8], data: &[&[u8]], parity: &mut [&mut [u8]]) {
    let k = data.len();
    let len = data.first().map_or(0, |d| d.len());
    let mut words = [0u64; RS_BLOCK / 8];
    let mut at = 0;
    while at < len {
        let end = (at + RS_BLOCK).min(len);
        let n = (end - at).div_ceil(8);
        for (j, d) in data.iter().enumerate() {
            let src = &d[at..end];
            let col = |i: usize| coef[i * k + j];
            let top = (0..parity.len()).map(col).max().unwrap_or(0);
            for (i, p) in parity.iter_mut().enumerate() {
                let out = &mut p[at..end];
                match (col(i), j) {
                    (c, 0) if c & 1 == 1 => out.copy_from_slice(src),
                    (c, _) if c & 1 == 1 => xor_into(out, src),
                    // A row whose first term comes later (or never) starts from zero.
                    (_, 0) => out.fill(0),
                    _ => {}
                }
            }
            for bit in 1..8 {
                if top >> bit == 0 {
                    break;
                }
                if bit == 1 {
                    double_bytes(src, &mut words[..n]);
                } else {
                    for w in &mut words[..n] {
                        *w = gf_double(*w);
                    }
                }
                for (i, p) in parity.iter_mut().enumerate() {
                    if col(i) >> bit & 1 == 1 {
                        xor_words(&words[..n], &mut p[at..end]);
                    }
                }
            }
        }
        at = end;
    }
}

/// `words` = each byte of `bytes` times 2, as little-endian words (the last one padded with
/// zeroes).
fn double_bytes(bytes: &[u8], words: &mut [u64]) {
    let chunks = bytes.chunks_exact(8);
    let tail = chunks.remainder();
    for (w, c) in words.iter_mut().zip(chunks) {
        *w = gf_double(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    if !tail.is_empty() {
        let mut last = [0u8; 8];
        last[..tail.len()].copy_from_slice(tail);
        words[bytes.len() / 8] = gf_double(u64::from_le_bytes(last));
    }
}

/// `out ^= words`, as little-endian bytes.
fn xor_words(words: &[u64], out: &mut [u8]) {
    let whole = out.len() / 8;
    let (head, tail) = out.split_at_mut(whole * 8);
    for (c, w) in head.chunks_exact_mut(8).zip(words) {
        let v = u64::from_le_bytes((&*c).try_into().expect("8 bytes")) ^ w;
        c.copy_from_slice(&v.to_le_bytes());
    }
    if !tail.is_empty() {
        let last = words[whole].to_le_bytes();
        for (o, b) in tail.iter_mut().zip(last) {
            *o ^= b;
        }
    }
}

/// `dst ^= src`, byte by byte (the compiler vectorizes it).
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn codecs() -> Vec<Codec> {
        vec![
            Codec::xor(2).unwrap(),
            Codec::xor(4).unwrap(),
            Codec::reed_solomon(2, 1).unwrap(),
            Codec::reed_solomon(4, 2).unwrap(),
            Codec::reed_solomon(3, 3).unwrap(),
        ]
    }

    fn encoded(c: &Codec, data: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let len = data[0].len();
        let mut shards: Vec<Vec<u8>> = data.to_vec();
        shards.resize(c.total_parts(), vec![0; len]);
        let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(Vec::as_mut_slice).collect();
        c.encode(&mut refs).unwrap();
        shards
    }

    #[test]
    fn xor_parity_is_the_xor_of_the_data() {
        let c = Codec::xor(2).unwrap();
        let s = encoded(&c, &[vec![0b1100, 1], vec![0b1010, 1]]);
        assert_eq!(s[2], [0b0110, 0]);
    }

    #[test]
    fn reed_solomon_is_systematic() {
        let c = Codec::reed_solomon(4, 2).unwrap();
        let data: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i, i * 3, 200 - i]).collect();
        let s = encoded(&c, &data);
        assert_eq!(&s[..4], &data[..], "data parts are stored as they are");
    }

    #[test]
    fn too_few_survivors_is_an_error_never_zeroes() {
        let c = Codec::reed_solomon(2, 1).unwrap();
        let mut s = vec![Some(vec![1u8]), None, None];
        assert_eq!(
            c.reconstruct(&mut s),
            Err(EcError::TooFewParts { have: 1, need: 2 })
        );
        let c = Codec::xor(2).unwrap();
        let mut s = vec![None, Some(vec![1u8]), None];
        assert!(c.reconstruct(&mut s).is_err());
        assert_eq!(s[0], None);
    }

    #[test]
    fn pools_give_their_code() {
        let pool = |v: serde_json::Value| PoolConfig::from_json(1, &v).unwrap();
        let c = Codec::for_pool(&pool(serde_json::json!({"name":"x","scheme":"xor",
            "pg_size":3,"pg_minsize":2,"pg_count":1})));
        assert!(matches!(c, Some(Ok(Codec::Xor { k: 2 }))));
        let c = Codec::for_pool(&pool(serde_json::json!({"name":"e","scheme":"jerasure",
            "pg_size":6,"parity_chunks":2,"pg_minsize":4,"pg_count":1})))
        .unwrap()
        .unwrap();
        assert_eq!((c.data_parts(), c.parity_parts()), (4, 2));
        assert!(Codec::for_pool(&pool(serde_json::json!({"name":"r",
            "pg_size":2,"pg_minsize":1,"pg_count":1})))
        .is_none());
    }

    #[test]
    fn shapes_are_checked() {
        let c = Codec::reed_solomon(2, 1).unwrap();
        let mut a = [1u8, 2];
        let mut b = [1u8];
        let mut p = [0u8, 0];
        assert!(c.encode(&mut [&mut a, &mut b, &mut p]).is_err());
        assert!(c.encode(&mut [&mut a, &mut p]).is_err());
        assert!(Codec::reed_solomon(200, 100).is_err());
        assert!(Codec::xor(0).is_err());
    }

    proptest! {
        /// Parity computed here equals the crate's, for any length (blocks and a tail
        /// shorter than a word included) and shape.
        #[test]
        fn reed_solomon_parity_equals_the_crates(
            k in 1usize..7,
            m in 1usize..4,
            len in prop_oneof![1usize..20, 4090usize..4110, 8185usize..8200],
            seed in any::<u64>(),
        ) {
            let c = Codec::reed_solomon(k, m).unwrap();
            let data: Vec<Vec<u8>> = (0..k)
                .map(|j| (0..len).map(|b| (seed.rotate_left((b % 64) as u32) as usize ^ b ^ (j << 5)) as u8).collect())
                .collect();
            // Stale bytes in the parity buffers are overwritten.
            let mut ours: Vec<Vec<u8>> = data.clone();
            ours.resize(k + m, vec![0xa5; len]);
            let mut refs: Vec<&mut [u8]> = ours.iter_mut().map(Vec::as_mut_slice).collect();
            c.encode(&mut refs).unwrap();
            let mut theirs: Vec<Vec<u8>> = data;
            theirs.resize(k + m, vec![0; len]);
            ReedSolomon::new(k, m).unwrap().encode(&mut theirs).unwrap();
            prop_assert_eq!(ours, theirs);
        }

        /// Encode, lose any m parts, decode: every part is back as it was.
        #[test]
        fn lose_any_m_parts_and_decode(
            which in 0usize..5,
            data in proptest::collection::vec(any::<u8>(), 1..64),
            seed in any::<u64>(),
        ) {
            let c = &codecs()[which];
            let k = c.data_parts();
            let parts: Vec<Vec<u8>> = (0..k)
                .map(|i| data.iter().map(|b| b.wrapping_mul(i as u8 + 1) ^ (seed >> (i % 8)) as u8).collect())
                .collect();
            let full = encoded(c, &parts);
            // Which m parts are lost: a permutation drawn from the seed.
            let mut order: Vec<usize> = (0..c.total_parts()).collect();
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut shards: Vec<Option<Vec<u8>>> = full.iter().cloned().map(Some).collect();
            for &lost in &order[..c.parity_parts()] {
                shards[lost] = None;
            }
            c.reconstruct(&mut shards).unwrap();
            let back: Vec<Vec<u8>> = shards.into_iter().map(Option::unwrap).collect();
            prop_assert_eq!(back, full);
        }
    }
}
