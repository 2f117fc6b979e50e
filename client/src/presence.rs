//! Room presence: reading a room's roster, and the stream of roster events of followed rooms.

use crate::session::{lock, unexpected, State};
use crate::{Client, ClientError, Result};
use std::sync::atomic::Ordering;
use stoa_proto::{Request, Response, Roster, RosterChange};
use tokio::sync::{mpsc, watch};

/// A change of a followed room's roster, as the node announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEvent {
    pub room: String,
    pub change: RosterChange,
}

impl Client {
    /// Who is connected to `room` now, on any node: their names, sorted, or only their number
    /// when there are more than the cluster's `participant_update_limit`. Needs the right to read
    /// the room (a room you may not see answers `not_found`).
    pub async fn participants(&self, room: &str) -> Result<Roster> {
        let request = Request::Participants {
            room: room.to_string(),
        };
        match self.shared().call(request, None).await? {
            Response::Participants { roster, .. } => Ok(roster),
            other => Err(ClientError::Protocol(unexpected("Participants", &other))),
        }
    }

    /// The roster events of every followed room; `None` if already taken (it can be taken once).
    ///
    /// Each time live delivery of a room starts (subscribe, join, and again after a reconnect or a
    /// resume) the node sends the whole roster ([`RosterChange::All`]) or, for a room above the
    /// limit, [`RosterChange::OverLimit`]; then joins and leaves, one `OverLimit` notice when the
    /// room goes above the limit (and nothing while it stays there), and `All` again when it comes
    /// back. Applying the events in order keeps a copy of the roster.
    ///
    /// Like [`Client::events`]: once taken, keep reading it; while it is full
    /// (`events_buffer`), the connection's reader waits. Events that arrive before it is taken
    /// are kept up to `events_buffer`, later ones dropped.
    pub fn roster_events(&self) -> Option<RosterStream> {
        let rx = lock(&self.shared().roster_rx).take()?;
        self.shared().roster_taken.store(true, Ordering::Release);
        Some(RosterStream {
            rx,
            state: self.shared().state.subscribe(),
        })
    }
}

/// Roster events of the followed rooms, in the order the node sent them.
pub struct RosterStream {
    rx: mpsc::Receiver<RosterEvent>,
    state: watch::Receiver<State>,
}

impl RosterStream {
    /// The next event; `None` once the client is closed or has failed and the buffered events
    /// are drained.
    pub async fn next(&mut self) -> Option<RosterEvent> {
        tokio::select! {
            biased;
            e = self.rx.recv() => e,
            _ = self.state.wait_for(State::is_terminal) => self.rx.try_recv().ok(),
        }
    }

    /// An event if one is buffered, without waiting.
    pub fn try_next(&mut self) -> Option<RosterEvent> {
        self.rx.try_recv().ok()
    }
}

/// Apply a roster event to a copy of the roster (`names`, sorted). Answers the count the node
/// gave when the room is above the limit (then `names` is emptied), `None` otherwise.
pub fn apply_roster_change(names: &mut Vec<String>, change: &RosterChange) -> Option<u32> {
    match change {
        RosterChange::All(all) => *names = all.clone(),
        RosterChange::Joined(user) => {
            if let Err(at) = names.binary_search(user) {
                names.insert(at, user.clone());
            }
        }
        RosterChange::Left(user) => {
            if let Ok(at) = names.binary_search(user) {
                names.remove(at);
            }
        }
        RosterChange::OverLimit { count, .. } => {
            names.clear();
            return Some(*count);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roster_changes_apply_in_order() {
        let mut names = Vec::new();
        let all = RosterChange::All(vec!["ann".into(), "cy".into()]);
        assert_eq!(apply_roster_change(&mut names, &all), None);
        apply_roster_change(&mut names, &RosterChange::Joined("bob".into()));
        apply_roster_change(&mut names, &RosterChange::Joined("bob".into()));
        apply_roster_change(&mut names, &RosterChange::Left("ann".into()));
        apply_roster_change(&mut names, &RosterChange::Left("zed".into()));
        assert_eq!(names, ["bob", "cy"]);
        let over = RosterChange::OverLimit {
            count: 80,
            limit: 75,
        };
        assert_eq!(apply_roster_change(&mut names, &over), Some(80));
        assert!(names.is_empty());
    }
}
