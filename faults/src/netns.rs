//! A small network of namespaces for partition scenarios: one "switch" namespace with a
//! bridge, and one namespace per host (etcd and monitor, each OSD, the fio client), each
//! joined to the bridge by a veth pair and holding one loopback-range address, 127.77.0.N.
//! Links between two hosts are cut and healed with routes inside their namespaces.
//!
//! # Loopback-only addresses
//! Every address is in 127.0.0.0/8, so nothing here can ever be routed off the machine. The
//! kernel treats 127/8 as martian on a real interface unless `route_localnet` is set, and a
//! namespace's `lo` normally owns all of 127.0.0.0/8 (the local route would swallow packets
//! to the other hosts); so each host namespace gets `route_localnet=1` (all, default and
//! its veth) and `lo` holds 127.0.0.1/32 only. The bridge lives in the switch namespace, not
//! in the root namespace: the root namespace's interfaces and routes are never touched.
//!
//! # Cuts
//! A cut between hosts A and B is one of:
//! - silent ([`CutKind::Silent`]): in each namespace a policy rule drops, on input, what
//!   comes from the other's address (`ip rule add pref 10 from B iif eth0 blackhole`): a
//!   real partition, where nothing tells the sender and connections hang until a timeout.
//!   The rule must come before the `local` table's lookup, which every namespace has at
//!   preference 0; so each host namespace moves that lookup to preference 100 at set-up.
//!   (A `blackhole` route would not do: local senders get EINVAL from it at once.)
//! - refused ([`CutKind::Refused`]): in each namespace a `prohibit` route to the other's
//!   address: local senders get EACCES at once, as from a firewall that rejects.
//!
//! Changing rules or routes flushes the kernel's cached routes, so established connections
//! are cut too. Healing deletes what the cuts added. Everything else (etcd, other hosts)
//! still talks to both.
//!
//! # Names and clean-up
//! Namespaces are named `vsp-<pid>-<n>-<host>` (`n` counts labs in the process). [`Lab`]
//! deletes its namespaces when dropped, also on a failed assertion; the veths go with them
//! (a namespace disappears once no process runs in it, so drop the daemons first). At start,
//! namespaces with this prefix whose PID no longer runs (a crashed run) are deleted. No
//! process is started or signalled here besides `ip` and `sysctl`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vitastor_testkit::{process, NetHost};

/// `ip` from iproute2.
const IP: &str = "/usr/sbin/ip";
/// Prefix of every namespace this module creates.
const PREFIX: &str = "vsp-";
/// Bound for one `ip`/`sysctl` run.
const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// How a cut drops packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutKind {
    /// Silently, on input (policy rules).
    Silent,
    /// With an immediate error to the sender (`prohibit` routes).
    Refused,
}

impl CutKind {
    /// The `ip` object and its spec (without `add`/`del`) that cut a namespace off `peer`.
    fn spec(self, peer: Ipv4Addr) -> Vec<String> {
        let peer = format!("{peer}/32");
        let spec: &[&str] = match self {
            CutKind::Silent => &[
                "rule",
                "pref",
                "10",
                "from",
                &peer,
                "iif",
                "eth0",
                "blackhole",
            ],
            CutKind::Refused => &["route", "prohibit", &peer],
        };
        spec.iter().map(|s| s.to_string()).collect()
    }
}

/// What one cut added in one namespace: `ip -n <netns> <object> add|del <spec...>`.
#[derive(Debug, Clone)]
struct CutRule {
    netns: String,
    spec: Vec<String>,
}

impl CutRule {
    fn apply(&self, verb: &str) {
        let (object, rest) = self.spec.split_first().expect("an ip object");
        run(Command::new(IP)
            .args(["-n", &self.netns, object, verb])
            .args(rest));
    }
}

/// Namespaces joined by a bridge; see the module doc.
#[derive(Debug)]
pub struct Lab {
    switch: String,
    hosts: Vec<(String, NetHost)>,
    cuts: Vec<CutRule>,
}

fn run(cmd: &mut Command) {
    let what = format!("{cmd:?}");
    let out = process::output_within(cmd, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run(Command::new(IP).args(args));
}

fn ip_in(netns: &str, args: &[&str]) {
    run(Command::new(IP).arg("-n").arg(netns).args(args));
}

/// Deletes namespaces of earlier runs of this suite whose process is gone.
fn remove_leftovers() {
    let Ok(out) = process::output_within(Command::new(IP).args(["netns", "list"]), CMD_TIMEOUT)
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            println!("removing network namespace {name} left by a crashed run (pid {pid})");
            let _ =
                process::output_within(Command::new(IP).args(["netns", "del", name]), CMD_TIMEOUT);
        }
    }
}

impl Lab {
    /// A switch and one namespace per name in `hosts`, host `i` on 127.77.0.`10 + i`.
    pub fn new(hosts: &[&str]) -> Lab {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        remove_leftovers();
        let base = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{base}-sw");
        let mut lab = Lab {
            switch: switch.clone(),
            hosts: Vec::new(),
            cuts: Vec::new(),
        };
        ip(&["netns", "add", &switch]);
        ip_in(&switch, &["link", "add", "br0", "type", "bridge"]);
        ip_in(&switch, &["link", "set", "br0", "up"]);
        for (i, name) in hosts.iter().enumerate() {
            let netns = format!("{base}-{name}");
            let addr = Ipv4Addr::new(127, 77, 0, 10 + i as u8);
            ip(&["netns", "add", &netns]);
            lab.hosts
                .push((name.to_string(), NetHost::new(netns.clone(), addr)));
            let port = format!("p{i}");
            ip_in(
                &switch,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
                ],
            );
            ip_in(&switch, &["link", "set", &port, "master", "br0", "up"]);
            ip_in(&netns, &["link", "set", "lo", "up"]);
            // `lo` comes up with 127.0.0.1/8, whose local route would claim every other
            // host's address.
            ip_in(&netns, &["addr", "del", "127.0.0.1/8", "dev", "lo"]);
            ip_in(&netns, &["addr", "add", "127.0.0.1/32", "dev", "lo"]);
            run(Command::new(IP)
                .args(["netns", "exec", &netns, "sysctl", "-q", "-w"])
                .args([
                    "net.ipv4.conf.all.route_localnet=1",
                    "net.ipv4.conf.default.route_localnet=1",
                    "net.ipv4.conf.eth0.route_localnet=1",
                ]));
            // Room for the silent cuts' rules before the local table (see the module doc).
            ip_in(&netns, &["rule", "add", "pref", "100", "lookup", "local"]);
            ip_in(&netns, &["rule", "del", "pref", "0"]);
            ip_in(
                &netns,
                &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            );
            ip_in(&netns, &["link", "set", "eth0", "up"]);
        }
        lab
    }

    /// Host `name`'s namespace and address.
    pub fn host(&self, name: &str) -> NetHost {
        self.hosts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// Cuts the link between hosts `a` and `b` (both directions).
    pub fn cut(&mut self, a: &str, b: &str, kind: CutKind) {
        let (a, b) = (self.host(a), self.host(b));
        for (at, peer) in [(&a, &b), (&b, &a)] {
            let rule = CutRule {
                netns: at.netns.clone(),
                spec: kind.spec(peer.addr),
            };
            rule.apply("add");
            self.cuts.push(rule);
        }
    }

    /// Heals every cut.
    pub fn heal(&mut self) {
        for rule in std::mem::take(&mut self.cuts) {
            rule.apply("del");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let names = self
            .hosts
            .iter()
            .map(|(_, h)| h.netns.clone())
            .chain([self.switch.clone()]);
        for name in names {
            let _ =
                process::output_within(Command::new(IP).args(["netns", "del", &name]), CMD_TIMEOUT);
        }
    }
}
