//! The seeded randomized test: a recorded client workload on three nodes while faults chosen
//! from a seed come and go (stop and restart a node, isolate a node, cut one direction between
//! two nodes, slow a node's calls down, lose a fraction of a node's calls, heal), for
//! `STOA_RANDOM_SECS` seconds (10 by default). At the end every fault is healed, the cluster must
//! make progress again, and the history checker must pass.
//!
//! The seed fixes the schedule of faults and the workload's choices; thread scheduling still
//! varies, so a replay repeats the scenario, not every interleaving.

use cluster_tests::history::History;
use cluster_tests::workload::{hold, Workload};
use cluster_tests::{init_tracing, seed, TestCluster};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tracing::info;

const REPLAY: &str = "cargo test -p cluster-tests --test faults random";

#[derive(Debug, Clone, Copy)]
enum Fault {
    Stop(usize),
    Restart(usize),
    Isolate(usize),
    OneWay(usize, usize),
    Delay(usize, Duration),
    Drop(usize, f64, u64),
    Heal,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t60_random_faults_under_load() {
    init_tracing();
    let seed = seed("t60_random_faults_under_load", REPLAY);
    let secs: u64 = std::env::var("STOA_RANDOM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tc = TestCluster::start(3).await;
    let rooms = tc.rooms(&["r1", "r2"]).await;
    let history = History::new();

    info!(secs, "--- four posters and two followers on three rooms");
    let mut clients = Vec::new();
    for k in 0..4 {
        let c = tc
            .recorded_with(&history, &format!("p{k}"), tc.servers_from(k), |cfg| {
                cfg.retry_deadline = Duration::from_secs(60);
            })
            .await;
        clients.push(c);
    }
    let room_refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let mut followers = Vec::new();
    for k in 0..2 {
        let f = tc
            .recorded_with(&history, &format!("f{k}"), tc.servers_from(k + 1), |cfg| {
                cfg.retry_deadline = Duration::from_secs(60);
            })
            .await;
        f.follow(&room_refs).await;
        followers.push(f);
    }
    let workload = Workload::start(&clients, &rooms, seed, 0..30);

    let start = Instant::now();
    let mut step = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let fault = pick(&mut rng, &tc);
        info!(step, ?fault, "--- fault");
        match fault {
            Fault::Stop(i) => tc.stop(i).await,
            Fault::Restart(i) => tc.restart(i).await,
            Fault::Isolate(i) => tc.isolate(i),
            Fault::OneWay(a, b) => tc.block(a, b),
            Fault::Delay(i, d) => tc.set_delay(i, Some(d)),
            Fault::Drop(i, p, s) => tc.set_drop(i, p, s),
            Fault::Heal => tc.heal(),
        }
        step += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
    }

    info!("--- heal everything and restart stopped nodes: the cluster must make progress again");
    tc.heal();
    for i in 0..tc.len() {
        if !tc.is_running(i) {
            tc.restart(i).await;
        }
    }
    hold(
        &history,
        Duration::from_secs(1),
        20,
        "posts acknowledged after healing",
    )
    .await;

    let mut all = clients.clone();
    all.extend(followers);
    let summary = tc.finish(&history, Some(workload), &all, &rooms).await;
    info!(seed, steps = step, %summary, "--- passed");
    tc.shutdown().await;
}

/// The next fault. At most one node is stopped at a time, so a majority can always be reached
/// once partitions heal.
fn pick(rng: &mut impl Rng, tc: &TestCluster) -> Fault {
    let n = tc.len();
    if let Some(stopped) = (0..n).find(|&i| !tc.is_running(i)) {
        if rng.gen_bool(0.5) {
            return Fault::Restart(stopped);
        }
    }
    let node = rng.gen_range(0..n);
    match rng.gen_range(0..10) {
        0 | 1 if tc.running().len() == n => Fault::Stop(node),
        2 | 3 => Fault::Isolate(node),
        4 => Fault::OneWay(node, (node + rng.gen_range(1..n)) % n),
        5 => Fault::Delay(node, Duration::from_millis(rng.gen_range(5..200))),
        6 => Fault::Drop(node, rng.gen_range(0.05..0.3), rng.gen()),
        _ => Fault::Heal,
    }
}
