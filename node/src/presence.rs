//! Presence at the edges: the node's shared [`Presence`] state, and the tasks that exchange it with
//! peers. The rules (merging, versions, expiry, limits) are in [`crate::domain::presence`].
//!
//! - Room actors report their local participants ([`PresenceHub::local_join`] / `local_leave`)
//!   and read a room's roster from here; [`crate::fanout::Fanout`] wakes them when a peer's report
//!   or an expiry changed their room.
//! - [`run`] keeps one sender task per peer (the members of the meta group): each sends the
//!   changes since what the peer acknowledged as soon as there are any, a heartbeat every
//!   `presence.report_interval_ms`, and the whole roster when the peer asks for it. It also drops
//!   peers silent for `presence.expiry_ms`.
//! - Peers' reports arrive as `PeerRequest::Presence` (see [`crate::net::peer`]).

use crate::domain::presence::{Ack, Presence, PresenceLimits, Report, ReportBody, RoomId};
use crate::fanout::Fanout;
use crate::net::peer::{PeerPool, PeerRequest, PeerResponse, PEER_MESSAGE_BYTES_MAX};
use crate::raft::Raft;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use stoa_config::PresenceSection;
use stoa_proto::Roster;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The node's presence state. Cheap to clone.
#[derive(Clone)]
pub struct PresenceHub {
    state: Arc<Mutex<Presence>>,
    /// The local version after every local change: wakes the peer senders.
    local: Arc<watch::Sender<u64>>,
    /// Origin of the monotonic milliseconds expiry is measured in.
    start: Instant,
}

impl PresenceHub {
    /// A fresh state for node `me`; its incarnation is the wall-clock time, so a restarted node's
    /// reports replace its previous run's.
    pub fn new(me: u64, cfg: &PresenceSection) -> PresenceHub {
        let limits = PresenceLimits {
            entries_per_node_max: cfg.entries_per_node_max,
            // Half a peer message: the rest of the report and the framing fit easily.
            report_bytes_max: PEER_MESSAGE_BYTES_MAX / 2,
            expiry_ms: cfg.expiry_ms,
            journal_max: cfg.journal_changes_max,
        };
        let incarnation = crate::net::session::now_ms();
        PresenceHub {
            state: Arc::new(Mutex::new(Presence::new(me, incarnation, limits))),
            local: Arc::new(watch::channel(0).0),
            start: Instant::now(),
        }
    }

    fn state(&self) -> MutexGuard<'_, Presence> {
        // Nothing panics while holding it (the domain asserts nothing on input), so a poisoned
        // lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// `user` has live delivery of `room` here; true if the room's roster changed.
    pub fn local_join(&self, room: RoomId, user: &str) -> bool {
        let (changed, version) = {
            let mut s = self.state();
            (s.local_join(room, user), s.version())
        };
        self.local.send_replace(version);
        changed
    }

    /// `user` no longer has live delivery of `room` here; true if the room's roster changed.
    pub fn local_leave(&self, room: RoomId, user: &str) -> bool {
        let (changed, version) = {
            let mut s = self.state();
            (s.local_leave(room, user), s.version())
        };
        self.local.send_replace(version);
        changed
    }

    /// The roster of `room` as clients are told it under `limit`.
    pub fn roster(&self, room: RoomId, limit: u32) -> Roster {
        self.state().roster(room, limit)
    }

    /// Take a peer's report; answers the ack and the rooms whose roster changed.
    pub fn receive(&self, from: u64, report: Report) -> (Ack, Vec<RoomId>) {
        let now = self.now_ms();
        self.state().receive(from, report, now)
    }

    fn report_for(&self, acked: Option<u64>) -> Report {
        self.state().report_for(acked)
    }

    /// Drop silent peers; answers the rooms whose roster changed.
    fn expire(&self) -> Vec<RoomId> {
        let now = self.now_ms();
        let (dropped, changed) = self.state().expire(now);
        for node in dropped {
            tracing::info!(peer = node, "presence of a silent peer expired");
        }
        changed
    }

    /// Nodes (this one included) reporting `user` in `room`.
    pub fn nodes_reporting(&self, room: RoomId, user: &str) -> u32 {
        self.state().nodes_reporting(room, user)
    }

    /// Peers whose participants this node holds.
    pub fn peers(&self) -> Vec<u64> {
        self.state().peers()
    }
}

/// The version a peer has once it applied `report`.
fn version_after(report: &Report) -> u64 {
    match &report.body {
        ReportBody::Full { version, .. } => *version,
        ReportBody::Delta { after, changes } => after + changes.len() as u64,
    }
}

/// Exchange presence with the peers until aborted: one sender per member of the meta group
/// other than this node, expiry of silent peers, and wakes that did not fit a room's mailbox.
pub async fn run(
    fanout: Fanout,
    pool: Arc<PeerPool>,
    meta: Raft,
    cfg: PresenceSection,
    rpc_timeout: Duration,
) {
    let me = pool.me().0;
    let interval = Duration::from_millis(cfg.report_interval_ms);
    // Aborting this task drops the set, which aborts every sender.
    let mut senders: JoinSet<()> = JoinSet::new();
    let mut running: HashMap<u64, (String, tokio::task::AbortHandle)> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let changed = fanout.presence().expire();
        fanout.wake_rosters(&changed);
        fanout.retry_roster_wakes();

        let members: HashMap<u64, String> = meta
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        running.retain(|id, (addr, handle)| {
            let keep = members.get(id) == Some(addr) && !handle.is_finished();
            if !keep {
                handle.abort();
            }
            keep
        });
        for (id, addr) in members {
            if running.contains_key(&id) {
                continue;
            }
            let handle = senders.spawn(feed_peer(
                fanout.presence().clone(),
                pool.clone(),
                id,
                addr.clone(),
                interval,
                rpc_timeout,
            ));
            running.insert(id, (addr, handle));
        }
        // Reap finished senders so the set does not grow.
        while senders.try_join_next().is_some() {}
    }
}

/// Keep one peer up to date with this node's participants.
async fn feed_peer(
    hub: PresenceHub,
    pool: Arc<PeerPool>,
    peer: u64,
    addr: String,
    interval: Duration,
    ttl: Duration,
) {
    let mut acked: Option<u64> = None;
    let mut local = hub.local.subscribe();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut now = true;
    loop {
        if !now {
            tokio::select! {
                _ = tick.tick() => {}
                changed = local.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
        now = false;
        local.borrow_and_update();
        let report = hub.report_for(acked);
        let next = version_after(&report);
        let full = matches!(report.body, ReportBody::Full { .. });
        match pool
            .call(peer, &addr, &PeerRequest::Presence(report), ttl)
            .await
        {
            Ok(PeerResponse::Presence(Ack::Applied)) => acked = Some(next),
            Ok(PeerResponse::Presence(Ack::NeedFull)) => {
                acked = None;
                // Send the whole roster at once; a full report is never answered NeedFull.
                now = !full;
            }
            Ok(PeerResponse::Presence(Ack::Refused(why))) => {
                tracing::warn!(peer, %why, "peer refused this node's presence");
                acked = None;
            }
            Ok(other) => {
                // A node that does not know presence yet (during a rolling upgrade) refuses it.
                tracing::debug!(peer, answer = ?other, "unexpected answer to presence");
                acked = None;
            }
            Err(e) => {
                // The report may or may not have arrived: the next delta tells (NeedFull).
                tracing::debug!(peer, error = %e, "presence report not delivered");
            }
        }
    }
}
