//! Fault plans: which device I/Os of a blockstore fail, and how. A plan is a list of rules,
//! built in code ([`FaultPlan::rule`]) or parsed from text (the OSD's hidden `inject_faults`
//! option, so multi-process tests can break one daemon's disk). This module only decides;
//! the blockstore's I/O tracking layer (module `inflight`) applies the decisions to the I/O it
//! hands to the engine.
//!
//! # Grammar
//!
//! ```text
//! plan   := rule (';' rule)*                  blanks around tokens are ignored
//! rule   := target ':' fault [':' param (',' param)*]
//! target := read | write | fsync | wait
//! fault  := eio | enospc | short              for read, write (short: not for fsync)
//!         | delay                             for read, write, fsync
//!         | eio | eintr | ebusy               for wait
//! param  := after=N      let the first N matching I/Os through (default 0)
//!         | ms=N         how long `delay` holds the I/O, milliseconds (default 1000)
//!         | count=N      fault at most N times (default: every matching I/O after `after`)
//!         | area=data|meta|journal            only I/O to that area
//!         | prob=P       fault each eligible I/O with probability P in [0, 1] (default 1)
//!         | seed=S       seed of this rule's random choices (default 0)
//! ```
//!
//! Example: `write:eio:after=100,count=1;fsync:eio:after=3` fails the 101st write with EIO,
//! and every fsync from the 4th on.
//!
//! # What the targets mean
//!
//! - `read`, `write`, `fsync` count the device I/Os the blockstore queues on its data path,
//!   including the resubmitted remainder of a short transfer (so `write:short` without a
//!   count keeps a write from ever finishing, and the store then fails it with EIO). The
//!   blocking reads and writes of `open` are never faulted: a plan counts data-path I/O only.
//! - An I/O's area is found from its device and offset; an fsync matches an `area` when its
//!   device holds that area.
//! - A failed (`eio`, `enospc`) read or write transfers nothing and a failed fsync flushes
//!   nothing: the worst case the blockstore must survive.
//! - `short` transfers the first half of the request rounded down to 4096 bytes (nothing for
//!   requests of 4 KiB or less), as a device may legitimately do.
//! - `delay` holds the I/O for `ms` before the device sees it, then it runs normally: a slow
//!   device with a small `ms`, a hung one with a large `ms`. It counts as in flight while held;
//!   it is handed to the device on the blockstore's next submit or reap after its time (the
//!   OSD's loop turns at least once a second), so the added latency is at least `ms`.
//! - `wait` counts the blockstore's blocking waits for completions (`exec`, `wait_idle`,
//!   `poll(true)`, and the wait for in-flight I/O when the store is dropped); a faulted wait
//!   returns the error without waiting. The OSD's own event-loop wait is not affected.
//!
//! Every rule counts every I/O it matches; when several rules fire for one I/O the first one
//! in the plan decides.

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::BsError;

/// What a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Device reads.
    Read,
    /// Device writes.
    Write,
    /// Device fsyncs.
    Fsync,
    /// The engine's blocking wait for completions.
    Wait,
}

/// What a firing rule does to the I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fails with EIO.
    Eio,
    /// Fails with ENOSPC.
    Enospc,
    /// Transfers only part of the request (reads and writes).
    Short,
    /// Fails with EINTR (waits).
    Eintr,
    /// Fails with EBUSY (waits).
    Ebusy,
    /// Holds the I/O this many milliseconds before the device sees it (reads, writes, fsyncs).
    Delay(u32),
}

impl Fault {
    /// The negative errno this fault reports (0 for a short transfer, which reports bytes).
    pub fn errno(self) -> i32 {
        match self {
            Fault::Eio => -libc::EIO,
            Fault::Enospc => -libc::ENOSPC,
            Fault::Short | Fault::Delay(_) => 0,
            Fault::Eintr => -libc::EINTR,
            Fault::Ebusy => -libc::EBUSY,
        }
    }
}

/// An area of the store, to aim a rule at one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The data area.
    Data,
    /// The metadata area (superblock included).
    Meta,
    /// The journal area (header included).
    Journal,
}

impl Region {
    /// This region as a bit in an area set.
    pub(crate) fn bit(self) -> u8 {
        match self {
            Region::Data => 1,
            Region::Meta => 2,
            Region::Journal => 4,
        }
    }
}

/// One rule of a [`FaultPlan`]. Build with [`FaultRule::new`] and the chained setters.
#[derive(Clone, Debug)]
pub struct FaultRule {
    target: Target,
    fault: Fault,
    area: Option<Region>,
    after: u64,
    count: u64,
    prob: f64,
    seed: u64,
    rng: SmallRng,
    seen: u64,
    fired: u64,
}

impl FaultRule {
    /// A rule that applies `fault` to every I/O of `target`. Panics on combinations the
    /// grammar rejects (a short fsync, EINTR on a read…), which are programming errors here.
    pub fn new(target: Target, fault: Fault) -> Self {
        if let Err(e) = check_combination(target, fault) {
            panic!("{e}");
        }
        FaultRule {
            target,
            fault,
            area: None,
            after: 0,
            count: u64::MAX,
            prob: 1.0,
            seed: 0,
            rng: SmallRng::seed_from_u64(0),
            seen: 0,
            fired: 0,
        }
    }

    /// Let the first `n` matching I/Os through.
    pub fn after(mut self, n: u64) -> Self {
        self.after = n;
        self
    }

    /// Fault at most `n` times.
    pub fn count(mut self, n: u64) -> Self {
        self.count = n;
        self
    }

    /// Only I/O to `area`.
    pub fn area(mut self, area: Region) -> Self {
        self.area = Some(area);
        self
    }

    /// Fault each eligible I/O with probability `p` (clamped to [0, 1]), from `seed`.
    pub fn prob(mut self, p: f64, seed: u64) -> Self {
        self.prob = p.clamp(0.0, 1.0);
        self.seed = seed;
        self.rng = SmallRng::seed_from_u64(seed);
        self
    }

    /// How many times this rule has fired.
    pub fn fired(&self) -> u64 {
        self.fired
    }

    /// Counts one I/O of `target` touching the areas in `areas` (a set of [`Region::bit`]s)
    /// and says whether this rule faults it.
    fn check(&mut self, target: Target, areas: u8) -> bool {
        if target != self.target || self.area.is_some_and(|a| areas & a.bit() == 0) {
            return false;
        }
        let n = self.seen;
        self.seen += 1;
        if n < self.after || self.fired >= self.count {
            return false;
        }
        if self.prob < 1.0 && !self.rng.gen_bool(self.prob) {
            return false;
        }
        self.fired += 1;
        true
    }
}

/// A set of fault rules for one blockstore (see the module doc for the text form).
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    rules: Vec<FaultRule>,
}

impl FaultPlan {
    /// A plan with no rules.
    pub fn new() -> Self {
        FaultPlan::default()
    }

    /// Adds a rule (builder style).
    pub fn rule(mut self, r: FaultRule) -> Self {
        self.rules.push(r);
        self
    }

    /// The rules, with how often each has fired.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Faults injected so far by every rule.
    pub fn fired(&self) -> u64 {
        self.rules.iter().map(|r| r.fired).sum()
    }

    /// Counts one I/O (or wait) and returns the fault to inject, if any.
    pub(crate) fn decide(&mut self, target: Target, areas: u8) -> Option<Fault> {
        let mut chosen = None;
        for r in &mut self.rules {
            if r.check(target, areas) && chosen.is_none() {
                chosen = Some(r.fault);
            }
        }
        chosen
    }
}

fn check_combination(target: Target, fault: Fault) -> Result<(), String> {
    let ok = match target {
        Target::Read | Target::Write => matches!(
            fault,
            Fault::Eio | Fault::Enospc | Fault::Short | Fault::Delay(_)
        ),
        Target::Fsync => matches!(fault, Fault::Eio | Fault::Enospc | Fault::Delay(_)),
        Target::Wait => matches!(fault, Fault::Eio | Fault::Eintr | Fault::Ebusy),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "fault {} cannot apply to {}",
            fault_name(fault),
            target_name(target)
        ))
    }
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::Read => "read",
        Target::Write => "write",
        Target::Fsync => "fsync",
        Target::Wait => "wait",
    }
}

fn fault_name(f: Fault) -> &'static str {
    match f {
        Fault::Eio => "eio",
        Fault::Enospc => "enospc",
        Fault::Short => "short",
        Fault::Eintr => "eintr",
        Fault::Ebusy => "ebusy",
        Fault::Delay(_) => "delay",
    }
}

fn region_name(r: Region) -> &'static str {
    match r {
        Region::Data => "data",
        Region::Meta => "meta",
        Region::Journal => "journal",
    }
}

fn parse_rule(text: &str) -> Result<FaultRule, String> {
    let mut parts = text.splitn(3, ':').map(str::trim);
    let target = match parts.next().unwrap_or("") {
        "read" => Target::Read,
        "write" => Target::Write,
        "fsync" => Target::Fsync,
        "wait" => Target::Wait,
        t => return Err(format!("unknown target {t:?} (read, write, fsync or wait)")),
    };
    let fault = match parts.next() {
        Some("eio") => Fault::Eio,
        Some("enospc") => Fault::Enospc,
        Some("short") => Fault::Short,
        Some("eintr") => Fault::Eintr,
        Some("ebusy") => Fault::Ebusy,
        Some("delay") => Fault::Delay(1000),
        Some(f) => return Err(format!("unknown fault {f:?}")),
        None => return Err("missing fault after the target".into()),
    };
    check_combination(target, fault)?;
    let mut rule = FaultRule::new(target, fault);
    let (mut prob, mut seed) = (1.0, 0);
    for param in parts.next().into_iter().flat_map(|p| p.split(',')) {
        let (key, value) = param
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| format!("parameter {param:?} is not key=value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key} must be a non-negative integer, not {value:?}"))
        };
        match key {
            "after" => rule.after = number()?,
            "count" => rule.count = number()?,
            "seed" => seed = number()?,
            "ms" => match rule.fault {
                Fault::Delay(_) => {
                    rule.fault =
                        Fault::Delay(u32::try_from(number()?).map_err(|_| {
                            format!("ms must be at most {} (about 49 days)", u32::MAX)
                        })?)
                }
                _ => return Err("ms applies to delay only".into()),
            },
            "prob" => {
                prob = value
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| format!("prob must be a number in [0, 1], not {value:?}"))?
            }
            "area" => {
                rule.area = Some(match value {
                    "data" => Region::Data,
                    "meta" => Region::Meta,
                    "journal" => Region::Journal,
                    a => return Err(format!("unknown area {a:?} (data, meta or journal)")),
                })
            }
            k => return Err(format!("unknown parameter {k:?}")),
        }
    }
    if rule.area.is_some() && target == Target::Wait {
        return Err("area does not apply to wait".into());
    }
    Ok(rule.prob(prob, seed))
}

impl FromStr for FaultPlan {
    type Err = BsError;

    fn from_str(s: &str) -> Result<Self, BsError> {
        let mut plan = FaultPlan::new();
        for text in s.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let rule = parse_rule(text)
                .map_err(|e| BsError::Config(format!("inject_faults rule {text:?}: {e}")))?;
            plan.rules.push(rule);
        }
        Ok(plan)
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:after={}",
            target_name(self.target),
            fault_name(self.fault),
            self.after
        )?;
        if self.count != u64::MAX {
            write!(f, ",count={}", self.count)?;
        }
        if let Some(a) = self.area {
            write!(f, ",area={}", region_name(a))?;
        }
        if let Fault::Delay(ms) = self.fault {
            write!(f, ",ms={ms}")?;
        }
        if self.prob < 1.0 {
            write!(f, ",prob={},seed={}", self.prob, self.seed)?;
        }
        Ok(())
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: u8 = 1;
    const JOURNAL: u8 = 4;

    #[test]
    fn parses_the_documented_example() {
        let mut p: FaultPlan = "write:eio:after=100,count=1; fsync:eio:after=3"
            .parse()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "write:eio:after=100,count=1;fsync:eio:after=3"
        );
        let writes: Vec<_> = (0..200).map(|_| p.decide(Target::Write, DATA)).collect();
        assert_eq!(writes.iter().filter(|f| f.is_some()).count(), 1);
        assert_eq!(writes[100], Some(Fault::Eio));
        let fsyncs: Vec<_> = (0..6).map(|_| p.decide(Target::Fsync, DATA)).collect();
        assert_eq!(fsyncs[..3], [None, None, None]);
        assert!(fsyncs[3..].iter().all(|f| *f == Some(Fault::Eio)));
        assert_eq!(p.fired(), 4);
    }

    #[test]
    fn areas_filter_and_every_rule_counts() {
        let mut p: FaultPlan = "write:short:area=journal,count=2;write:enospc:after=1,count=1"
            .parse()
            .unwrap();
        assert_eq!(p.decide(Target::Write, DATA), None);
        // The second write matches both rules; the first rule in the plan wins, both count.
        assert_eq!(p.decide(Target::Write, JOURNAL), Some(Fault::Short));
        assert_eq!(p.decide(Target::Write, JOURNAL), Some(Fault::Short));
        assert_eq!(p.decide(Target::Write, JOURNAL), None);
        assert_eq!(p.decide(Target::Read, JOURNAL), None);
        assert_eq!(p.rules()[1].fired(), 1);
    }

    #[test]
    fn probability_is_reproducible_from_the_seed() {
        let run = |text: &str| {
            let mut p: FaultPlan = text.parse().unwrap();
            (0..1000)
                .map(|_| p.decide(Target::Read, DATA).is_some())
                .collect::<Vec<_>>()
        };
        let a = run("read:eio:prob=0.25,seed=9");
        assert_eq!(a, run("read:eio:prob=0.25,seed=9"));
        let n = a.iter().filter(|x| **x).count();
        assert!((150..350).contains(&n), "{n}");
        assert!(run("read:eio:prob=0").iter().all(|x| !x));
    }

    #[test]
    fn rejects_bad_text_with_the_rule_in_the_message() {
        for bad in [
            "write",
            "write:eintr",
            "fsync:short",
            "wait:enospc",
            "wait:eio:area=data",
            "erase:eio",
            "read:eio:after",
            "read:eio:after=-1",
            "read:eio:prob=2",
            "read:eio:area=swap",
            "read:eio:colour=red",
            "read:eio:ms=5",
            "wait:delay",
            "write:delay:ms=-1",
        ] {
            let e = bad.parse::<FaultPlan>().unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert_eq!("".parse::<FaultPlan>().unwrap().rules().len(), 0);
    }

    #[test]
    fn delay_takes_its_time_in_milliseconds() {
        let mut p: FaultPlan = "write:delay:ms=250,count=1;fsync:delay".parse().unwrap();
        assert_eq!(
            p.to_string(),
            "write:delay:after=0,count=1,ms=250;fsync:delay:after=0,ms=1000"
        );
        assert_eq!(p.decide(Target::Write, DATA), Some(Fault::Delay(250)));
        assert_eq!(p.decide(Target::Write, DATA), None);
        assert_eq!(p.decide(Target::Fsync, DATA), Some(Fault::Delay(1000)));
        assert_eq!(Fault::Delay(5).errno(), 0);
    }

    #[test]
    fn builder_and_text_agree() {
        let built = FaultPlan::new()
            .rule(
                FaultRule::new(Target::Read, Fault::Short)
                    .count(3)
                    .area(Region::Meta),
            )
            .rule(
                FaultRule::new(Target::Wait, Fault::Eintr)
                    .after(2)
                    .prob(0.5, 7),
            );
        let text = built.to_string();
        assert_eq!(text.parse::<FaultPlan>().unwrap().to_string(), text);
    }
}
