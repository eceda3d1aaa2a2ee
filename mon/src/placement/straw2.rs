//! Consistent-hashing baseline: straw2-like weighted rendezvous hashing.
//!
//! For comparison only (tests and the benchmark): this is how Ceph's CRUSH
//! places data, reduced to one choose-leaf step. For each PG and replica rank,
//! every failure domain not used yet by the PG draws `ln(u) / weight` with `u` a
//! hash of (pool, PG, rank, domain) in (0, 1]; the highest draw wins, and inside
//! the domain the OSD is picked the same way. Weights are size × reweight summed
//! per domain. No state, no movement planning: the output depends only on the
//! hash, which is exactly what makes its balance statistical.

use super::layout::PoolLayout;
use super::{OsdNum, PgNum, PgPlacement, PoolPgConfig};

/// Places every PG of the layout's pool by weighted rendezvous hashing.
pub fn straw2_placement(layout: &PoolLayout) -> PoolPgConfig {
    let pool = u64::from(layout.rules.id.0);
    let domain_hash: Vec<u64> = layout
        .domain_names
        .iter()
        .map(|n| fnv1a(n.as_bytes()))
        .collect();
    let domain_weight: Vec<f64> = layout
        .domains
        .iter()
        .map(|m| m.iter().map(|&x| layout.weight[x as usize]).sum())
        .collect();
    let mut cfg = PoolPgConfig::default();
    for pg in 1..=layout.rules.pg_count {
        let mut set = vec![OsdNum::NONE; layout.rules.pg_size];
        let mut used: Vec<usize> = Vec::with_capacity(layout.k);
        for (rank, slot) in set.iter_mut().enumerate().take(layout.k) {
            let draw = |h: u64, w: f64| unit(mix(&[pool, u64::from(pg), rank as u64, h])).ln() / w;
            let d = (0..layout.domains.len())
                .filter(|d| !used.contains(d))
                .max_by(|&a, &b| {
                    draw(domain_hash[a], domain_weight[a])
                        .total_cmp(&draw(domain_hash[b], domain_weight[b]))
                })
                .expect("k never exceeds the number of failure domains");
            used.push(d);
            let x = *layout.domains[d]
                .iter()
                .max_by(|&&a, &&b| {
                    draw(layout.osds[a as usize].0, layout.weight[a as usize])
                        .total_cmp(&draw(layout.osds[b as usize].0, layout.weight[b as usize]))
                })
                .expect("failure domains are never empty");
            *slot = layout.osds[x as usize];
        }
        let primary = set
            .iter()
            .copied()
            .find(|o| layout.index.get(o).is_some_and(|&x| layout.up[x as usize]))
            .unwrap_or(OsdNum::NONE);
        cfg.pgs.insert(
            PgNum(pg),
            PgPlacement {
                osd_set: set,
                primary,
                pause: false,
            },
        );
    }
    cfg
}

/// Maps a hash to (0, 1]: never 0, so the logarithm stays finite.
fn unit(h: u64) -> f64 {
    ((h >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// splitmix64 finaliser folded over the inputs: cheap and well mixed.
fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &p in parts {
        let mut z = h ^ p.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}
