//! Getting a command committed: propose on this node when it leads the group, else forward to the
//! leader over the peer network, retrying through elections until a deadline. Posts go through a
//! per-shard [`Proposer`] that packs every post waiting at that moment into one Raft entry.

use crate::domain::shard::{PostOutcome, ProposedPost};
use crate::metrics::Counters;
use crate::net::peer::{propose_local, PeerPool, PeerRequest, PeerResponse, ProposeError};
use crate::raft::{Command, CommandResult, GroupId, Raft};
use std::sync::Arc;
use std::time::Duration;
use stoa_proto::{ApiError, ErrorCode};
use tokio::sync::{mpsc, oneshot, Semaphore};

#[derive(Clone)]
pub struct Proposals {
    rafts: Arc<Vec<Raft>>,
    pool: Arc<PeerPool>,
    timeout: Duration,
    rpc_timeout: Duration,
    counters: Counters,
}

impl Proposals {
    pub fn new(
        rafts: Arc<Vec<Raft>>,
        pool: Arc<PeerPool>,
        timeout: Duration,
        rpc_timeout: Duration,
        counters: Counters,
    ) -> Self {
        Proposals {
            rafts,
            pool,
            timeout,
            rpc_timeout,
            counters,
        }
    }

    /// Commit `cmd` in `group` and return what applying it answered. A command may be applied and
    /// still answer an error here (e.g. the leader died after committing): callers make commands
    /// idempotent (posts carry client message ids) so a retry is safe.
    pub async fn propose(&self, group: GroupId, cmd: Command) -> Result<CommandResult, ApiError> {
        self.propose_at(group, cmd).await.map(|(result, _)| result)
    }

    /// Like [`Proposals::propose`], and wait until this node has applied the command too, so a
    /// read on this node right after sees it (read-your-writes for directory changes).
    pub async fn propose_and_see(
        &self,
        group: GroupId,
        cmd: Command,
    ) -> Result<CommandResult, ApiError> {
        self.propose_and_see_at(group, cmd).await.map(|(r, _)| r)
    }

    /// Like [`Proposals::propose_and_see`]; also answers the log index the command took.
    pub async fn propose_and_see_at(
        &self,
        group: GroupId,
        cmd: Command,
    ) -> Result<(CommandResult, u64), ApiError> {
        let (result, index) = self.propose_at(group, cmd).await?;
        let raft = &self.rafts[group.0 as usize];
        let waited = raft
            .wait(Some(self.timeout))
            .applied_index_at_least(Some(index), "read your own write")
            .await;
        if let Err(e) = waited {
            tracing::warn!(%group, index, error = %e, "committed, but not applied here in time");
        }
        Ok((result, index))
    }

    /// Commit `cmd`; answers what applying it said and the log index it was committed at.
    async fn propose_at(
        &self,
        group: GroupId,
        cmd: Command,
    ) -> Result<(CommandResult, u64), ApiError> {
        let raft = self.raft(group)?;
        self.with_leader(group, |target| {
            let cmd = cmd.clone();
            async move {
                match target {
                    Target::Me => propose_local(raft, cmd).await,
                    Target::Leader(leader, addr) => {
                        match self
                            .call(leader, &addr, &PeerRequest::Propose { group, cmd })
                            .await?
                        {
                            PeerResponse::Proposed(r) => r,
                            other => Err(ProposeError::Unavailable(format!(
                                "unexpected answer {other:?}"
                            ))),
                        }
                    }
                }
            }
        })
        .await
    }

    /// Commit a batch of posts: on the leader, as one entry; elsewhere, by handing them to the
    /// leader's own proposer (`PeerRequest::ForwardPosts`), so that the leader's Raft core sees
    /// at most `proposals_in_flight_max` writes per group however many nodes take posts (openraft
    /// 0.9 flushes every write before it turns to replication acknowledgements).
    pub async fn propose_posts(
        &self,
        group: GroupId,
        posts: Vec<ProposedPost>,
    ) -> Result<Vec<Result<PostOutcome, ApiError>>, ApiError> {
        let raft = self.raft(group)?;
        let n = posts.len();
        self.with_leader(group, |target| {
            let posts = posts.clone();
            async move {
                match target {
                    Target::Me => {
                        match propose_local(raft, Command::Posts(posts)).await? {
                            (CommandResult::Posts(outcomes), _) if outcomes.len() == n => {
                                // Counted once committed: a retried batch is one entry.
                                self.counters.proposal_batches.inc();
                                self.counters.proposal_posts.inc_by(n as u64);
                                Ok(outcomes)
                            }
                            (other, _) => Err(ProposeError::Unavailable(format!(
                                "unexpected answer {other:?}"
                            ))),
                        }
                    }
                    Target::Leader(leader, addr) => {
                        match self
                            .call(leader, &addr, &PeerRequest::ForwardPosts { group, posts })
                            .await?
                        {
                            PeerResponse::Posted(r) => r,
                            other => Err(ProposeError::Unavailable(format!(
                                "unexpected answer {other:?}"
                            ))),
                        }
                    }
                }
            }
        })
        .await
    }

    /// Whether this node leads `group` as far as it knows.
    fn leads(&self, group: GroupId) -> bool {
        self.rafts
            .get(group.0 as usize)
            .is_some_and(|r| r.metrics().borrow().current_leader == Some(self.pool.me().0))
    }

    fn raft(&self, group: GroupId) -> Result<&Raft, ApiError> {
        self.rafts
            .get(group.0 as usize)
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, format!("no group {group}")))
    }

    /// Run `attempt` against the group's current leader, retrying through elections and leader
    /// changes until the deadline.
    async fn with_leader<T, F, Fut>(&self, group: GroupId, mut attempt: F) -> Result<T, ApiError>
    where
        F: FnMut(Target) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProposeError>>,
    {
        let raft = self.raft(group)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let target = {
                let m = raft.metrics();
                let m = m.borrow();
                // A stopped group (node shutting down) will never commit: give up at once, so
                // no retry keeps the node's storage open.
                if let Err(fatal) = &m.running_state {
                    return Err(ApiError::new(
                        ErrorCode::Unavailable,
                        format!("{group} is stopped: {fatal}"),
                    ));
                }
                match m.current_leader {
                    Some(l) if l == self.pool.me().0 => Some(Target::Me),
                    Some(l) => m
                        .membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| Target::Leader(l, n.addr.clone())),
                    None => None,
                }
            };
            let result = match target {
                Some(t) => attempt(t).await,
                None => Err(ProposeError::NotLeader { leader: None }),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if tokio::time::Instant::now() + backoff > deadline {
                        return Err(ApiError::new(
                            ErrorCode::Unavailable,
                            format!("{group} could not commit within {:?}: {e}", self.timeout),
                        ));
                    }
                    tracing::debug!(%group, error = %e, "proposal not taken, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    async fn call(
        &self,
        leader: u64,
        addr: &str,
        req: &PeerRequest,
    ) -> Result<PeerResponse, ProposeError> {
        self.pool
            .call(leader, addr, req, self.rpc_timeout)
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))
    }
}

/// Where a proposal goes.
enum Target {
    Me,
    /// Another node leads: its id and address.
    Leader(u64, String),
}

type Waiter = oneshot::Sender<Result<PostOutcome, ApiError>>;

/// Batches a follower may have on their way to the leader's proposer at once.
const FORWARDS_IN_FLIGHT_MAX: usize = 4;

/// The batching queue of one shard. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<(ProposedPost, Waiter)>,
}

#[derive(Debug, Clone, Copy)]
pub struct ProposerLimits {
    pub queue_posts_max: usize,
    pub batch_posts_max: usize,
    /// Bytes of text in one batch; keeps a Raft entry well inside a peer message.
    pub batch_bytes_max: usize,
    pub in_flight_max: usize,
    /// How long a busy shard's leader waits to fill the next entry (see `proposal_linger_ms`).
    pub linger: Duration,
    /// Posts already waiting for the next entry from which the leader lingers.
    pub linger_after_posts: usize,
}

impl Proposer {
    pub fn start(group: GroupId, proposals: Proposals, limits: ProposerLimits) -> Proposer {
        let (tx, rx) = mpsc::channel(limits.queue_posts_max);
        tokio::spawn(run(group, proposals, limits, rx));
        Proposer { tx }
    }

    pub async fn post(&self, post: ProposedPost) -> Result<PostOutcome, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send((post, tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::new(
                ErrorCode::RateLimited,
                "the shard's proposal queue is full; retry shortly",
            ),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::new(ErrorCode::Unavailable, "node is shutting down")
            }
        })?;
        rx.await
            .map_err(|_| ApiError::new(ErrorCode::Unavailable, "node is shutting down"))?
    }

    /// Queue many posts (a batch forwarded by another node) and wait for all their outcomes.
    pub async fn post_many(&self, posts: Vec<ProposedPost>) -> Vec<Result<PostOutcome, ApiError>> {
        let waiting: Vec<_> = posts.into_iter().map(|p| self.post(p)).collect();
        futures::future::join_all(waiting).await
    }
}

async fn run(
    group: GroupId,
    proposals: Proposals,
    limits: ProposerLimits,
    mut rx: mpsc::Receiver<(ProposedPost, Waiter)>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.in_flight_max));
    // Batches handed to the leader's proposer, which packs them again: holding them here too
    // would make a post taken by a follower wait for two commits before its own.
    let forwarding = Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT_MAX));
    let mut pending: Option<(ProposedPost, Waiter)> = None;
    loop {
        // Wait for a free slot first: while every slot is busy, posts accumulate into a bigger batch.
        let slots = if proposals.leads(group) {
            &in_flight
        } else {
            &forwarding
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match pending.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut batch = vec![first];
        pending = fill(&mut batch, &mut rx, &limits, None).await;
        // A busy leader waits to fill the entry, the longer the more posts queued up while the
        // slot was taken (the previous entry committing). Busy is never judged by the size of
        // the last entry: a lingered entry is big, so that test would keep lingering at any load
        // once it had started. Forwarded batches are packed again by the leader, so a follower
        // never waits.
        if pending.is_none() && proposals.leads(group) {
            let linger = linger_for(batch.len(), &limits);
            if !linger.is_zero() {
                let until = tokio::time::Instant::now() + linger;
                pending = fill(&mut batch, &mut rx, &limits, Some(until)).await;
            }
        }
        let proposals = proposals.clone();
        tokio::spawn(async move {
            let (posts, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let n = posts.len();
            let result = proposals.propose_posts(group, posts).await;
            drop(permit);
            match result {
                Ok(outcomes) if outcomes.len() == n => {
                    for (w, o) in waiters.into_iter().zip(outcomes) {
                        let _ = w.send(o);
                    }
                }
                Ok(other) => {
                    tracing::error!(%group, answer = ?other, "unexpected answer to a batch of posts");
                    for w in waiters {
                        let _ = w.send(Err(ApiError::new(
                            ErrorCode::Internal,
                            "unexpected answer from the shard",
                        )));
                    }
                }
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// How long a leader lingers to fill an entry when `waiting` posts queued up for it while the
/// previous one committed: not at all below `linger_after_posts`, the whole `linger` from four
/// times that, in proportion between. The more posts queue up in one commit, the busier the
/// shard, and the more a fuller entry saves (each entry costs the same whatever it holds).
fn linger_for(waiting: usize, limits: &ProposerLimits) -> Duration {
    let from = limits.linger_after_posts.max(1);
    if waiting < from {
        return Duration::ZERO;
    }
    let full = 4 * from;
    limits
        .linger
        .mul_f64((waiting.min(full) as f64) / (full as f64))
}

/// Add waiting posts to `batch` until it is full (posts or bytes), then answer the post that did
/// not fit, if any. Without `until`, takes only what is already queued; with it, also waits for
/// posts until then.
async fn fill(
    batch: &mut Vec<(ProposedPost, Waiter)>,
    rx: &mut mpsc::Receiver<(ProposedPost, Waiter)>,
    limits: &ProposerLimits,
    until: Option<tokio::time::Instant>,
) -> Option<(ProposedPost, Waiter)> {
    let mut bytes: usize = batch.iter().map(|p| p.0.text.len()).sum();
    while batch.len() < limits.batch_posts_max {
        let next = match rx.try_recv() {
            Ok(p) => p,
            Err(_) => match until {
                Some(t) => match tokio::time::timeout_at(t, rx.recv()).await {
                    Ok(Some(p)) => p,
                    Ok(None) | Err(_) => return None,
                },
                None => return None,
            },
        };
        bytes += next.0.text.len();
        if bytes > limits.batch_bytes_max {
            return Some(next);
        }
        batch.push(next);
    }
    None
}

/// Keep every shard fenced at least as high as the directory's last revoking change
/// (`MetaState::revoked_at`). The node that proposes such a change fences the shards before it
/// answers; this task covers the cases where it could not (it failed in between, or a shard was
/// unavailable then): the leader of each shard raises its fence as soon as it sees the change.
pub async fn keep_shards_fenced(
    meta: crate::store::sm::MetaView,
    shards: Vec<crate::store::sm::ShardView>,
    rafts: Arc<Vec<Raft>>,
    me: u64,
) {
    let mut changes = meta.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let want = meta.read(|m| m.revoked_at());
        for (g, view) in (1u32..).zip(&shards) {
            if view.fence() >= want {
                continue;
            }
            let Some(raft) = rafts.get(g as usize) else {
                continue;
            };
            if raft.metrics().borrow().current_leader != Some(me) {
                continue;
            }
            if let Err(e) = propose_local(raft, Command::Fence { meta_index: want }).await {
                tracing::debug!(group = g, error = %e, "could not fence the shard yet");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn post(text: &str) -> (ProposedPost, Waiter) {
        let p = ProposedPost {
            room_id: 1,
            room: "r".into(),
            author: "a".into(),
            client_msg_id: text.into(),
            text: text.into(),
            alert: false,
            ts_ms: 0,
            file: None,
            checked_at: 0,
        };
        (p, oneshot::channel().0)
    }

    fn limits(posts: usize, bytes: usize) -> ProposerLimits {
        ProposerLimits {
            queue_posts_max: 64,
            batch_posts_max: posts,
            batch_bytes_max: bytes,
            in_flight_max: 1,
            linger: Duration::from_millis(20),
            linger_after_posts: 1,
        }
    }

    fn texts(batch: &[(ProposedPost, Waiter)]) -> Vec<&str> {
        batch.iter().map(|p| p.0.text.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn fill_takes_what_waits_and_lingers_only_when_asked() {
        let (tx, mut rx) = mpsc::channel(64);
        for t in ["b", "c"] {
            tx.try_send(post(t)).unwrap();
        }
        let mut batch = vec![post("a")];
        assert!(fill(&mut batch, &mut rx, &limits(10, 100), None)
            .await
            .is_none());
        assert_eq!(texts(&batch), ["a", "b", "c"], "queued posts, no waiting");

        // Lingering: a post arriving before the deadline joins, one after it does not.
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            late.send(post("d")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            late.send(post("e")).await.unwrap();
        });
        let until = Instant::now() + Duration::from_millis(20);
        let mut batch = vec![post("x")];
        assert!(fill(&mut batch, &mut rx, &limits(10, 100), Some(until))
            .await
            .is_none());
        assert_eq!(texts(&batch), ["x", "d"]);
        assert!(Instant::now() >= until);
    }

    #[test]
    fn linger_grows_with_the_posts_that_queued_up_during_a_commit() {
        let mut l = limits(512, 1 << 20);
        l.linger = Duration::from_millis(40);
        l.linger_after_posts = 16;
        let ms = |waiting, l: &ProposerLimits| linger_for(waiting, l).as_millis();
        assert_eq!(ms(0, &l), 0);
        assert_eq!(ms(15, &l), 0, "moderate load: propose at once");
        assert_eq!(ms(16, &l), 10);
        assert_eq!(ms(32, &l), 20);
        assert_eq!(ms(64, &l), 40);
        assert_eq!(ms(500, &l), 40, "never more than the configured linger");
        l.linger = Duration::ZERO;
        assert_eq!(ms(500, &l), 0, "0 switches it off");
    }

    #[tokio::test(start_paused = true)]
    async fn fill_stops_at_a_full_batch_without_waiting() {
        let (tx, mut rx) = mpsc::channel(64);
        for t in ["b", "c", "d"] {
            tx.try_send(post(t)).unwrap();
        }
        let start = Instant::now();
        let until = Some(start + Duration::from_secs(1));
        let mut batch = vec![post("a")];
        assert!(fill(&mut batch, &mut rx, &limits(2, 100), until)
            .await
            .is_none());
        assert_eq!(texts(&batch), ["a", "b"], "full by count");
        assert_eq!(Instant::now(), start, "a full batch does not linger");

        // Full by bytes: the post that does not fit comes back to lead the next batch.
        let mut batch = vec![post("cc")];
        let over = fill(&mut batch, &mut rx, &limits(10, 3), until).await;
        assert_eq!(texts(&batch), ["cc", "c"]);
        assert_eq!(over.map(|p| p.0.text), Some("d".to_string()));
    }
}
