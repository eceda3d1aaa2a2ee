//! In-memory devices with a power switch, for model and power-loss tests. Completed writes are
//! visible to reads at once but reach the "platter" only through fsync; cutting power keeps,
//! drops or tears (per 512-byte sector) every write that was not flushed. Completions are
//! delivered in a random order from a seeded RNG so that every ordering assumption of the
//! blockstore is exercised. With `plp` the device has power-loss protection: a completed
//! write is on the platter at once, and only writes still in flight are lost or torn (what
//! `disable_data_fsync` assumes). Never used by a running OSD.

use std::io;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::io::{DevId, IoEngine, IoKind, IoReq};

/// Sector size of the simulated media: the unit in which a write can tear.
pub const SIM_SECTOR: usize = 512;

/// The persistent part of a simulated device: what survives a power loss.
#[derive(Clone, Debug)]
pub struct SimDisk {
    /// Flushed contents.
    pub durable: Vec<u8>,
}

impl SimDisk {
    /// A zero-filled device.
    pub fn new(size: usize) -> Self {
        SimDisk {
            durable: vec![0; size],
        }
    }
}

struct Pending {
    dev: usize,
    offset: usize,
    data: Vec<u8>,
    seq: u64,
}

struct InFlight {
    req: IoReq,
    /// For fsync: the completed-write sequence it covers.
    covers: u64,
}

/// [`IoEngine`] over [`SimDisk`]s.
pub struct SimEngine {
    current: Vec<Vec<u8>>,
    durable: Vec<Vec<u8>>,
    unflushed: Vec<Pending>,
    queued: Vec<IoReq>,
    in_flight: Vec<InFlight>,
    completed_seq: u64,
    rng: SmallRng,
    /// Probability that `reap` delivers each ready completion (others wait for a later reap).
    pub deliver_prob: f64,
    /// Power-loss protection: completed writes are durable without an fsync.
    pub plp: bool,
}

impl SimEngine {
    /// An engine over these disks; `DevId(i)` is `disks[i]`.
    pub fn new(disks: Vec<SimDisk>, seed: u64) -> Self {
        let durable: Vec<Vec<u8>> = disks.into_iter().map(|d| d.durable).collect();
        SimEngine {
            current: durable.clone(),
            durable,
            unflushed: Vec::new(),
            queued: Vec::new(),
            in_flight: Vec::new(),
            completed_seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            deliver_prob: 0.7,
            plp: false,
        }
    }

    /// Writes completed so far.
    pub fn writes_completed(&self) -> u64 {
        self.completed_seq
    }

    /// A clean shutdown: everything completed is on the media.
    pub fn power_loss_none(&self) -> Vec<SimDisk> {
        self.current
            .iter()
            .map(|c| SimDisk { durable: c.clone() })
            .collect()
    }

    /// What the media would hold if the power went now: in-flight and unflushed writes are each
    /// kept, dropped or torn at random. Call it while the blockstore that owns the in-flight
    /// buffers is still alive, then drop that blockstore.
    pub fn power_loss(&self, seed: u64) -> Vec<SimDisk> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut writes: Vec<(usize, usize, Vec<u8>)> = self
            .unflushed
            .iter()
            .map(|p| (p.dev, p.offset, p.data.clone()))
            .collect();
        for req in self
            .in_flight
            .iter()
            .map(|f| &f.req)
            .chain(self.queued.iter())
        {
            if req.kind == IoKind::Write {
                // SAFETY: the blockstore keeps write buffers alive until completion, and the
                // caller holds that blockstore alive during this call.
                let data = unsafe { std::slice::from_raw_parts(req.ptr, req.len) }.to_vec();
                writes.push((req.dev.0 as usize, req.offset as usize, data));
            }
        }
        let mut durable = self.durable.clone();
        for (dev, offset, data) in writes {
            match rng.gen_range(0..3) {
                0 => {}
                1 => durable[dev][offset..offset + data.len()].copy_from_slice(&data),
                _ => {
                    for s in (0..data.len()).step_by(SIM_SECTOR) {
                        if rng.gen_bool(0.5) {
                            let end = (s + SIM_SECTOR).min(data.len());
                            durable[dev][offset + s..offset + end].copy_from_slice(&data[s..end]);
                        }
                    }
                }
            }
        }
        durable
            .into_iter()
            .map(|durable| SimDisk { durable })
            .collect()
    }

    /// A write reached the device: on the platter with power-loss protection, else in the
    /// volatile cache until an fsync.
    fn completed(&mut self, dev: usize, offset: usize, data: &[u8]) {
        self.completed_seq += 1;
        if self.plp {
            self.durable[dev][offset..offset + data.len()].copy_from_slice(data);
            return;
        }
        self.unflushed.push(Pending {
            dev,
            offset,
            data: data.to_vec(),
            seq: self.completed_seq,
        });
    }

    fn complete(&mut self, f: InFlight) -> i32 {
        let dev = f.req.dev.0 as usize;
        let off = f.req.offset as usize;
        match f.req.kind {
            IoKind::Read | IoKind::Write if off + f.req.len > self.current[dev].len() => -libc::EIO,
            IoKind::Read => {
                // SAFETY: trait contract: the buffer is valid and exclusively ours until reaped.
                let dst = unsafe { std::slice::from_raw_parts_mut(f.req.ptr, f.req.len) };
                dst.copy_from_slice(&self.current[dev][off..off + f.req.len]);
                f.req.len as i32
            }
            IoKind::Write => {
                // SAFETY: trait contract: the buffer is valid until reaped.
                let src = unsafe { std::slice::from_raw_parts(f.req.ptr, f.req.len) };
                self.current[dev][off..off + f.req.len].copy_from_slice(src);
                self.completed(dev, off, src);
                f.req.len as i32
            }
            IoKind::Fsync => {
                let covers = f.covers;
                let durable = &mut self.durable;
                self.unflushed.retain(|p| {
                    if p.dev == dev && p.seq <= covers {
                        durable[p.dev][p.offset..p.offset + p.data.len()].copy_from_slice(&p.data);
                        false
                    } else {
                        true
                    }
                });
                0
            }
        }
    }
}

impl IoEngine for SimEngine {
    unsafe fn push(&mut self, req: IoReq) {
        self.queued.push(req);
    }

    fn submit(&mut self) -> io::Result<()> {
        for req in self.queued.drain(..) {
            // An fsync only covers writes that completed before it was submitted.
            self.in_flight.push(InFlight {
                req,
                covers: self.completed_seq,
            });
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        let mut i = 0;
        let mut delivered = false;
        while i < self.in_flight.len() {
            if self.rng.gen_bool(self.deliver_prob) {
                let j = self.rng.gen_range(i..self.in_flight.len());
                let f = self.in_flight.swap_remove(j);
                let token = f.req.token;
                let res = self.complete(f);
                out.push((token, res));
                delivered = true;
            } else {
                i += 1;
            }
        }
        if !delivered && !self.in_flight.is_empty() {
            let f = self.in_flight.remove(0);
            let token = f.req.token;
            let res = self.complete(f);
            out.push((token, res));
        }
    }

    fn wait(&mut self) -> io::Result<()> {
        self.submit()
    }

    fn in_flight(&self) -> usize {
        self.in_flight.len() + self.queued.len()
    }

    fn dev_size(&self, dev: DevId) -> u64 {
        self.current[dev.0 as usize].len() as u64
    }

    fn read_at(&mut self, dev: DevId, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let d = &self.current[dev.0 as usize];
        let off = offset as usize;
        if off + buf.len() > d.len() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        buf.copy_from_slice(&d[off..off + buf.len()]);
        Ok(())
    }

    fn write_at(&mut self, dev: DevId, offset: u64, buf: &[u8]) -> io::Result<()> {
        let off = offset as usize;
        let d = &mut self.current[dev.0 as usize];
        if off + buf.len() > d.len() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        d[off..off + buf.len()].copy_from_slice(buf);
        self.completed(dev.0 as usize, off, buf);
        Ok(())
    }

    fn sync_dev(&mut self, dev: DevId) -> io::Result<()> {
        let d = dev.0 as usize;
        let durable = &mut self.durable;
        self.unflushed.retain(|p| {
            if p.dev == d {
                durable[p.dev][p.offset..p.offset + p.data.len()].copy_from_slice(&p.data);
                false
            } else {
                true
            }
        });
        Ok(())
    }
}
