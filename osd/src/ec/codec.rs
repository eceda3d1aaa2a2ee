//! Parity of one stripe: XOR for `xor` pools, systematic Reed-Solomon over GF(2^8) (the
//! `reed-solomon-erasure` crate's Vandermonde-derived matrix) for `ec`/`jerasure` pools.
//!
//! Shards are given in part order: the `k` data parts, then the `m` parity parts, all of one
//! length. The same code runs over chunk data and over chunk bitmaps (see `bitmap.rs`).
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
    /// `k` data parts and `m` Reed-Solomon parity parts (boxed: it carries its matrices).
    ReedSolomon(Box<ReedSolomon>),
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
        ReedSolomon::new(k, m)
            .map(|rs| Codec::ReedSolomon(Box::new(rs)))
            .map_err(|e| EcError::Shape(format!("reed-solomon {k}+{m}: {e:?}")))
    }

    /// Data parts.
    pub fn data_parts(&self) -> usize {
        match self {
            Codec::Xor { k } => *k,
            Codec::ReedSolomon(rs) => rs.data_shard_count(),
        }
    }

    /// Parity parts.
    pub fn parity_parts(&self) -> usize {
        match self {
            Codec::Xor { .. } => 1,
            Codec::ReedSolomon(rs) => rs.parity_shard_count(),
        }
    }

    /// Every part.
    pub fn total_parts(&self) -> usize {
        self.data_parts() + self.parity_parts()
    }

    /// Computes the parity shards from the data shards.
    pub fn encode(&self, shards: &mut [&mut [u8]]) -> Result<(), EcError> {
        self.check_shape(shards.len(), shards.iter().map(|s| s.len()))?;
        match self {
            Codec::Xor { k } => {
                let (data, parity) = shards.split_at_mut(*k);
                let parity = &mut parity[0];
                parity.copy_from_slice(data[0]);
                for d in &data[1..] {
                    xor_into(parity, d);
                }
                Ok(())
            }
            Codec::ReedSolomon(rs) => rs
                .encode(shards)
                .map_err(|e| EcError::Shape(format!("encode: {e:?}"))),
        }
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
            Codec::ReedSolomon(rs) => rs
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
