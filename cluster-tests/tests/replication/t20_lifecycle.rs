use cluster_tests::{
    assert_gap_free, eventually, full_history, init_tracing, try_full_history, words_in,
    TestCluster,
};
use std::time::Duration;
use tracing::info;

const ROOM: &str = "lobby";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_stopped_node_restarts_from_its_data_and_catches_up() {
    init_tracing();
    let mut tc = TestCluster::start(3).await;
    let c = tc.client(0).await;
    post_series(&c, "before", "b", 0..10).await;

    info!("--- node 3 stops; the two others keep committing");
    tc.cluster.stop(2).await;
    post_series(&c, "while down", "d", 0..30).await;

    info!("--- node 3 restarts on its data directory and catches up");
    tc.cluster.restart(2).await.expect("restart");
    let expected = full_history(&c, ROOM).await;
    assert_eq!(expected.len(), 40);
    let c3 = tc.client(2).await;
    eventually(
        Duration::from_secs(20),
        "node 3 has all 40 messages",
        || async {
            c3.history(ROOM, None, None, 500)
                .await
                .map(|(h, _)| h == expected)
                .unwrap_or(false)
        },
    )
    .await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_whole_cluster_restart_keeps_all_history() {
    init_tracing();
    let mut tc = TestCluster::start(3).await;
    let c = tc.client_all().await;
    for i in 0..25 {
        c.post_with_id(ROOM, &format!("m{i}"), &format!("p{i}"), false)
            .await
            .expect("post");
    }
    let before = full_history(&c, ROOM).await;
    drop(c);

    info!("--- every node stops, then all start again on their data");
    restart_every_node(&mut tc).await;

    info!("--- the history is intact on every node and posting continues at seq 26");
    assert_every_node_has(&tc, &before).await;
    let c = tc.client(1).await;
    let p = c
        .post_with_id(ROOM, "after", "after", false)
        .await
        .expect("post after restart");
    assert_eq!(p.seq.0, 26);
    let h = full_history(&c, ROOM).await;
    assert_gap_free(ROOM, &h);
    tc.shutdown().await;
}

/// Stop every node, start them all again on their data, and wait until the cluster is ready.
async fn restart_every_node(tc: &mut TestCluster) {
    for i in 0..tc.len() {
        tc.cluster.stop(i).await;
    }
    for i in 0..tc.len() {
        tc.cluster.restart(i).await.expect("restart");
    }
    tc.cluster
        .ready(Duration::from_secs(30))
        .await
        .expect("ready again");
}

/// Every node serves exactly `expected` as the room's history.
async fn assert_every_node_has(tc: &TestCluster, expected: &[stoa_proto::Message]) {
    for i in 0..tc.len() {
        let ci = tc.client(i).await;
        assert_eq!(full_history(&ci, ROOM).await, expected, "node {}", i + 1);
    }
}

/// Three nodes that snapshot every 20 entries, keep 5 after it and cut 64 KiB log segments: a
/// few hundred posts compact the log many times over and leave whole segments to delete.
async fn compacting_cluster() -> TestCluster {
    TestCluster::start_with(3, |c| {
        c.raft.snapshot_logs_since_last = 20;
        c.raft.logs_kept_after_snapshot = 5;
        c.raft.log_segment_bytes = 64 << 10;
    })
    .await
}

/// Post `"{text} {i}"` to the room for each `i` of `range`, with client id `"{id}{i}"`.
async fn post_series(c: &stoa_client::Client, text: &str, id: &str, range: std::ops::Range<u32>) {
    for i in range {
        c.post_with_id(ROOM, &format!("{text} {i}"), &format!("{id}{i}"), false)
            .await
            .unwrap_or_else(|e| panic!("post {id}{i}: {e}"));
    }
}

/// Wait until node 1 has compacted its log far enough to delete its first segment.
async fn first_segment_deleted(tc: &TestCluster) {
    eventually(
        Duration::from_secs(30),
        "node 1 deletes its first log segment once it is compacted",
        || async { !log_segments(tc, 0).contains(&"00000001.wal".to_string()) },
    )
    .await;
}

/// Segment files of node `i`'s Raft log (0-based node index).
fn log_segments(tc: &TestCluster, i: usize) -> Vec<String> {
    let dir = tc
        .cluster
        .dir
        .join(format!("node-{}", i + 1))
        .join("raft-log");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("raft log directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_compacted_logs_a_node_behind_catches_up_by_snapshot_and_restarts_keep_history() {
    init_tracing();
    let mut tc = compacting_cluster().await;
    let c = tc.client(0).await;
    post_series(&c, "before", "b", 0..10).await;

    info!("--- node 3 stops; the others commit and compact far past what it has");
    tc.cluster.stop(2).await;
    let text = "x".repeat(1000);
    post_series(&c, &text, "d", 0..400).await;
    let expected = full_history(&c, ROOM).await;
    assert_eq!(expected.len(), 410);
    first_segment_deleted(&tc).await;

    info!("--- node 3 restarts: the entries it lacks are gone from every log, so a snapshot");
    tc.cluster.restart(2).await.expect("restart");
    let c3 = tc.client(2).await;
    eventually(
        Duration::from_secs(30),
        "node 3 has all 410 messages",
        || async { try_full_history(&c3, ROOM).await.ok().as_ref() == Some(&expected) },
    )
    .await;
    drop((c, c3));

    info!("--- every node restarts from its compacted log and snapshot");
    restart_every_node(&mut tc).await;
    assert_every_node_has(&tc, &expected).await;
    let c = tc.client(1).await;
    let p = c
        .post_with_id(ROOM, "after", "after", false)
        .await
        .expect("post after restart");
    assert_eq!(p.seq.0, 411);
    // A retry of a post from before the compaction is still recognised.
    let again = c
        .post_with_id(ROOM, &format!("{text} 7"), "d7", false)
        .await
        .expect("retry");
    assert_eq!(again.seq, expected[17].seq);
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_a_subscriber_on_a_node_that_installs_a_snapshot_misses_nothing() {
    use stoa_proto::{ModerateOp, ModerationAction};
    init_tracing();
    let tc = compacting_cluster().await;
    let c = tc.client(0).await;
    post_series(&c, "before", "b", 0..10).await;
    let sub = tc.client(2).await;
    // Node 3 learns of the last commit a moment after node 1 acknowledged it.
    eventually(
        Duration::from_secs(10),
        "node 3 has the first 10",
        || async {
            sub.history(ROOM, None, None, 20)
                .await
                .is_ok_and(|(h, _)| h.len() == 10)
        },
    )
    .await;
    let mut events = sub.events().expect("events");
    let from = sub
        .subscribe(ROOM, None)
        .await
        .expect("subscribe on node 3");
    assert_eq!(from, stoa_client::Seq(10));

    info!("--- node 3 is cut off from its peers (its client stays); the others compact past it");
    tc.isolate(2);
    let text = "x".repeat(1000);
    post_series(&c, &text, "d", 0..7).await;
    post_series(&c, "marker", "d", 7..8).await;
    post_series(&c, &text, "d", 8..300).await;
    // Changed while node 3 cannot see it: the subscriber learns it from the installed state.
    let removed = c
        .moderate(ModerateOp::Messages {
            filter: words_in(ROOM, &["marker"]),
            action: ModerationAction::Remove,
        })
        .await
        .expect("moderate");
    assert_eq!(removed, 1);
    post_series(&c, &text, "d", 300..400).await;
    first_segment_deleted(&tc).await;
    let expected = full_history(&c, ROOM).await;
    assert_eq!(expected.len(), 410);

    info!("--- node 3 rejoins: it installs a snapshot, and its subscriber resumes from storage");
    tc.heal();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 400 {
        let m = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of 400 messages after the install", seen.len()))
            .expect("client open");
        seen.push(m);
    }
    let seqs: Vec<u64> = seen.iter().map(|m| m.seq.0).collect();
    assert_eq!(
        seqs,
        (11..=410).collect::<Vec<_>>(),
        "gap-free, once each, in order"
    );
    // Each message as the subscriber last saw it: the stream's version, or a replacement of it
    // sent afterwards (if it first read the message before the moderation was applied).
    for m in sub.replaced() {
        if let Some(s) = seen.iter_mut().find(|s| s.seq == m.seq) {
            *s = m;
        }
    }
    assert_eq!(
        seen,
        expected[10..],
        "the subscriber ends with the cluster's history"
    );
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_spread_leaders_gives_each_group_its_own_first_leader() {
    init_tracing();
    // Long election timeouts: the test reads the current leaders, so a re-election on a busy
    // machine must not come before it looks.
    let tc = TestCluster::start_with(3, |c| {
        c.cluster.spread_leaders = true;
        c.raft.election_timeout_min_ms = 2000;
        c.raft.election_timeout_max_ms = 4000;
    })
    .await;
    // Group g's first leader is node g % 3 + 1 (ids in order): meta on 1, shard 1 on 2, shard 2
    // on 3, each initialized by that node at the bootstrapping node's request.
    let leaders = |i: usize| -> Vec<Option<u64>> {
        let node = tc.cluster.nodes[i].as_ref().expect("running");
        node.rafts
            .iter()
            .map(|r| r.metrics().borrow().current_leader)
            .collect()
    };
    eventually(
        Duration::from_secs(10),
        "every node sees leaders 1, 2, 3 for groups 0, 1, 2",
        || async { (0..3).all(|i| leaders(i) == [Some(1), Some(2), Some(3)]) },
    )
    .await;

    info!("--- posts commit through both shard leaders and every node serves them");
    let rooms = tc.rooms(&["north", "south", "east", "west"]).await;
    let node = tc.cluster.nodes[0].as_ref().expect("running");
    let shards: std::collections::BTreeSet<u32> = rooms
        .iter()
        .filter_map(|r| node.ctx.meta.read(|m| m.room(r).map(|r| r.shard)))
        .collect();
    assert_eq!(shards.len(), 2, "the rooms lie in both shards");
    let c = tc.client(0).await;
    for room in &rooms {
        for i in 0..3 {
            c.post_with_id(room, &format!("m{i}"), &format!("{room}{i}"), false)
                .await
                .expect("post");
        }
    }
    for room in &rooms {
        let expected = full_history(&c, room).await;
        assert_eq!(expected.len(), 3);
        for i in 1..3 {
            let ci = tc.client(i).await;
            eventually(
                Duration::from_secs(10),
                "node has the room's posts",
                || async { try_full_history(&ci, room).await.ok().as_ref() == Some(&expected) },
            )
            .await;
        }
    }
    tc.shutdown().await;
}
