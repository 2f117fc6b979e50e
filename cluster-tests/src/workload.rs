//! Recorded clients and a seeded posting workload: everything they send, get back and see
//! delivered goes into a [`History`] for [`History::check`].

use crate::history::{History, Outcome};
use rand::{Rng, SeedableRng};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stoa_client::{Client, ClientConfig, Posted};
use stoa_proto::Seq;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info};

/// Client settings for tests under faults: an answer within 3 s or the post's outcome is
/// unknown; a post retried (same client message id) for at most 8 s.
pub fn fault_tolerant(cfg: &mut ClientConfig) {
    cfg.request_timeout = Duration::from_secs(3);
    cfg.retry_deadline = Duration::from_secs(8);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.idle_timeout = Duration::from_secs(3);
}

/// A client whose posts and deliveries are recorded under its `name`.
pub struct Recorded {
    pub name: String,
    pub client: Client,
    /// The user the client is signed in as (the author of its posts).
    pub author: String,
    history: History,
    next: AtomicU64,
    follower: std::sync::Mutex<Option<JoinHandle<()>>>,
    followed: std::sync::Mutex<Vec<String>>,
}

impl Recorded {
    pub fn new(name: &str, client: Client, author: &str, history: &History) -> Arc<Recorded> {
        Arc::new(Recorded {
            name: name.to_string(),
            client,
            author: author.to_string(),
            history: history.clone(),
            next: AtomicU64::new(0),
            follower: std::sync::Mutex::default(),
            followed: std::sync::Mutex::default(),
        })
    }

    /// Posts a new message (text and client message id `<name>-<n>`) and records it.
    pub async fn post(&self, room: &str) -> (String, Outcome) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", self.name);
        let outcome = self.post_as(room, &id, &id).await.1;
        (id, outcome)
    }

    /// Posts `text` with `client_msg_id` (sending the same pair again is a retry) and records it.
    pub async fn post_as(
        &self,
        room: &str,
        client_msg_id: &str,
        text: &str,
    ) -> (Result<Posted, stoa_client::ClientError>, Outcome) {
        let op = self
            .history
            .post_sent(&self.name, room, &self.author, client_msg_id, text);
        let result = self
            .client
            .post_with_id(room, text, client_msg_id, false)
            .await;
        let outcome = self.history.post_result(op, &result);
        debug!(client = %self.name, room, client_msg_id, ?outcome, "post");
        (result, outcome)
    }

    /// Follows `rooms` from their first message, recording every delivery, until the client is
    /// closed ([`Recorded::close`]). Subscribing is retried for up to 20 s.
    pub async fn follow(&self, rooms: &[&str]) {
        let mut events = self
            .client
            .events()
            .expect("the event stream of a recorded client is taken once, by follow");
        for room in rooms {
            self.history.subscribed(&self.name, room, Seq::ZERO);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                match self.client.subscribe(room, Some(Seq::ZERO)).await {
                    Ok(_) => break,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        debug!(client = %self.name, room, error = %e, "subscribe again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("{} cannot subscribe {room}: {e}", self.name),
                }
            }
        }
        self.followed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(rooms.iter().map(|r| r.to_string()));
        let history = self.history.clone();
        let name = self.name.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = events.next().await {
                history.delivered(&name, &m);
            }
        });
        *self.follower.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Rooms this client follows ([`Recorded::follow`]).
    pub fn followed(&self) -> Vec<String> {
        self.followed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes the client; deliveries stop being recorded once this returns.
    pub async fn close(&self) {
        self.client.close().await;
        let task = self
            .follower
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            // The stream ends once the client is closed and its buffer drained.
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                panic!("{}: the event stream did not end after close", self.name);
            }
        }
    }
}

/// Lets a phase of a test last `duration` under the workload, then waits (up to 30 s) until
/// at least `acks` more posts than at its start are acknowledged: the cluster made progress.
pub async fn hold(history: &History, duration: Duration, acks: usize, what: &str) {
    let before = history.acked(None);
    tokio::time::sleep(duration).await;
    crate::eventually(Duration::from_secs(30), what, || async {
        history.acked(None) >= before + acks
    })
    .await;
    info!(acked = history.acked(None) - before, "{what}");
}

/// Several recorded clients posting to a few rooms, each in a loop with a short random pause,
/// until stopped. The rooms and pauses come from one seed.
pub struct Workload {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Counts>>,
}

/// Post outcomes of a workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub acked: usize,
    pub unknown: usize,
    pub failed: usize,
}

impl Workload {
    pub fn start(
        clients: &[Arc<Recorded>],
        rooms: &[String],
        seed: u64,
        pause_ms: Range<u64>,
    ) -> Workload {
        let (stop, stop_rx) = watch::channel(false);
        let tasks = clients
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let c = c.clone();
                let rooms = rooms.to_vec();
                let mut stop = stop_rx.clone();
                let pause_ms = pause_ms.clone();
                tokio::spawn(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (k as u64 + 1));
                    let mut counts = Counts::default();
                    while !*stop.borrow() {
                        let room = &rooms[rng.gen_range(0..rooms.len())];
                        match c.post(room).await.1 {
                            Outcome::Acked(_) => counts.acked += 1,
                            Outcome::Failed(_) => counts.failed += 1,
                            Outcome::Unknown(_) | Outcome::Pending => counts.unknown += 1,
                        }
                        let pause = Duration::from_millis(rng.gen_range(pause_ms.clone()));
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = stop.wait_for(|s| *s) => {}
                        }
                    }
                    counts
                })
            })
            .collect();
        Workload { stop, tasks }
    }

    /// Stops posting and waits for the posts in flight (each bounded by the client's retry
    /// deadline); panics if one hangs for a minute.
    pub async fn stop(self) -> Counts {
        let _ = self.stop.send(true);
        let mut total = Counts::default();
        for t in self.tasks {
            let c = tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("a workload client stops within a minute")
                .expect("workload task");
            total.acked += c.acked;
            total.unknown += c.unknown;
            total.failed += c.failed;
        }
        info!(?total, "workload stopped");
        total
    }
}
