//! Real processes: three `stoa-node run` processes, SIGKILLed one at a time at random moments
//! under a recorded workload and started again on their data; the history checker at the end.
//! Runs everywhere (no root needed); `t70_netns` adds real network partitions where it can.

use cluster_tests::history::History;
use cluster_tests::process::ProcCluster;
use cluster_tests::workload::{fault_tolerant, hold, Recorded, Workload};
use cluster_tests::{finish_with, init_tracing, seed};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use stoa_client::{Client, ClientConfig};
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_sigkill_real_processes_at_seeded_moments() {
    init_tracing();
    let seed = seed(
        "t50_sigkill_real_processes_at_seeded_moments",
        "cargo test -p cluster-tests --test faults t50_sigkill",
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pc = {
        cluster_tests::fresh_node_binary();
        ProcCluster::start_with(3, 2, "")
    };
    let token = pc.admin_token(Duration::from_secs(60));
    let (ca, servers) = (pc.ca_pem(), pc.servers());
    let connect = |servers: Vec<String>| {
        let mut cfg = ClientConfig::from_files(servers, token.clone(), &ca).expect("CA");
        fault_tolerant(&mut cfg);
        cfg.retry_deadline = Duration::from_secs(60);
        Client::connect(cfg)
    };
    let rotated =
        |k: usize| -> Vec<String> { (0..3).map(|j| servers[(k + j) % 3].clone()).collect() };

    let admin = connect(servers.clone()).await.expect("connect");
    let rooms = vec!["k1".to_string(), "k2".to_string()];
    for room in &rooms {
        admin.create_room(room, "").await.expect("create room");
    }
    admin.close().await;
    let history = History::new();
    let mut clients = Vec::new();
    for k in 0..3 {
        let c = connect(rotated(k)).await.expect("connect");
        clients.push(Recorded::new(&format!("p{k}"), c, "admin", &history));
    }
    let follower = Recorded::new(
        "follower",
        connect(rotated(2)).await.expect("connect"),
        "admin",
        &history,
    );
    follower.follow(&["k1", "k2"]).await;
    let workload = Workload::start(&clients, &rooms, seed, 0..20);
    hold(&history, Duration::from_secs(1), 20, "posts acknowledged").await;

    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
        let victim = rng.gen_range(0..3);
        info!(
            round,
            victim = victim + 1,
            "--- SIGKILL, then start it again on its data"
        );
        pc.kill9(victim);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1500))).await;
        pc.spawn(victim);
    }
    hold(
        &history,
        Duration::from_secs(1),
        20,
        "posts acknowledged after the kills",
    )
    .await;

    let mut nodes = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        nodes.push((
            i,
            connect(vec![s.clone()]).await.expect("connect to one node"),
        ));
    }
    let mut all = clients.clone();
    all.push(follower);
    finish_with(&nodes, &history, Some(workload), &all, &rooms).await;
}
