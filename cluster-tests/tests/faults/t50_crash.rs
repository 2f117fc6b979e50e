use cluster_tests::history::History;
use cluster_tests::workload::{hold, Workload};
use cluster_tests::{init_tracing, TestCluster};
use std::time::Duration;
use tracing::info;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_shard_leader_crash_under_concurrent_load() {
    init_tracing();
    let mut tc = TestCluster::start(3).await;
    let rooms = tc.rooms(&["r1", "r2"]).await;
    let history = History::new();

    info!("--- four clients post to three rooms through every node; one follows all rooms");
    let mut clients = Vec::new();
    for k in 0..4 {
        clients.push(
            tc.recorded(&history, &format!("p{k}"), tc.servers_from(k))
                .await,
        );
    }
    let follower = tc.recorded(&history, "follower", tc.servers()).await;
    let room_refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
    follower.follow(&room_refs).await;
    let workload = Workload::start(&clients, &rooms, 1, 0..20);
    hold(&history, SECOND, 20, "posts acknowledged before the crash").await;

    let leader = tc
        .shard_leader("lobby")
        .expect("lobby's shard has a leader");
    info!(
        node = leader + 1,
        "--- the leader of lobby's shard stops mid-load"
    );
    tc.stop(leader).await;
    hold(
        &history,
        2 * SECOND,
        20,
        "posts acknowledged by the two survivors",
    )
    .await;

    info!(
        node = leader + 1,
        "--- it restarts on its data and catches up"
    );
    tc.restart(leader).await;
    hold(
        &history,
        SECOND,
        20,
        "posts acknowledged with all three back",
    )
    .await;

    let mut all = clients.clone();
    all.push(follower);
    tc.finish(&history, Some(workload), &all, &rooms).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_one_node_restarted_again_and_again_under_load() {
    init_tracing();
    let mut tc = TestCluster::start(3).await;
    let rooms = tc.rooms(&["r1"]).await;
    let history = History::new();
    let mut clients = Vec::new();
    for k in 0..3 {
        clients.push(
            tc.recorded(&history, &format!("p{k}"), tc.servers_from(k))
                .await,
        );
    }
    let follower = tc.recorded(&history, "follower", tc.servers()).await;
    follower.follow(&["lobby", "r1"]).await;
    let workload = Workload::start(&clients, &rooms, 2, 0..20);
    hold(
        &history,
        SECOND,
        20,
        "posts acknowledged before the restarts",
    )
    .await;

    let victim = tc.shard_leader("lobby").expect("leader");
    for round in 0..4 {
        info!(
            round,
            node = victim + 1,
            "--- stop the node, post without it, start it again"
        );
        tc.stop(victim).await;
        hold(
            &history,
            SECOND / 2,
            5,
            "posts acknowledged while it is down",
        )
        .await;
        tc.restart(victim).await;
        hold(
            &history,
            SECOND / 2,
            5,
            "posts acknowledged after it is back",
        )
        .await;
    }

    let mut all = clients.clone();
    all.push(follower);
    tc.finish(&history, Some(workload), &all, &rooms).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_full_cluster_power_cycle_under_load() {
    init_tracing();
    let mut tc = TestCluster::start(3).await;
    let rooms = tc.rooms(&["r1"]).await;
    let history = History::new();
    let mut clients = Vec::new();
    for k in 0..3 {
        // Clients keep reconnecting and retrying through the whole outage.
        let c = tc
            .recorded_with(&history, &format!("p{k}"), tc.servers_from(k), |cfg| {
                cfg.retry_deadline = Duration::from_secs(60);
            })
            .await;
        clients.push(c);
    }
    let workload = Workload::start(&clients, &rooms, 3, 0..20);
    hold(
        &history,
        2 * SECOND,
        50,
        "posts acknowledged before the power cut",
    )
    .await;

    info!("--- every node stops at once (posts in flight get unknown outcomes), then all start");
    for i in 0..3 {
        tc.stop(i).await;
    }
    for i in 0..3 {
        tc.restart(i).await;
    }
    tc.cluster
        .ready(Duration::from_secs(30))
        .await
        .expect("ready again");

    info!("--- posting resumes, and every post acknowledged before the cut is still there");
    hold(
        &history,
        SECOND,
        20,
        "posts acknowledged after the power cycle",
    )
    .await;
    tc.finish(&history, Some(workload), &clients, &rooms).await;
    tc.shutdown().await;
}
