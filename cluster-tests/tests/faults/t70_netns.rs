//! Real processes, real network: three `stoa-node run` processes in network namespaces, the
//! network between them cut and mended while a recorded workload runs, and nodes killed with
//! SIGKILL and restarted. Root only (see `cluster_tests::netns`); elsewhere the test says it is
//! skipped and why, and passes.

use cluster_tests::history::History;
use cluster_tests::netns::NetnsCluster;
use cluster_tests::workload::{fault_tolerant, hold, Recorded, Workload};
use cluster_tests::{finish_with, init_tracing, seed};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use stoa_client::{Client, ClientConfig};
use tracing::info;

const SECOND: Duration = Duration::from_secs(1);

async fn client(nc: &NetnsCluster, token: &str, servers: Vec<String>) -> Client {
    let mut cfg = ClientConfig::from_files(servers, token, nc.ca_pem()).expect("CA");
    fault_tolerant(&mut cfg);
    cfg.retry_deadline = Duration::from_secs(60);
    Client::connect(cfg).await.expect("connect")
}

fn rotated(servers: &[String], k: usize) -> Vec<String> {
    (0..servers.len())
        .map(|j| servers[(k + j) % servers.len()].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t70_partitions_and_kill9_of_real_processes_in_network_namespaces() {
    init_tracing();
    let mut nc = match NetnsCluster::start(3, 2) {
        Ok(nc) => nc,
        Err(why) => {
            eprintln!("t70_netns: skipped: {why}");
            info!(why, "--- skipped");
            return;
        }
    };
    let seed = seed(
        "t70_netns",
        "cargo test -p cluster-tests --test faults t70_netns",
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let token = nc
        .admin_token(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let servers = nc.servers();
    info!(
        ?servers,
        "--- three nodes, each in its own network namespace"
    );
    let admin = client(&nc, &token, servers.clone()).await;
    let rooms = vec!["ns1".to_string(), "ns2".to_string()];
    for room in &rooms {
        admin.create_room(room, "").await.expect("create room");
    }
    admin.close().await;

    let history = History::new();
    let mut clients = Vec::new();
    for k in 0..3 {
        let c = client(&nc, &token, rotated(&servers, k)).await;
        clients.push(Recorded::new(&format!("p{k}"), c, "admin", &history));
    }
    let follower = Recorded::new(
        "follower",
        client(&nc, &token, rotated(&servers, 1)).await,
        "admin",
        &history,
    );
    follower.follow(&["ns1", "ns2"]).await;
    let workload = Workload::start(&clients, &rooms, seed, 0..30);
    hold(
        &history,
        SECOND,
        20,
        "posts acknowledged on the real network",
    )
    .await;

    for i in 0..3 {
        info!(
            node = i + 1,
            "--- node cut off from both others on the network, then mended"
        );
        nc.isolate(i);
        hold(
            &history,
            3 * SECOND,
            10,
            "the two others keep acknowledging posts",
        )
        .await;
        nc.heal();
        hold(&history, SECOND, 10, "posts acknowledged after the heal").await;
    }

    let victim = rng.gen_range(0..3);
    let other = (victim + 1 + rng.gen_range(0..2)) % 3;
    info!(
        victim = victim + 1,
        other = other + 1,
        "--- a cut between two nodes, then SIGKILL of one"
    );
    nc.cut(victim, other);
    hold(&history, SECOND, 10, "posts acknowledged across the cut").await;
    nc.kill9(victim);
    hold(
        &history,
        2 * SECOND,
        10,
        "posts acknowledged with one node dead",
    )
    .await;
    nc.heal();
    nc.spawn(victim);
    hold(
        &history,
        2 * SECOND,
        10,
        "posts acknowledged with the node back",
    )
    .await;

    let mut nodes = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        nodes.push((i, client(&nc, &token, vec![s.clone()]).await));
    }
    let mut all = clients.clone();
    all.push(follower);
    let summary = finish_with(&nodes, &history, Some(workload), &all, &rooms).await;
    info!(%summary, "--- passed");
}
