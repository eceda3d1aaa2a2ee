//! T1Q1 latency probe: `latency ETCD_ADDRESS [COUNT]` writes then reads 4 KiB blocks one at
//! a time on inode 1 of pool 1 and prints the mean latency of each. For quick measurements
//! beside `make bench`; fio through `libfio_vitastor.so` is the reference benchmark.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use vitastor::{Client, ClientOptions};

fn run_one(client: &mut Client, done: &Rc<Cell<bool>>) {
    while !done.get() {
        client.wait_events(Some(Duration::from_millis(100)));
    }
    done.set(false);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let etcd = args.next().expect("usage: latency ETCD_ADDRESS [COUNT]");
    let count: u64 = args.next().map_or(2000, |c| c.parse().expect("COUNT"));
    let mut opts = ClientOptions::new();
    opts.set("etcd_address", &etcd);
    let mut client = Client::new(&opts).expect("client");
    let inode = (1u64 << 48) | 1;
    let done = Rc::new(Cell::new(false));
    for (name, write) in [("write", true), ("read", false)] {
        let start = Instant::now();
        for i in 0..count {
            let off = (i * 7919 % 16384) * 4096;
            let d = Rc::clone(&done);
            let cb = move |r: vitastor::OpDone| {
                r.result.expect("op");
                d.set(true);
            };
            if write {
                client.write(inode, off, vec![i as u8; 4096], 0, cb);
            } else {
                client.read(inode, off, vec![0; 4096], cb);
            }
            run_one(&mut client, &done);
        }
        let us = start.elapsed().as_micros() as f64 / count as f64;
        println!("4k {name} T1Q1: {us:.1} us/op ({:.0} iops)", 1e6 / us);
    }
}
