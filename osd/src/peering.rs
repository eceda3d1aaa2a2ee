//! PG lifecycle on this OSD: which PGs it must lead (from `pg/config`), taking the primary
//! role through etcd, connecting to and listing every peer that may hold the PG's data,
//! deciding per object which copies are current, reporting `pg/state`, and starting over
//! whenever the peers change. Also schedules background recovery. The decisions are the
//! state machines' ([`crate::pg_lifecycle`] for a PG's phases, [`crate::peering_round`] for
//! one round); this module does their etcd, peer and blockstore I/O.
//!
//! Life of a PG: `Claiming` → `Connecting` → `Listing` → (`Stabilizing`) → `Active` or
//! `Incomplete`; any relevant change (set, history, a peer up or down, a failed sub-op)
//! drains the PG (`Draining`: new ops get `-EPIPE`, ops in flight finish) and peering starts
//! again; losing the lease (as etcd reports it, or at its deadline by this thread's own
//! clock: [`crate::pg_lifecycle::LeaseWatch`]) or the `pg/state` key stops it.
//!
//! What it must never do: serve a PG whose `pg/state` etcd has not granted to this OSD, or
//! keep serving once the lease cannot be proven.
//!
//! The primary role's bounds are logged with the wall clock in microseconds, "pg P/N:
//! primary role begins at T us" once etcd granted `pg/state` and "... ends at T us" once
//! the PG drained and stopped or claims again: the fault suite compares these intervals
//! across OSDs (no two may overlap for one PG).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vitastor_blockstore::{BsOp, BsReply, ListFilter, ObjectId};
use vitastor_layout::{keys, OsdNum, PgId, PgState};
use vitastor_protocol::{ReplyOp, Request, RequestOp, SecListOp, SecStabOp, SecSyncOp};

use crate::cluster::Changes;
use crate::etcd::{EtcdCommand, EtcdEvent};
use crate::peering_round::{
    Action as RoundAction, Claimed, Event as RoundEvent, Link, PeeringRound,
};
use crate::pg::{self, Pg, Phase};
use crate::pg_lifecycle::{
    self, Action as LifeAction, Event as LifeEvent, LeaseAction, LeaseEvent,
};
use crate::primary::{parse_listing, wire_list};
use crate::server::{Owner, Server, SubRes};

/// Logs where this OSD's primary role for `key` begins or ends (see the module doc).
fn log_primary_role(key: PgId, bound: &str) {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    tracing::info!(
        "pg {}/{}: primary role {bound} at {us} us",
        key.pool,
        key.pg
    );
}

impl Server {
    fn etcd_send(&self, cmd: EtcdCommand) {
        if let Some(etcd) = &self.etcd {
            etcd.send(cmd);
        }
    }

    /// Applies a batch of etcd events.
    pub(crate) fn on_etcd_events(&mut self, events: Vec<EtcdEvent>) {
        let mut changes = Changes::default();
        for ev in events {
            match &ev {
                EtcdEvent::Connected => {
                    tracing::info!("etcd session up");
                }
                EtcdEvent::LeaseRenewed { expires } => {
                    let now = Instant::now();
                    let renewed = LeaseEvent::Renewed {
                        expires: *expires,
                        now,
                    };
                    if let Some(action) = self.lease.step(renewed) {
                        tracing::info!("etcd lease kept alive after all: leading PGs again");
                        self.on_lease_action(action, &mut changes);
                    }
                }
                EtcdEvent::LeaseLost => {
                    if let Some(action) = self.lease.step(LeaseEvent::Lost) {
                        tracing::error!("etcd lease lost: stopping every PG");
                        self.on_lease_action(action, &mut changes);
                    }
                }
                EtcdEvent::InitialLoad { .. } => {
                    self.lease.step(LeaseEvent::Loaded);
                    // The lease may be new: every PG claims again.
                    let keys: Vec<_> = self.pgs.keys().copied().collect();
                    for k in keys {
                        self.request_repeer(k);
                    }
                }
                EtcdEvent::PgClaimed { pool, pg, granted } => {
                    self.on_pg_claimed(PgId::new(*pool, *pg), *granted);
                }
                EtcdEvent::PgLost { pool, pg } => {
                    tracing::error!("pg {pool}/{pg}: pg/state is not ours any more: stopping");
                    self.stop_pg(PgId::new(*pool, *pg), false);
                }
                _ => {}
            }
            self.cluster.apply(&ev, &mut changes);
        }
        if !changes.is_empty() {
            self.reconcile(&changes);
        }
    }

    /// Stops leading PGs once the lease's deadline has passed by this thread's clock, even if
    /// the etcd thread has not noticed yet (see [`crate::pg_lifecycle::LeaseWatch`]). One
    /// clock read; called after every wait and before the loop sends what it queued.
    pub(crate) fn check_lease(&mut self) {
        if let Some(action) = self.lease.step(LeaseEvent::Check(Instant::now())) {
            tracing::error!(
                "etcd lease expired by this OSD's clock (no keepalive got through in time): stopping every PG"
            );
            self.on_lease_action(action, &mut Changes::default());
        }
    }

    fn on_lease_action(&mut self, action: LeaseAction, changes: &mut Changes) {
        match action {
            LeaseAction::StopAll => {
                let keys: Vec<_> = self.pgs.keys().copied().collect();
                for k in keys {
                    self.stop_pg(k, false);
                }
                // Requests queued to peers but not sent yet must not leave: their ops get
                // -EPIPE through the peers' Down events, and the clients retry elsewhere.
                let osds: Vec<OsdNum> = self.cluster.osds.keys().copied().collect();
                let mut events = std::mem::take(&mut self.peer_events);
                for osd in osds {
                    self.peers.drop_peer(osd, "etcd lease expired", &mut events);
                }
                self.peer_events = events;
            }
            LeaseAction::ResumeAll => changes.all = true,
        }
    }

    /// The PGs this OSD must lead now, with their peers.
    fn wanted_pgs(&self) -> BTreeMap<PgId, BTreeSet<OsdNum>> {
        self.wanted_and_refused().0
    }

    /// The PGs this OSD must lead now, with their peers, and why it refuses others (by
    /// pool: `pg` 0; by PG otherwise).
    fn wanted_and_refused(&self) -> (BTreeMap<PgId, BTreeSet<OsdNum>>, BTreeMap<PgId, String>) {
        let mut out = BTreeMap::new();
        let mut refused = BTreeMap::new();
        if !self.lease.held() {
            return (out, refused);
        }
        let (block, gran) = (
            self.bs.layout().block_size,
            self.bs.layout().bitmap_granularity,
        );
        for (&key, item) in &self.cluster.pg_config {
            if OsdNum(item.primary) != self.osd_num || item.pause {
                continue;
            }
            let Some(pool) = self.cluster.pools.get(&key.pool) else {
                continue;
            };
            if key.pg == 0 || key.pg > pool.pg_count {
                continue;
            }
            if let Some(why) = pg::pool_refusal(pool, block, gran) {
                refused.insert(PgId::new(key.pool, 0), why);
                continue;
            }
            if let Some(why) = pg::pg_refusal(pool, item) {
                refused.insert(key, why);
                continue;
            }
            out.insert(key, self.cluster.pg_peers(key));
        }
        (out, refused)
    }

    /// Logs each new reason to refuse a pool or PG once (not at every etcd change).
    fn log_refusals(&mut self, refused: BTreeMap<PgId, String>) {
        for (key, why) in &refused {
            if self.cluster.refused.get(key) == Some(why) {
                continue;
            }
            if key.pg == 0 {
                tracing::error!("pool {}: not serving its PGs: {why}", key.pool);
            } else {
                tracing::error!("pg {}/{}: not serving it: {why}", key.pool, key.pg);
            }
        }
        self.cluster.refused = refused;
    }

    /// Starts, re-peers or stops PGs after a change in etcd.
    fn reconcile(&mut self, changes: &Changes) {
        for &osd in &changes.osds {
            if !self.cluster.osds.contains_key(&osd) {
                let mut events = std::mem::take(&mut self.peer_events);
                self.peers.drop_peer(osd, "down in etcd", &mut events);
                self.peer_events = events;
            }
        }
        let (wanted, refused) = self.wanted_and_refused();
        self.log_refusals(refused);
        let existing: Vec<PgId> = self.pgs.keys().copied().collect();
        for key in existing {
            match wanted.get(&key) {
                None => self.stop_pg(key, true),
                Some(peers) => {
                    let pg = self.pgs.get_mut(&key).expect("listed above");
                    // History removed from a clean PG: nothing to peer again for.
                    let only_history_dropped = !changes.all
                        && pg.phase == Phase::Active
                        && pg.is_clean()
                        && peers.is_subset(&pg.peers)
                        && self.cluster.pg_config.get(&key) == Some(&pg.cfg)
                        && !changes.osds.iter().any(|o| peers.contains(o));
                    if only_history_dropped {
                        pg.peers = peers.clone();
                        continue;
                    }
                    let pg = &self.pgs[&key];
                    let cfg_changed = self.cluster.pg_config.get(&key) != Some(&pg.cfg)
                        || self.cluster.pools.get(&key.pool) != Some(&pg.pool_cfg);
                    if changes.all
                        || cfg_changed
                        || changes.pgs.contains(&key)
                        || peers != &pg.peers
                        || changes.osds.iter().any(|o| peers.contains(o))
                    {
                        self.request_repeer(key);
                    }
                }
            }
        }
        for (key, peers) in wanted {
            if self.pgs.contains_key(&key) {
                continue;
            }
            let pool = self.cluster.pools[&key.pool].clone();
            let cfg = self.cluster.pg_config[&key].clone();
            self.pgs.insert(key, Pg::new(pool, key.pg, cfg, peers));
            self.start_claim(key);
        }
        self.kick_recovery();
    }

    /// Refreshes a PG's config from the cluster view and asks etcd for its `pg/state`.
    fn start_claim(&mut self, key: PgId) {
        let wanted = self.wanted_pgs();
        let Some(peers) = wanted.get(&key).cloned() else {
            return self.stop_pg(key, true);
        };
        let pool = self.cluster.pools[&key.pool].clone();
        let cfg = self.cluster.pg_config[&key].clone();
        let me = self.osd_num;
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        if pg.phase != Phase::Claiming {
            log_primary_role(key, "ends");
        }
        pg.set_pool(pool);
        pg.cfg = cfg;
        pg.peers = peers;
        pg.phase = Phase::Claiming;
        // Replies to sub-ops of earlier rounds still in flight, of this `Pg` or of one
        // dropped before it, must not count in this one.
        self.peering_epoch += 1;
        pg.epoch = self.peering_epoch;
        pg.round = PeeringRound::new(pg.epoch);
        pg.live.clear();
        pg.objects = Default::default();
        pg.dirty.clear();
        let state = PgState::new(
            me.0,
            &pg.state_names(),
            pg.peers.iter().map(|o| o.0).collect(),
        );
        pg.reported = pg.state_names();
        self.etcd_send(EtcdCommand::ClaimPg {
            pool: key.pool,
            pg: key.pg,
            state: state.to_json(),
        });
    }

    fn on_pg_claimed(&mut self, key: PgId, granted: bool) {
        if !self.pgs.contains_key(&key) {
            if granted {
                // Claimed after we stopped wanting it: give it back.
                self.etcd_send(EtcdCommand::ReleasePg {
                    pool: key.pool,
                    pg: key.pg,
                });
            }
            return;
        }
        self.pg_event(key, LifeEvent::ClaimAnswered { granted });
    }

    /// Moves a PG's lifecycle by one event and carries out what it decided.
    fn pg_event(&mut self, key: PgId, event: LifeEvent) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        for action in pg_lifecycle::step(&mut pg.phase, event) {
            match action {
                LifeAction::Claim => self.start_claim(key),
                LifeAction::Report => self.report_pg(key),
                LifeAction::CheckDrained => {
                    let Some(pg) = self.pgs.get(&key) else { return };
                    let drain = LifeEvent::Drain {
                        inflight: pg.inflight,
                        lease_lost: !self.lease.held(),
                    };
                    self.pg_event(key, drain);
                }
                LifeAction::Forget { release } => {
                    self.pgs.remove(&key);
                    log_primary_role(key, "ends");
                    self.backoff.forget_pg(key);
                    if release {
                        self.etcd_send(EtcdCommand::ReleasePg {
                            pool: key.pool,
                            pg: key.pg,
                        });
                    }
                    tracing::info!("pg {}/{}: stopped", key.pool, key.pg);
                }
                // Retried from the timer until the holder lets go or pg/config changes.
                LifeAction::HeldElsewhere => tracing::info!(
                    "pg {}/{}: pg/state is held by another OSD, waiting",
                    key.pool,
                    key.pg
                ),
                LifeAction::StartRound => {
                    log_primary_role(key, "begins");
                    self.start_round(key)
                }
                LifeAction::Round(event) => self.step_round(key, event),
                LifeAction::Reconnect => {
                    let Some(pg) = self.pgs.get(&key) else { return };
                    let missing: Vec<OsdNum> = pg
                        .peers
                        .iter()
                        .copied()
                        .filter(|&o| o != self.osd_num && !self.peers.is_known(o))
                        .collect();
                    for osd in missing {
                        self.connect_peer(osd);
                    }
                }
            }
        }
    }

    /// Hands a claimed PG to its peering round, with the state of its peer connections.
    fn start_round(&mut self, key: PgId) {
        let Some(pg) = self.pgs.get(&key) else { return };
        tracing::debug!(
            "pg {}/{}: primary role granted, connecting to {:?}",
            key.pool,
            key.pg,
            pg.peers
        );
        let me = self.osd_num;
        let peers = pg
            .peers
            .iter()
            .filter(|&&o| o != me)
            .map(|&o| {
                let link = if self.peers.is_ready(o) {
                    Link::Ready
                } else if self.peers.is_known(o) {
                    Link::Connecting
                } else {
                    Link::Absent
                };
                (o, link)
            })
            .collect();
        let claimed = Claimed {
            me,
            peers,
            members: pg.members(),
            pg_minsize: pg.pool_cfg.pg_minsize as usize,
            ec: pg.ec.as_ref().map(|ec| (ec.geo, pg.set())),
        };
        self.step_round(key, RoundEvent::Claimed(claimed));
    }

    fn osd_addr(&self, osd: OsdNum) -> Option<SocketAddr> {
        let st = self.cluster.osds.get(&osd)?;
        st.addresses
            .iter()
            .find_map(|a| a.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, st.port))
    }

    /// Starts connecting to `osd`; false if no connection could even be started (no
    /// address in etcd, or the socket call failed).
    fn connect_peer(&mut self, osd: OsdNum) -> bool {
        let Some(addr) = self.osd_addr(osd) else {
            return false;
        };
        let mut events = std::mem::take(&mut self.peer_events);
        self.peers.connect(osd, addr, &mut events);
        self.peer_events = events;
        self.peers.is_known(osd)
    }

    /// Feeds the PG's peering round one event and carries out what it decided.
    fn step_round(&mut self, key: PgId, event: RoundEvent) {
        let me = self.osd_num;
        // Answers the executor owes the round (connects that could not start), fed to it
        // after the current actions are carried out.
        let mut events = vec![event];
        while let Some(event) = events.pop() {
            let Some(pg) = self.pgs.get_mut(&key) else {
                return;
            };
            let actions = pg.round.advance(event);
            let epoch = pg.round.epoch();
            self.round_actions(key, me, epoch, actions, &mut events);
        }
    }

    fn round_actions(
        &mut self,
        key: PgId,
        me: OsdNum,
        epoch: u64,
        actions: Vec<RoundAction>,
        events: &mut Vec<RoundEvent>,
    ) {
        for action in actions {
            let Some(pg) = self.pgs.get_mut(&key) else {
                return;
            };
            match action {
                RoundAction::Connect { osd } => {
                    if !self.connect_peer(osd) {
                        events.push(RoundEvent::PeerDown(osd));
                    }
                }
                RoundAction::Live(live) => {
                    tracing::debug!("pg {}/{}: listing on {live:?}", key.pool, key.pg);
                    pg.live = live;
                }
                RoundAction::Incomplete { live_members } => {
                    tracing::warn!(
                        "pg {}/{}: only {live_members} of its OSDs are reachable (pg_minsize {}): incomplete",
                        key.pool, key.pg, pg.pool_cfg.pg_minsize
                    );
                    pg.phase = Phase::Incomplete;
                    self.report_pg(key);
                }
                RoundAction::Listing => {
                    pg.phase = Phase::Listing;
                    self.report_pg(key);
                }
                RoundAction::List { osd } => {
                    let pool = &pg.pool_cfg;
                    let min_inode = (pool.id as u64) << vitastor_layout::POOL_ID_BITS;
                    let max_inode = min_inode | ((1u64 << vitastor_layout::POOL_ID_BITS) - 1);
                    let filter = ListFilter {
                        pg_count: pool.pg_count,
                        pg_num: key.pg,
                        pg_stripe_size: pool.effective_stripe_size(),
                        min_inode,
                        max_inode,
                        min_stripe: 0,
                        max_stripe: 0,
                    };
                    let owner = Owner::List(key, osd, epoch);
                    if osd == me {
                        self.submit_local(owner, BsOp::List(filter));
                        continue;
                    }
                    let req = Request {
                        id: 0,
                        op: RequestOp::SecList(SecListOp {
                            list_pg: filter.pg_num,
                            pg_count: filter.pg_count,
                            pg_stripe_size: filter.pg_stripe_size,
                            min_inode,
                            max_inode,
                            min_stripe: 0,
                            max_stripe: 0,
                            stable_limit: 0,
                            flags: 0,
                        }),
                    };
                    self.submit_remote(owner, osd, req, Vec::new(), None);
                }
                RoundAction::Stabilizing => pg.phase = Phase::Stabilizing,
                RoundAction::Rollback { osd, list } if osd == me => {
                    self.submit_local(Owner::Stab(key, osd, epoch), BsOp::Rollback(list));
                }
                RoundAction::Rollback { osd, list } => {
                    let bytes = wire_list(&list);
                    let op = RequestOp::SecRollback(SecStabOp {
                        len: bytes.len() as u64,
                        flags: 0,
                    });
                    let req = Request { id: 0, op };
                    self.submit_remote(Owner::Stab(key, osd, epoch), osd, req, bytes, None);
                }
                RoundAction::Lost(lost) => {
                    let first = &lost[0];
                    tracing::error!(
                        "pg {}/{}: {} objects cannot be read (their newest stable version is on fewer than {} parts; first {:?} v{} on {} parts): incomplete until more OSDs come back",
                        key.pool,
                        key.pg,
                        lost.len(),
                        pg.ec.as_ref().map_or(0, |e| e.geo.data_parts),
                        first.oid,
                        first.stable,
                        first.parts
                    );
                    pg.phase = Phase::Incomplete;
                    self.report_pg(key);
                }
                RoundAction::Sync { osd } if osd == me => {
                    self.submit_local(Owner::Stab(key, osd, epoch), BsOp::Sync);
                }
                RoundAction::Sync { osd } => {
                    let op = RequestOp::SecSync(SecSyncOp { flags: 0 });
                    let req = Request { id: 0, op };
                    self.submit_remote(Owner::Stab(key, osd, epoch), osd, req, Vec::new(), None);
                }
                RoundAction::Stabilize { osd, list } if osd == me => {
                    self.submit_local(Owner::Stab(key, osd, epoch), BsOp::Stabilize(list));
                }
                RoundAction::Stabilize { osd, list } => {
                    let bytes = wire_list(&list);
                    let op = RequestOp::SecStabilize(SecStabOp {
                        len: bytes.len() as u64,
                        flags: 0,
                    });
                    let req = Request { id: 0, op };
                    self.submit_remote(Owner::Stab(key, osd, epoch), osd, req, bytes, None);
                }
                RoundAction::Restart => self.start_claim(key),
                RoundAction::Active { objects, listed } => {
                    pg.objects = *objects;
                    pg.phase = Phase::Active;
                    tracing::info!(
                        "pg {}/{}: active on {:?} (versions listed per OSD: {listed:?}), {} degraded and {} misplaced objects",
                        key.pool,
                        key.pg,
                        pg.live_members(),
                        pg.objects.degraded.len(),
                        pg.objects.misplaced.len()
                    );
                    self.report_pg(key);
                    self.kick_recovery();
                }
            }
        }
    }

    /// A listing of peering round `epoch` arrived from `osd`.
    pub(crate) fn on_listing(&mut self, key: PgId, osd: OsdNum, epoch: u64, res: SubRes) {
        // A PG that stopped or started over meanwhile takes no listing.
        if self.pgs.get(&key).map(|pg| pg.phase) != Some(Phase::Listing) {
            return;
        }
        let listing = match res {
            SubRes::Bs(Ok(BsReply::List { stable, unstable })) => Some((stable, unstable)),
            SubRes::Net(Ok((reply, payload))) => match (reply.op, parse_listing(&payload)) {
                (ReplyOp::SecList(h), Some(mut all)) if h.stable_count as usize <= all.len() => {
                    let unstable = all.split_off(h.stable_count as usize);
                    Some((all, unstable))
                }
                _ => None,
            },
            _ => None,
        };
        if listing.is_none() {
            tracing::warn!("pg {}/{}: listing osd.{osd} failed", key.pool, key.pg);
        }
        let event = RoundEvent::Listed {
            osd,
            epoch,
            listing,
        };
        self.step_round(key, event);
    }

    /// A sync or stabilize of peering round `epoch` on `osd` finished.
    pub(crate) fn on_peering_stabilized(
        &mut self,
        key: PgId,
        osd: OsdNum,
        epoch: u64,
        res: SubRes,
    ) {
        if self.pgs.get(&key).map(|pg| pg.phase) != Some(Phase::Stabilizing) {
            return;
        }
        let ok = res.errno().is_none();
        self.step_round(key, RoundEvent::Stabilized { osd, epoch, ok });
    }

    /// Writes `pg/state` if the state names changed; deletes the PG's history once clean.
    pub(crate) fn report_pg(&mut self, key: PgId) {
        let me = self.osd_num;
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let names = pg.state_names();
        if names == pg.reported {
            return;
        }
        pg.reported = names.clone();
        // `pg/state` is etcd's: the numbers go in bare.
        let state = PgState::new(me.0, &names, pg.peers.iter().map(|o| o.0).collect());
        let clean = pg.phase == Phase::Active && pg.is_clean();
        self.etcd_send(EtcdCommand::PutPgState {
            pool: key.pool,
            pg: key.pg,
            state: state.to_json(),
        });
        if clean {
            if let Some((_, raw)) = self.cluster.pg_history.get(&key) {
                self.etcd_send(EtcdCommand::DeleteIfUnchanged {
                    key: keys::pg_history(key.pool, key.pg),
                    value: raw.clone(),
                });
            }
        }
    }

    /// A sub-op of an active PG failed: peer again.
    pub(crate) fn peer_trouble(&mut self, key: PgId) {
        self.request_repeer(key);
    }

    /// Starts peering again: at once for a PG between steps, after draining for an active one,
    /// after the current step for one in the middle of peering.
    pub(crate) fn request_repeer(&mut self, key: PgId) {
        self.pg_event(key, LifeEvent::Repeer);
    }

    /// Stops a PG: it drains, then is forgotten; `release` deletes its `pg/state` (when the
    /// lease is gone the key is gone with it).
    pub(crate) fn stop_pg(&mut self, key: PgId, release: bool) {
        self.pg_event(key, LifeEvent::Stop { release });
    }

    /// Finishes draining a PG once no op runs on it.
    pub(crate) fn pg_maybe_drained(&mut self, key: PgId) {
        let Some(pg) = self.pgs.get(&key) else { return };
        let drain = LifeEvent::Drain {
            inflight: pg.inflight,
            lease_lost: !self.lease.held(),
        };
        self.pg_event(key, drain);
    }

    pub(crate) fn on_peer_ready(&mut self, osd: OsdNum) {
        self.on_peer(osd, |live| LifeEvent::PeerUp { osd, live });
    }

    pub(crate) fn on_peer_down(&mut self, osd: OsdNum) {
        self.on_peer(osd, |live| LifeEvent::PeerDown { osd, live });
    }

    /// Tells every PG `osd` may hold data of that its connection changed.
    fn on_peer(&mut self, osd: OsdNum, event: impl Fn(bool) -> LifeEvent) {
        let keys: Vec<(PgId, bool)> = self
            .pgs
            .iter()
            .filter(|(_, pg)| pg.peers.contains(&osd))
            .map(|(k, pg)| (*k, pg.live.contains(&osd)))
            .collect();
        for (key, live) in keys {
            self.pg_event(key, event(live));
        }
    }

    /// Once a second: retry claims, reconnect to peers that are up in etcd but not
    /// connected, statistics.
    pub(crate) fn tick(&mut self) {
        let keys: Vec<PgId> = self.pgs.keys().copied().collect();
        for key in keys {
            self.pg_event(key, LifeEvent::Tick);
        }
        self.kick_recovery();
        if self.last_stats.elapsed() >= self.cfg.stats_interval {
            self.last_stats = std::time::Instant::now();
            self.report_stats();
        }
    }

    fn report_stats(&mut self) {
        let layout = self.bs.layout();
        let block = layout.block_size as u64;
        let size = layout.data_blocks() * block;
        let free = self.bs.free_blocks() * block;
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let osd = self.stats.osd_json(&crate::stats::StoreReport {
            time,
            size,
            free,
            host: &crate::options::hostname(),
            data_block_size: layout.block_size,
            bitmap_granularity: layout.bitmap_granularity,
            immediate_commit: self.bs.config().immediate_commit.as_str(),
            big_entry_waits: self.bs.stats().big_entry_waits,
        });
        // Statistics keys are etcd's: the number goes in bare.
        let me = self.osd_num.0;
        self.etcd_send(EtcdCommand::Put {
            key: keys::osd_stats(me),
            value: osd,
        });
        self.etcd_send(EtcdCommand::Put {
            key: format!("{}{me}", keys::OSD_INODESTATS_PREFIX),
            value: self.stats.inode_json(),
        });
        let space = crate::stats::space_json(self.bs.space_by_inode());
        self.etcd_send(EtcdCommand::Put {
            key: format!("{}{me}", keys::OSD_SPACE_PREFIX),
            value: space,
        });
    }

    /// Starts background recovery up to `recovery_queue_depth` objects: degraded objects
    /// first, misplaced ones only in PGs with nothing degraded, tombstone purges in PGs
    /// that are otherwise clean. Objects that must wait (their last attempt failed, or a
    /// copy would go to an OSD that is out of space) are parked until then, so the passes
    /// that run after every recovered object do not walk them again.
    pub(crate) fn kick_recovery(&mut self) {
        let depth = self.cfg.recovery_queue_depth;
        let no_recovery = self.cluster.global_flag("no_recovery");
        let no_rebalance = self.cluster.global_flag("no_rebalance");
        let mut report = Vec::new();
        let now = std::time::Instant::now();
        for (pg, oid) in self.backoff.due(now) {
            if let Some(pg) = self.pgs.get_mut(&pg) {
                pg.objects.degraded.unpark(&oid);
                pg.objects.misplaced.unpark(&oid);
            }
        }
        for pass in 0..3 {
            let keys: Vec<PgId> = self.pgs.keys().copied().collect();
            for key in keys {
                if self.recovering.len() >= depth {
                    break;
                }
                let pg = &self.pgs[&key];
                if pg.phase != Phase::Active {
                    continue;
                }
                report.push(key);
                let room = depth - self.recovering.len();
                let (recovering, backoff) = (&self.recovering, &self.backoff);
                let full: Vec<(OsdNum, std::time::Instant)> = pg
                    .live_members()
                    .into_iter()
                    .filter_map(|m| Some((m, backoff.osd_ready_at(m, now)?)))
                    .collect();
                let source: Box<dyn Iterator<Item = &ObjectId>> = match pass {
                    0 if !no_recovery => Box::new(pg.objects.degraded.ready()),
                    1 if !no_rebalance && pg.objects.degraded.is_empty() => {
                        Box::new(pg.objects.misplaced.ready())
                    }
                    2 if pg.objects.objects.is_empty() && self.can_purge(key) => {
                        Box::new(pg.tombstones.keys())
                    }
                    _ => Box::new(std::iter::empty()),
                };
                let mut candidates = Vec::new();
                let mut park = Vec::new();
                for &oid in source {
                    if candidates.len() >= room {
                        break;
                    }
                    if recovering.contains(&(key, oid)) || pg.locks.contains_key(&oid) {
                        continue;
                    }
                    let waits = backoff.ready_at(&(key, oid), now).or_else(|| {
                        // A copy for an OSD that is out of space would only fail.
                        let st = pg.objects.objects.get(&oid)?;
                        full.iter()
                            .filter(|(m, _)| !st.holders.contains(m))
                            .map(|&(_, until)| until)
                            .max()
                    });
                    match waits {
                        Some(until) => park.push((oid, until)),
                        None => candidates.push(oid),
                    }
                }
                if pass < 2 {
                    let pg = self.pgs.get_mut(&key).expect("listed above");
                    for (oid, until) in park {
                        pg.objects.degraded.park(&oid);
                        pg.objects.misplaced.park(&oid);
                        self.backoff.park((key, oid), until);
                    }
                }
                for oid in candidates {
                    if pass == 2 {
                        self.recovering.insert((key, oid));
                        self.start_purge(key, oid);
                    } else {
                        self.start_recover(key, oid);
                    }
                }
            }
        }
        report.sort_unstable();
        report.dedup();
        for key in report {
            self.report_pg(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use vitastor_blockstore::{BsReply, ObjVerId, ObjectId};
    use vitastor_layout::{OsdNum, PgId};

    use crate::etcd::EtcdEvent;
    use crate::pg::Phase;
    use crate::server::{Owner, SubRes};
    use crate::testing::{Bench, Setup, BLOCK, INODE};

    #[test]
    fn a_listing_from_an_earlier_round_is_dropped() {
        let mut b = Bench::new(Setup::default());
        let old = b.server.pgs[&PgId::new(1, 1)].epoch;
        b.server.request_repeer(PgId::new(1, 1));
        b.etcd(vec![EtcdEvent::PgClaimed {
            pool: 1,
            pg: 1,
            granted: true,
        }]);
        assert_eq!(b.server.pgs[&PgId::new(1, 1)].phase, Phase::Listing);
        assert!(b.server.pgs[&PgId::new(1, 1)].epoch > old);
        // osd.2 answers the previous round's SEC_LIST only now, with an object nobody has.
        let phantom = ObjVerId::new(ObjectId::new(INODE, 5 * BLOCK), 99);
        let listing = BsReply::List {
            stable: vec![phantom],
            unstable: vec![],
        };
        b.server.deliver(
            Owner::List(PgId::new(1, 1), OsdNum(2), old),
            SubRes::Bs(Ok(listing)),
        );
        assert_eq!(b.server.pgs[&PgId::new(1, 1)].phase, Phase::Listing);
        b.pump_until(|s| s.pgs[&PgId::new(1, 1)].phase == Phase::Active);
        assert!(b.server.pgs[&PgId::new(1, 1)].objects.objects.is_empty());
        assert_eq!(b.pg_states(), ["Active", "Degraded"]);
    }

    #[test]
    fn a_listing_from_a_dropped_incarnation_of_the_pg_is_dropped() {
        let mut b = Bench::new(Setup::default());
        let old = b.server.pgs[&PgId::new(1, 1)].epoch;
        // The lease is lost: the PG stops and is forgotten. The next session creates it
        // again: a new `Pg`, whose rounds must not reuse the tags of the old one's.
        b.etcd(vec![EtcdEvent::LeaseLost]);
        assert!(!b.server.pgs.contains_key(&PgId::new(1, 1)));
        b.reload();
        b.etcd(vec![EtcdEvent::PgClaimed {
            pool: 1,
            pg: 1,
            granted: true,
        }]);
        assert_eq!(b.server.pgs[&PgId::new(1, 1)].phase, Phase::Listing);
        // osd.2 answers the old incarnation's SEC_LIST only now, with an object nobody has.
        let phantom = ObjVerId::new(ObjectId::new(INODE, 5 * BLOCK), 99);
        let listing = BsReply::List {
            stable: vec![phantom],
            unstable: vec![],
        };
        b.server.deliver(
            Owner::List(PgId::new(1, 1), OsdNum(2), old),
            SubRes::Bs(Ok(listing)),
        );
        assert_eq!(b.server.pgs[&PgId::new(1, 1)].phase, Phase::Listing);
        b.pump_until(|s| s.pgs[&PgId::new(1, 1)].phase == Phase::Active);
        assert!(b.server.pgs[&PgId::new(1, 1)].objects.objects.is_empty());
    }
}
