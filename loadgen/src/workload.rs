//! The load engine W1, W2, W3 and W4 share: connect and subscribe the members, post, receive, drain,
//! audit.
//!
//! [`Load::start`] does the setup and starts posting; the workload may then wait for its event
//! ([`Load::event`]) and act on the clients or the cluster; [`Load::finish`] waits for the end of
//! the measured period, stops posting, waits for the posts in flight, drains (until every member
//! has received up to the last seq of each of its rooms, or the drain timeout) and audits.
//!
//! Tasks: one receiver per member connection (subscribes its rooms, then feeds every message to
//! its [`audit::Subscription`]s, the room ledgers and the recorder); publishers (closed loop: one
//! task per post in flight; open loop: one pacing task per publisher); the progress ticker; a
//! sampler of CPU at the measured period's bounds. Every task stops on a watch signal, and every
//! wait has a deadline.

use crate::args::LoadArgs;
use crate::audit::{self, AckError, Delivery, Findings, RoomLedger, Subscription};
use crate::payload::{self, now_us, Stamp};
use crate::procstat::{self, NodeStats};
use crate::report::r3;
use crate::scrape::{self, NodeCounters};
use crate::setup::{self, Target};
use crate::stats::{quantile_ms, Recorder, Timeline, Totals};
use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use stoa_client::{Client, Endpoint, Message, TransportStats};
use stoa_node::dev::processes::ProcCluster;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

/// Longest wait for all connections and subscriptions.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for the posts in flight at stop: the SDK retries a post for 15 s.
const POSTS_IN_FLIGHT_WAIT: Duration = Duration::from_secs(20);
/// Longest wait for the receivers to hand over their subscriptions once stopped.
const RECEIVERS_STOP_WAIT: Duration = Duration::from_secs(10);
/// Open loop: posts in flight per publisher (the SDK's requests_in_flight_max).
const OPEN_LOOP_IN_FLIGHT_MAX: usize = 1024;
/// Open loop: a publisher further behind its schedule than this skips the missed sends.
const OPEN_LOOP_LATE_MAX: Duration = Duration::from_secs(1);
/// Pause after a failed post in the closed loop, so a refusing cluster is not spun on.
const FAILED_POST_PAUSE: Duration = Duration::from_millis(10);
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Without a terminal, a progress line every this often.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(5);
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Progress intervals kept for the report (about 2.8 hours).
const TICKS_MAX: usize = 20_000;
/// Acknowledgement conflicts printed as they happen (all are counted).
const ACK_CONFLICTS_SHOWN: u64 = 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Posts sent and not (yet) acknowledged, and why posts failed.
#[derive(Default)]
struct PostBook {
    /// (publisher, counter) → (room, stamp) of posts awaiting their answer.
    pending: HashMap<(u32, u64), (usize, Stamp)>,
    failed: Vec<(usize, Stamp)>,
    errors: BTreeMap<String, u64>,
}

/// The longest time without an acknowledgement during the measured period.
#[derive(Debug, Default)]
struct AckGap {
    /// The measured period (0 until the load starts).
    from_us: u64,
    to_us: u64,
    last_us: u64,
    max_us: u64,
    /// When the longest gap ended.
    max_end_us: u64,
}

impl AckGap {
    /// An acknowledgement at `now_us`. Callers race to the lock, so times may come slightly out
    /// of order: an earlier one than the last is no gap.
    fn ack(&mut self, now_us: u64) {
        if self.from_us == 0 || now_us < self.from_us || now_us > self.to_us {
            return;
        }
        let gap = now_us.saturating_sub(self.last_us.max(self.from_us));
        if gap > self.max_us {
            self.max_us = gap;
            self.max_end_us = now_us;
        }
        self.last_us = self.last_us.max(now_us);
    }

    /// The longest gap and when it ended, counting the one from the last acknowledgement to the
    /// end of the measured period.
    fn longest(&self) -> (u64, u64) {
        let tail = self.to_us.saturating_sub(self.last_us.max(self.from_us));
        if tail > self.max_us {
            (tail, self.to_us)
        } else {
            (self.max_us, self.max_end_us)
        }
    }
}

/// State every task of the run shares.
pub struct Shared {
    size: usize,
    author: String,
    run_id: String,
    rooms_per_user: usize,
    pub room_names: Vec<String>,
    room_heads: Vec<u64>,
    ledgers: Vec<Mutex<RoomLedger>>,
    /// Posts sent to each room: no seq of the room can be above head + this.
    sent: Vec<AtomicU64>,
    acked_max: Vec<AtomicU64>,
    received_max: Vec<AtomicU64>,
    /// Per subscription (user × rooms_per_user + k): seq received without gap so far.
    progress: Vec<AtomicU64>,
    /// Per subscription: its room.
    sub_room: Vec<usize>,
    pub recorder: Recorder,
    book: Mutex<PostBook>,
    ack_gap: Mutex<AckGap>,
    ack_conflicts: AtomicU64,
    /// Messages of rooms the connection had not subscribed.
    foreign: AtomicU64,
    sends_skipped: AtomicU64,
}

impl Shared {
    fn seq_max(&self, room: usize) -> u64 {
        self.room_heads[room] + self.sent[room].load(Relaxed)
    }

    async fn post(
        &self,
        client: &Client,
        stripe: usize,
        publisher: u32,
        counter: u64,
        room: usize,
    ) -> bool {
        let stamp = Stamp {
            publisher,
            counter,
            sent_us: now_us(),
        };
        let text = payload::encode(stamp, self.size);
        let id = format!("{}-{publisher}-{counter}", self.run_id);
        self.sent[room].fetch_add(1, Relaxed);
        lock(&self.book)
            .pending
            .insert((publisher, counter), (room, stamp));
        let result = client
            .post_with_id(&self.room_names[room], &text, &id, false)
            .await;
        let now = now_us();
        {
            let mut book = lock(&self.book);
            book.pending.remove(&(publisher, counter));
            if let Err(e) = &result {
                book.failed.push((room, stamp));
                *book.errors.entry(setup::error_kind(e)).or_default() += 1;
            }
        }
        let Ok(posted) = result else {
            return false;
        };
        let seq = posted.seq.0;
        self.recorder.ack(stripe, stamp.sent_us, now);
        lock(&self.ack_gap).ack(now);
        let acked = lock(&self.ledgers[room]).ack(seq, stamp, self.seq_max(room));
        match acked {
            Ok(()) => {
                self.acked_max[room].fetch_max(seq, Relaxed);
            }
            Err(e) => {
                if self.ack_conflicts.fetch_add(1, Relaxed) >= ACK_CONFLICTS_SHOWN {
                    return true;
                }
                let e = match e {
                    AckError::Conflict { previous } => format!("already acknowledged {previous:?}"),
                    AckError::OutOfRange => "beyond any post sent".into(),
                };
                eprintln!(
                    "audit: post {stamp:?} acknowledged at {}#{seq}: {e}",
                    self.room_names[room]
                );
            }
        }
        true
    }

    /// One message received by a member connection.
    fn receive(&self, subs: &mut [Member], m: Message, stripe: usize) {
        let now = now_us();
        let Some(sub) = subs.iter_mut().find(|s| self.room_names[s.room] == m.room) else {
            self.foreign.fetch_add(1, Relaxed);
            return;
        };
        let seq = m.seq.0;
        if sub.track.deliver(seq) == Delivery::Duplicate {
            return;
        }
        self.progress[sub.index].store(sub.track.contiguous(), Relaxed);
        let stamp = if m.author == self.author {
            payload::decode(&m.text, self.size)
        } else {
            None
        };
        let room = sub.room;
        if lock(&self.ledgers[room]).deliver(seq, stamp, self.seq_max(room)) {
            self.received_max[room].fetch_max(seq, Relaxed);
        }
        self.recorder
            .delivery(stripe, now, stamp.map(|s| s.sent_us));
    }

    /// Whether every subscription has received its room up to the room's last known seq.
    fn drained(&self) -> bool {
        let last: Vec<u64> = (0..self.room_names.len())
            .map(|r| {
                self.acked_max[r]
                    .load(Relaxed)
                    .max(self.received_max[r].load(Relaxed))
            })
            .collect();
        self.progress
            .iter()
            .zip(&self.sub_room)
            .all(|(p, &r)| p.load(Relaxed) >= last[r])
    }
}

/// One (member connection, room) subscription, owned by its receiver task.
struct Member {
    room: usize,
    /// Index into `Shared::progress`.
    index: usize,
    track: Subscription,
}

/// What a receiver hands back when stopped.
#[derive(Default)]
struct ReceiverEnd {
    subs: Vec<(usize, Subscription)>,
    /// The event stream ended before the stop: the client gave up.
    stream_ended: bool,
}

async fn receiver(
    sh: Arc<Shared>,
    user: usize,
    client: Client,
    rooms: Vec<usize>,
    gate: Arc<Semaphore>,
    ready: oneshot::Sender<Result<()>>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverEnd {
    let Some(mut events) = client.events() else {
        let _ = ready.send(Err(anyhow!("user {user}: event stream already taken")));
        return ReceiverEnd::default();
    };
    let mut subs = Vec::with_capacity(rooms.len());
    for (k, room) in rooms.into_iter().enumerate() {
        let _permit = gate.acquire().await;
        match client.subscribe(&sh.room_names[room], None).await {
            Ok(start) => {
                let index = user * sh.rooms_per_user + k;
                sh.progress[index].store(start.0, Relaxed);
                subs.push(Member {
                    room,
                    index,
                    track: Subscription::new(start.0),
                });
            }
            Err(e) => {
                let _ = ready
                    .send(Err(e).with_context(|| {
                        format!("user {user}: subscribe {}", sh.room_names[room])
                    }));
                return ReceiverEnd::default();
            }
        }
    }
    let _ = ready.send(Ok(()));
    let mut stream_ended = false;
    // One stop future for the whole loop: a new one per message registers a new waiter each time.
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            m = events.next() => match m {
                Some(m) => sh.receive(&mut subs, m, user),
                None => {
                    stream_ended = true;
                    break;
                }
            },
        }
    }
    ReceiverEnd {
        subs: subs.into_iter().map(|m| (m.room, m.track)).collect(),
        stream_ended,
    }
}

/// A publisher's next post: its counter and a room of its own, drawn with its seeded RNG.
struct Publisher {
    counter: u64,
    rng: StdRng,
    rooms: Vec<usize>,
}

impl Publisher {
    fn new(index: usize, seed: u64, rooms: Vec<usize>) -> Self {
        let seed = seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Publisher {
            counter: 0,
            rng: StdRng::seed_from_u64(seed),
            rooms,
        }
    }

    fn next(&mut self) -> (u64, usize) {
        let c = self.counter;
        self.counter += 1;
        (c, self.rooms[self.rng.gen_range(0..self.rooms.len())])
    }
}

/// When things happen, as instants (for sleeping) and µs since the epoch (for the phases).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    pub start_us: u64,
}

impl Clock {
    pub fn at(&self, after: Duration) -> Instant {
        self.start + after
    }

    pub fn us(&self, after: Duration) -> u64 {
        self.start_us + after.as_micros() as u64
    }

    pub fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// CPU seconds of the load generator and of each node, and the clients' QUIC counters, at one
/// moment.
#[derive(Debug, Clone, Default)]
pub struct Mark {
    pub loadgen_s: f64,
    pub nodes_s: Vec<f64>,
    pub clients: TransportStats,
    /// Each embedded node's counters (`None`: not embedded, or the node did not answer).
    pub node_counters: Vec<Option<NodeCounters>>,
}

/// The embedded cluster's processes and their figures, shared with the ticker.
#[derive(Clone)]
struct Nodes {
    cluster: Option<Arc<Mutex<ProcCluster>>>,
    stats: Arc<Mutex<NodeStats>>,
}

impl Nodes {
    fn observe(&self) {
        if let Some(c) = &self.cluster {
            let pids = lock(c).pids();
            lock(&self.stats).observe(&pids);
        }
    }

    /// The samples first, at the bound itself; then the nodes' metrics, all at once (each
    /// scrape may take up to its timeout).
    async fn mark(&self, clients: &[Client]) -> Mark {
        self.observe();
        let mut mark = Mark {
            node_counters: Vec::new(),
            loadgen_s: procstat::sample_self().map_or(0.0, |s| s.cpu_s),
            nodes_s: lock(&self.stats).cpu_s(),
            clients: clients
                .iter()
                .filter_map(Client::transport_stats)
                .fold(TransportStats::default(), |sum, s| sum.add(&s)),
        };
        let endpoints = self
            .cluster
            .as_ref()
            .map(|c| lock(c).metrics.clone())
            .unwrap_or_default();
        mark.node_counters =
            futures::future::join_all(endpoints.into_iter().map(scrape::scrape)).await;
        mark
    }
}

/// What the embedded nodes' memory grew by while the load connected and subscribed, and the
/// connections each then had (empty with `--servers`).
#[derive(Debug, Clone, Default)]
pub struct ConnectionMemory {
    pub rss_before_kb: Vec<Option<u64>>,
    pub rss_after_kb: Vec<Option<u64>>,
    pub connections: Vec<Option<u64>>,
}

impl ConnectionMemory {
    async fn measure(target: &Target, rss_before_kb: Vec<Option<u64>>) -> ConnectionMemory {
        let rss_after_kb = nodes_rss_kb(target);
        let endpoints = target
            .cluster_handle()
            .map(|c| lock(&c).metrics.clone())
            .unwrap_or_default();
        let connections =
            futures::future::join_all(endpoints.into_iter().map(scrape::client_connections)).await;
        ConnectionMemory {
            rss_before_kb,
            rss_after_kb,
            connections,
        }
    }

    /// KiB of resident memory per connection on each node (growth over connections).
    pub fn per_connection_kb(&self) -> Vec<Option<f64>> {
        self.rss_before_kb
            .iter()
            .zip(&self.rss_after_kb)
            .zip(&self.connections)
            .map(|((b, a), c)| {
                let (b, a, c) = ((*b)?, (*a)?, (*c)?);
                // Memory that shrank (a node returning pages) says nothing per connection.
                (c > 0 && a >= b).then(|| (a - b) as f64 / c as f64)
            })
            .collect()
    }
}

/// Each embedded node's resident memory now (KiB; `None` for a stopped node).
fn nodes_rss_kb(target: &Target) -> Vec<Option<u64>> {
    let Some(cluster) = target.cluster_handle() else {
        return Vec::new();
    };
    let pids = lock(&cluster).pids();
    pids.into_iter()
        .map(|pid| procstat::sample(pid?).map(|s| s.rss_kb))
        .collect()
}

/// A run in progress.
pub struct Load {
    pub shared: Arc<Shared>,
    pub clock: Clock,
    warmup: Duration,
    duration: Duration,
    event_at: Option<Duration>,
    drain_timeout: Duration,
    pub clients: Vec<Client>,
    endpoints: Vec<Endpoint>,
    pub notes: Vec<String>,
    pub author: String,
    receivers: JoinSet<ReceiverEnd>,
    stop_receivers: watch::Sender<bool>,
    publishers: JoinSet<()>,
    stop_posting: watch::Sender<bool>,
    ticker: tokio::task::JoinHandle<Vec<Tick>>,
    stop_ticker: watch::Sender<bool>,
    marks: tokio::task::JoinHandle<(Mark, Mark)>,
    nodes: Nodes,
    connection_memory: ConnectionMemory,
}

/// Everything a finished run measured.
pub struct Finished {
    pub totals: Totals,
    pub timeline: Timeline,
    pub findings: Findings,
    pub ledgers: Vec<RoomLedger>,
    pub room_names: Vec<String>,
    /// Bytes of every post.
    pub size: usize,
    pub posts_failed: u64,
    pub post_errors: BTreeMap<String, u64>,
    pub sends_skipped: u64,
    pub ack_conflicts: u64,
    pub streams_ended: u64,
    pub drain_s: f64,
    pub drained: bool,
    pub ack_gap_max_ms: f64,
    /// Seconds after the load started at which the longest acknowledgement gap ended.
    pub ack_gap_end_s: f64,
    pub measured_s: f64,
    /// Rates of every progress interval.
    pub ticks: Vec<Tick>,
    /// Datagrams the kernel dropped (receive buffer full) on the load generator's sockets.
    pub loadgen_udp_drops: u64,
    /// Likewise on each embedded node's socket.
    pub server_udp_drops: Vec<u64>,
    pub measured_bounds: (Mark, Mark),
    pub notes: Vec<String>,
    pub author: String,
    pub clock: Clock,
    pub connection_memory: ConnectionMemory,
}

impl Load {
    /// Sets up users, rooms, connections and subscriptions, then starts posting. `event_at`:
    /// seconds into the measured period at which the caller will act (W2/W3); it splits the
    /// measured period in two phases.
    pub async fn start(
        target: &Target,
        args: &LoadArgs,
        event_at: Option<Duration>,
    ) -> Result<Load> {
        let run_id = format!("{}", now_us() / 1000);
        eprintln!(
            "setup: user, {} rooms, {} connections ({} rooms each)",
            args.rooms, args.users, args.rooms_per_user
        );
        let prepared = setup::prepare(target, args.run.seed, args.rooms, &run_id).await?;
        for n in &prepared.notes {
            eprintln!("note: {n}");
        }
        let members =
            setup::memberships(args.users, args.rooms, args.rooms_per_user, args.run.seed);
        let phases = if event_at.is_some() { 4 } else { 3 };
        let subs = args.users * args.rooms_per_user;
        let shared = Arc::new(Shared {
            size: args.run.size,
            author: prepared.author.clone(),
            run_id,
            rooms_per_user: args.rooms_per_user,
            ledgers: prepared
                .room_heads
                .iter()
                .map(|&h| Mutex::new(RoomLedger::new(h)))
                .collect(),
            sent: (0..args.rooms).map(|_| AtomicU64::new(0)).collect(),
            acked_max: prepared
                .room_heads
                .iter()
                .map(|&h| AtomicU64::new(h))
                .collect(),
            received_max: prepared
                .room_heads
                .iter()
                .map(|&h| AtomicU64::new(h))
                .collect(),
            progress: (0..subs).map(|_| AtomicU64::new(0)).collect(),
            sub_room: members.iter().flatten().copied().collect(),
            room_names: prepared.room_names.clone(),
            room_heads: prepared.room_heads.clone(),
            recorder: Recorder::new(phases),
            book: Mutex::default(),
            ack_gap: Mutex::default(),
            ack_conflicts: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            sends_skipped: AtomicU64::new(0),
        });

        let mut endpoints = Vec::new();
        let mut granted = 0;
        for _ in 0..args.endpoints.min(args.users) {
            let (e, bytes) = setup::endpoint(args.run.socket_buffer_kib * 1024)?;
            endpoints.push(e);
            granted = bytes;
        }
        let mut notes = prepared.notes;
        if granted < args.run.socket_buffer_kib * 1024 {
            notes.push(format!(
                "client UDP receive buffers are {} KiB, not the {} KiB asked \
                 (net.core.rmem_max caps them)",
                granted / 1024,
                args.run.socket_buffer_kib
            ));
        }
        let rss_before_kb = nodes_rss_kb(target);
        let connected = Instant::now();
        let clients = timeout(
            SETUP_TIMEOUT,
            setup::connect_users(
                target,
                &prepared.token,
                args.users,
                &endpoints,
                args.run.connect_concurrency,
            ),
        )
        .await
        .map_err(|_| anyhow!("connections not all up within {SETUP_TIMEOUT:?}"))??;
        eprintln!(
            "setup: {} connections in {:.1} s",
            clients.len(),
            connected.elapsed().as_secs_f64()
        );

        let subscribed = Instant::now();
        let (stop_receivers, stop_rx) = watch::channel(false);
        let gate = Arc::new(Semaphore::new(args.run.connect_concurrency));
        let mut receivers = JoinSet::new();
        let mut ready = Vec::with_capacity(args.users);
        for (user, rooms) in members.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            ready.push(rx);
            receivers.spawn(receiver(
                shared.clone(),
                user,
                clients[user].clone(),
                rooms.clone(),
                gate.clone(),
                tx,
                stop_rx.clone(),
            ));
        }
        let all_ready = async {
            for rx in ready {
                rx.await
                    .map_err(|_| anyhow!("a receiver ended during setup"))??;
            }
            anyhow::Ok(())
        };
        timeout(SETUP_TIMEOUT, all_ready)
            .await
            .map_err(|_| anyhow!("subscriptions not all made within {SETUP_TIMEOUT:?}"))??;
        eprintln!(
            "setup: {subs} subscriptions in {:.1} s",
            subscribed.elapsed().as_secs_f64()
        );
        let connection_memory = ConnectionMemory::measure(target, rss_before_kb).await;

        // The load starts now.
        let clock = Clock {
            start: Instant::now(),
            start_us: now_us(),
        };
        let warmup = args.warmup();
        let duration = args.duration();
        let mut bounds = vec![clock.us(warmup)];
        bounds.extend(event_at.map(|e| clock.us(warmup + e)));
        bounds.push(clock.us(warmup + duration));
        shared.recorder.start(Timeline::new(bounds));
        {
            let mut gap = lock(&shared.ack_gap);
            gap.from_us = clock.us(warmup);
            gap.to_us = clock.us(warmup + duration);
        }

        let (stop_posting, stop_post_rx) = watch::channel(false);
        let publishers = spawn_publishers(&shared, &clients, &members, args, clock, stop_post_rx);

        let nodes = Nodes {
            cluster: target.cluster_handle(),
            stats: Arc::new(Mutex::new(NodeStats::default())),
        };
        let (stop_ticker, stop_tick_rx) = watch::channel(false);
        let ticker = tokio::spawn(progress(
            shared.clone(),
            clock,
            warmup,
            duration,
            nodes.clone(),
            stop_tick_rx,
        ));
        let marks = {
            let nodes = nodes.clone();
            let clients = clients.clone();
            tokio::spawn(async move {
                sleep_until(clock.at(warmup)).await;
                let begin = nodes.mark(&clients).await;
                sleep_until(clock.at(warmup + duration)).await;
                (begin, nodes.mark(&clients).await)
            })
        };
        Ok(Load {
            shared,
            clock,
            warmup,
            duration,
            event_at,
            drain_timeout: args.drain_timeout(),
            clients,
            endpoints,
            notes,
            author: prepared.author,
            receivers,
            stop_receivers,
            publishers,
            stop_posting,
            ticker,
            stop_ticker,
            marks,
            nodes,
            connection_memory,
        })
    }

    /// Waits until the event time (now if there is none).
    pub async fn event(&self) {
        if let Some(e) = self.event_at {
            sleep_until(self.clock.at(self.warmup + e)).await;
        }
    }

    /// Reads the node processes now (before a kill, so the killed process's CPU is kept).
    pub fn observe_nodes(&self) {
        self.nodes.observe();
    }

    /// Datagrams dropped by the kernel on the load generator's sockets (sum) and on each
    /// embedded node's socket (a stopped node: 0).
    fn udp_drops(&self) -> (u64, Vec<u64>) {
        let ports: Vec<u16> = self
            .endpoints
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .map(|a| a.port())
            .collect();
        let mine = procstat::udp_drops(&ports).into_iter().flatten().sum();
        let node_ports: Vec<u16> = self
            .nodes
            .cluster
            .as_ref()
            .map(|c| lock(c).addrs.iter().map(|a| a.port()).collect())
            .unwrap_or_default();
        let nodes = procstat::udp_drops(&node_ports)
            .into_iter()
            .map(|d| d.unwrap_or(0))
            .collect();
        (mine, nodes)
    }

    /// Ends the run: stops posting at the end of the measured period, drains, audits.
    pub async fn finish(mut self) -> Result<(Finished, NodeStats)> {
        sleep_until(self.clock.at(self.warmup + self.duration)).await;
        let _ = self.stop_posting.send(true);
        let stopped = Instant::now();
        if timeout(POSTS_IN_FLIGHT_WAIT, drain_set(&mut self.publishers))
            .await
            .is_err()
        {
            eprintln!("posts still in flight after {POSTS_IN_FLIGHT_WAIT:?}: abandoned");
            self.publishers.abort_all();
            drain_set(&mut self.publishers).await;
        }
        let drain_deadline = Instant::now() + self.drain_timeout;
        let drained = loop {
            if self.shared.drained() {
                break true;
            }
            if Instant::now() >= drain_deadline {
                break false;
            }
            sleep(DRAIN_POLL).await;
        };
        let drain_s = stopped.elapsed().as_secs_f64();
        let _ = self.stop_receivers.send(true);
        let mut subs = Vec::new();
        let mut streams_ended = 0;
        let collected = timeout(RECEIVERS_STOP_WAIT, async {
            while let Some(end) = self.receivers.join_next().await {
                // A receiver that panicked took its subscriptions with it: no audit without them.
                let end = end.map_err(|e| anyhow!("a receiver failed: {e}"))?;
                streams_ended += u64::from(end.stream_ended);
                subs.extend(end.subs);
            }
            anyhow::Ok(())
        })
        .await;
        match collected {
            Ok(r) => r?,
            Err(_) => {
                self.receivers.abort_all();
                return Err(anyhow!(
                    "receivers did not stop within {RECEIVERS_STOP_WAIT:?}"
                ));
            }
        }
        let _ = self.stop_ticker.send(true);
        let ticks = (&mut self.ticker).await.unwrap_or_default();
        let measured_bounds = (&mut self.marks).await.unwrap_or_default();
        self.nodes.observe();
        let drops = self.udp_drops();
        for c in &self.clients {
            c.close().await;
        }
        for e in &self.endpoints {
            e.close(0u32.into(), b"load done");
        }
        for e in &self.endpoints {
            let _ = timeout(Duration::from_secs(2), e.wait_idle()).await;
        }

        let sh = &self.shared;
        let ledgers: Vec<RoomLedger> = sh
            .ledgers
            .iter()
            .zip(&sh.room_heads)
            .map(|(l, &h)| std::mem::replace(&mut *lock(l), RoomLedger::new(h)))
            .collect();
        let book = std::mem::take(&mut *lock(&sh.book));
        let mut unacked = book.failed.clone();
        unacked.extend(book.pending.values().copied());
        let mut findings = audit::finish(&ledgers, &unacked, subs.iter().map(|(r, s)| (*r, s)));
        findings.phantom += sh.foreign.load(Relaxed);
        let (gap_us, gap_end_us) = lock(&sh.ack_gap).longest();
        let finished = Finished {
            totals: sh.recorder.totals(),
            timeline: sh
                .recorder
                .timeline()
                .cloned()
                .expect("the timeline is set when the load starts"),
            findings,
            ledgers,
            room_names: sh.room_names.clone(),
            size: sh.size,
            posts_failed: book.failed.len() as u64 + book.pending.len() as u64,
            post_errors: book.errors,
            sends_skipped: sh.sends_skipped.load(Relaxed),
            ack_conflicts: sh.ack_conflicts.load(Relaxed),
            streams_ended,
            drain_s,
            drained,
            ack_gap_max_ms: gap_us as f64 / 1000.0,
            ack_gap_end_s: gap_end_us.saturating_sub(self.clock.start_us) as f64 / 1e6,
            measured_s: self.duration.as_secs_f64(),
            ticks,
            loadgen_udp_drops: drops.0,
            server_udp_drops: drops.1,
            measured_bounds,
            notes: self.notes.clone(),
            author: self.author.clone(),
            clock: self.clock,
            connection_memory: self.connection_memory.clone(),
        };
        let stats = lock(&self.nodes.stats).clone();
        Ok((finished, stats))
    }
}

async fn drain_set<T: 'static>(set: &mut JoinSet<T>) {
    while set.join_next().await.is_some() {}
}

fn spawn_publishers(
    shared: &Arc<Shared>,
    clients: &[Client],
    members: &[Vec<usize>],
    args: &LoadArgs,
    clock: Clock,
    stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let count = args.publishers;
    for p in 0..count {
        let state = Arc::new(Mutex::new(Publisher::new(
            p,
            args.run.seed,
            members[p].clone(),
        )));
        let client = clients[p].clone();
        match args.rate_target() {
            None => {
                for lane in 0..args.in_flight {
                    let (sh, client, state) = (shared.clone(), client.clone(), state.clone());
                    let stop = stop.clone();
                    set.spawn(async move {
                        let stripe = p * 31 + lane;
                        while !*stop.borrow() {
                            let (counter, room) = lock(&state).next();
                            if !sh.post(&client, stripe, p as u32, counter, room).await {
                                sleep(FAILED_POST_PAUSE).await;
                            }
                        }
                    });
                }
            }
            Some(rate) => {
                let period = Duration::from_secs_f64(count as f64 / rate);
                let first = clock.start + period.mul_f64(p as f64 / count as f64);
                set.spawn(open_loop(
                    shared.clone(),
                    client,
                    p,
                    state,
                    period,
                    first,
                    stop.clone(),
                ));
            }
        }
    }
    set
}

/// One publisher at a fixed rate: a post every `period` from `first`, whatever the answers do.
async fn open_loop(
    sh: Arc<Shared>,
    client: Client,
    p: usize,
    state: Arc<Mutex<Publisher>>,
    period: Duration,
    first: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = first;
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        next += period;
        let now = Instant::now();
        if now > next + OPEN_LOOP_LATE_MAX {
            let missed = ((now - next).as_secs_f64() / period.as_secs_f64()) as u64;
            sh.sends_skipped.fetch_add(missed, Relaxed);
            next += period.mul_f64(missed as f64);
        }
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= OPEN_LOOP_IN_FLIGHT_MAX {
            sh.sends_skipped.fetch_add(1, Relaxed);
            continue;
        }
        let (counter, room) = lock(&state).next();
        let (sh, client) = (sh.clone(), client.clone());
        in_flight.spawn(async move {
            sh.post(&client, p, p as u32, counter, room).await;
        });
    }
    drain_set(&mut in_flight).await;
}

/// One progress interval: when it ended (seconds after the load started) and its rates.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub t_s: f64,
    pub posts_per_s: f64,
    pub deliveries_per_s: f64,
    pub p99_ms: f64,
}

/// The progress line every 500 ms: phase, posts/s, deliveries/s, p99 of the interval. Also reads
/// the node processes.
async fn progress(
    sh: Arc<Shared>,
    clock: Clock,
    warmup: Duration,
    duration: Duration,
    nodes: Nodes,
    mut stop: watch::Receiver<bool>,
) -> Vec<Tick> {
    let mut ticks = Vec::new();
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    let mut last = Instant::now();
    let mut last_line = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let i = sh.recorder.take_interval();
        let secs = last.elapsed().as_secs_f64().max(1e-3);
        last = Instant::now();
        let t = clock.start.elapsed();
        let phase = if t < warmup {
            "warm-up"
        } else if t < warmup + duration {
            "measure"
        } else {
            "drain"
        };
        let msg = format!(
            "{phase:<7} {:6.1} s  posts/s {:>9.0}  deliveries/s {:>10.0}  p99 {:>8.2} ms",
            t.as_secs_f64(),
            i.acks as f64 / secs,
            i.deliveries as f64 / secs,
            quantile_ms(&i.latency, 0.99),
        );
        if ticks.len() < TICKS_MAX {
            ticks.push(Tick {
                t_s: r3(t.as_secs_f64()),
                posts_per_s: r3(i.acks as f64 / secs),
                deliveries_per_s: r3(i.deliveries as f64 / secs),
                p99_ms: r3(quantile_ms(&i.latency, 0.99)),
            });
        }
        bar.set_message(msg.clone());
        bar.tick();
        if !tty && last_line.elapsed() >= PROGRESS_LINE_EVERY {
            eprintln!("{msg}");
            last_line = Instant::now();
        }
        nodes.observe();
    }
    bar.finish_and_clear();
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_gap_counts_from_the_measured_period_and_tolerates_races() {
        let mut g = AckGap::default();
        g.ack(50); // before the load starts: ignored
        g.from_us = 1_000;
        g.to_us = 3_000;
        g.ack(900); // warm-up: ignored
        g.ack(1_300);
        g.ack(1_250); // raced: earlier than the last, no gap
        g.ack(1_400);
        assert_eq!((g.max_us, g.max_end_us, g.last_us), (300, 1_300, 1_400));
        g.ack(2_000);
        assert_eq!((g.max_us, g.max_end_us), (600, 2_000));
        g.ack(5_000); // after the measured period: ignored
        assert_eq!((g.max_us, g.last_us), (600, 2_000));
        assert_eq!(g.longest(), (1_000, 3_000), "silence until the end counts");
    }

    #[test]
    fn publishers_draw_their_own_rooms_reproducibly() {
        let draw = |seed| {
            let mut p = Publisher::new(3, seed, vec![4, 8, 15]);
            (0..50).map(|_| p.next()).collect::<Vec<_>>()
        };
        let a = draw(1);
        assert_eq!(a, draw(1));
        assert_ne!(a, draw(2));
        assert!(a.iter().enumerate().all(|(i, &(c, _))| c == i as u64));
        assert!(a.iter().all(|&(_, r)| [4, 8, 15].contains(&r)));
    }
}
