use cluster_tests::history::{History, Outcome};
use cluster_tests::workload::{fault_tolerant, hold, Recorded, Workload};
use cluster_tests::{eventually, init_tracing, TestCluster};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_isolated_leader_acknowledges_nothing_it_cannot_commit() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let rooms = tc.rooms(&[]).await;
    let history = History::new();
    let old = tc.shard_leader("lobby").expect("leader");
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();

    info!(
        node = old + 1,
        "--- a client attached only to lobby's shard leader, two on the others"
    );
    let lonely = {
        let client = tc
            .client_with(vec![tc.addr(old)], |cfg| {
                fault_tolerant(cfg);
                cfg.request_timeout = Duration::from_secs(2);
            })
            .await;
        Recorded::new("lonely", client, "admin", &history)
    };
    let majority: Vec<Arc<Recorded>> = vec![
        tc.recorded(&history, "m0", vec![tc.addr(others[0])]).await,
        tc.recorded(&history, "m1", vec![tc.addr(others[1])]).await,
    ];
    for _ in 0..3 {
        let (_, o) = lonely.post("lobby").await;
        assert!(
            matches!(o, Outcome::Acked(_)),
            "before the partition: {o:?}"
        );
    }
    let workload = Workload::start(&majority, &rooms, 4, 5..30);

    info!(
        node = old + 1,
        "--- the leader is cut off from both others, both ways"
    );
    tc.isolate(old);
    eventually(
        Duration::from_secs(20),
        "the majority elects another leader",
        || async {
            tc.shard_leader_seen_by(others[0], "lobby")
                .is_some_and(|l| l != old)
        },
    )
    .await;
    hold(
        &history,
        SECOND,
        10,
        "the majority keeps acknowledging posts",
    )
    .await;

    info!("--- the client of the old leader posts: none of it may be acknowledged");
    let attempts: Vec<_> = (0..3)
        .map(|_| {
            let lonely = lonely.clone();
            tokio::spawn(async move { lonely.post("lobby").await })
        })
        .collect();
    for a in attempts {
        let (text, outcome) = a.await.expect("post task");
        info!(text, ?outcome, "post through the isolated old leader");
        assert!(
            !matches!(outcome, Outcome::Acked(_)),
            "the isolated old leader acknowledged {text}: {outcome:?}"
        );
    }
    assert_eq!(history.acked(Some("lonely")), 3);

    info!("--- heal: the old leader rejoins as a follower and its client is served again");
    tc.heal();
    eventually(
        Duration::from_secs(30),
        "the old leader's client gets an acknowledgement again",
        || async { matches!(lonely.post("lobby").await.1, Outcome::Acked(_)) },
    )
    .await;

    let mut all = majority.clone();
    all.push(lonely);
    tc.finish(&history, Some(workload), &all, &rooms).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_minority_partitioned_for_a_while_catches_up() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let rooms = tc.rooms(&["r1"]).await;
    let history = History::new();
    let leader = tc.shard_leader("lobby").expect("leader");
    let minority = (leader + 1) % 3;
    let majority: Vec<String> = (0..3)
        .filter(|&i| i != minority)
        .map(|i| tc.addr(i))
        .collect();

    info!(
        node = minority + 1,
        "--- a follower of the minority node follows every room"
    );
    let watcher = tc
        .recorded(&history, "watcher", vec![tc.addr(minority)])
        .await;
    let room_refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
    watcher.follow(&room_refs).await;
    let mut posters = Vec::new();
    for k in 0..3 {
        posters.push(
            tc.recorded(&history, &format!("p{k}"), majority.clone())
                .await,
        );
    }
    let workload = Workload::start(&posters, &rooms, 5, 0..20);
    hold(&history, SECOND, 20, "posts before the partition").await;

    info!(
        node = minority + 1,
        "--- the minority node is partitioned off while posts go on"
    );
    tc.isolate(minority);
    hold(
        &history,
        3 * SECOND,
        50,
        "posts acknowledged by the majority",
    )
    .await;

    info!(
        node = minority + 1,
        "--- heal: it catches up, and its client sees every message"
    );
    tc.heal();
    hold(&history, SECOND, 20, "posts after the heal").await;
    let w = workload.stop().await;
    assert!(w.acked > 20, "{w:?}");
    eventually(
        Duration::from_secs(30),
        "the minority node and its client caught up",
        || async {
            for room in &rooms {
                let Ok((_, want)) = posters[0].client.history(room, None, None, 1).await else {
                    return false;
                };
                let Ok((_, have)) = watcher.client.history(room, None, None, 1).await else {
                    return false;
                };
                if have != want || watcher.client.last_seq(room) != Some(want) {
                    return false;
                }
            }
            true
        },
    )
    .await;

    let mut all = posters.clone();
    all.push(watcher);
    tc.finish(&history, None, &all, &rooms).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_one_way_partition_of_the_leader() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let rooms = tc.rooms(&["r1"]).await;
    let history = History::new();
    let mut posters = Vec::new();
    for k in 0..3 {
        posters.push(
            tc.recorded(&history, &format!("p{k}"), tc.servers_from(k))
                .await,
        );
    }
    let workload = Workload::start(&posters, &rooms, 6, 0..20);
    hold(&history, SECOND, 20, "posts before the partition").await;

    let leader = tc.shard_leader("lobby").expect("leader");
    info!(
        node = leader + 1,
        "--- the leader's calls to the others are lost; theirs reach it"
    );
    for other in (0..3).filter(|&i| i != leader) {
        tc.block(leader, other);
    }
    hold(
        &history,
        3 * SECOND,
        20,
        "posts acknowledged under the one-way partition",
    )
    .await;

    info!("--- heal");
    tc.heal();
    hold(&history, SECOND, 20, "posts after the heal").await;
    tc.finish(&history, Some(workload), &posters, &rooms).await;
    tc.shutdown().await;
}
