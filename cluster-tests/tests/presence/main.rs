//! Presence: the live roster of a room, cluster-wide. Users on different nodes see each other join
//! and leave; above `participant_update_limit` clients get one notice and no updates, then the
//! roster again; a stopped node's participants disappear.

mod t10_roster;
mod t50_faults;

use std::time::Duration;
use stoa_client::{apply_roster_change, Client, RosterChange, RosterStream};

/// How long any roster change may take to show: generous, the exchange is sub-second.
pub const WAIT: Duration = Duration::from_secs(20);

/// Presence timing short enough for quick expiry in tests.
pub fn fast_presence(c: &mut stoa_config::NodeConfig) {
    c.presence.report_interval_ms = 200;
    c.presence.expiry_ms = 1000;
}

/// A client's copy of one room's roster, kept from its roster events.
pub struct Watch {
    pub room: String,
    pub stream: RosterStream,
    /// Sorted names; empty while above the limit.
    pub names: Vec<String>,
    /// The count of the last notice while above the limit.
    pub over: Option<u32>,
    /// Every event of the room, in order.
    pub log: Vec<RosterChange>,
}

impl Watch {
    pub fn new(client: &Client, room: &str) -> Watch {
        Watch {
            room: room.into(),
            stream: client.roster_events().expect("roster stream taken once"),
            names: Vec::new(),
            over: None,
            log: Vec::new(),
        }
    }

    /// Apply events until `f` holds for the copy; panics with `what` after [`WAIT`].
    pub async fn until(&mut self, what: &str, f: impl Fn(&Watch) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !f(self) {
            let e = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for: {what}; events: {:?}", self.log))
                .expect("roster stream open");
            if e.room != self.room {
                continue;
            }
            self.over = apply_roster_change(&mut self.names, &e.change);
            self.log.push(e.change);
        }
    }

    /// Wait until the roster is exactly `names`.
    pub async fn until_names(&mut self, names: &[&str]) {
        self.until(&format!("roster {names:?}"), |w| {
            w.over.is_none() && w.names == names
        })
        .await;
    }
}
