//! Regressions: each test pins a bug these tests found (see docs/TESTING.md).

use cluster_tests::{init_tracing, TestCluster};
use std::time::Duration;
use stoa_client::Status;
use stoa_proto::Seq;
use tracing::info;

/// Found by t60_random_faults_under_load (STOA_RANDOM_SECS=60): its followers stopped receiving
/// after 20 s. The node closes a client connection that sent no frame for 4 ×
/// `client_idle_timeout_ms` with goodbye `invalid: idle for too long`, even while the connection
/// is subscribed and receiving events (QUIC keep-alives are not frames), and the SDK takes an
/// `invalid` goodbye as final: a client that only listens (`stoa tail`) fails for good after
/// 2 minutes with the default configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t90_a_client_that_only_listens_is_not_cut_as_idle() {
    init_tracing();
    // 1 s idle timeout: the node's cut comes after 4 s.
    let tc = TestCluster::start_with(3, |c| c.limits.client_idle_timeout_ms = 1000).await;
    let listener = tc.client(0).await;
    let mut events = listener.events().expect("events");
    listener
        .subscribe("lobby", Some(Seq::ZERO))
        .await
        .expect("subscribe");
    let poster = tc.client(1).await;

    // Three times the cut's delay, so a reconnect (which restarts the node's timer) cannot hide it.
    info!("--- the listener only listens for 12 s while a message arrives every second");
    for i in 1..=12u64 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        poster
            .post_with_id("lobby", &format!("tick {i}"), &format!("tick{i}"), false)
            .await
            .expect("post");
        let m = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("tick {i} not delivered ({:?})", listener.status()))
            .unwrap_or_else(|| panic!("event stream ended at tick {i}: {:?}", listener.status()));
        assert_eq!(m.seq, Seq(i));
    }
    assert!(
        matches!(listener.status(), Status::Connected { .. }),
        "{:?}",
        listener.status()
    );
    tc.shutdown().await;
}

/// Found by t70_partitions_and_kill9_of_real_processes_in_network_namespaces (and, at the same
/// time, by the W3 load run; fixed in 6025016): after a SIGKILL and restart, the node stayed ~25 s
/// behind on one shard. The other nodes kept their QUIC connection to the killed process cached in
/// `PeerPool`; a call on it timed out (`rpc_timeout_ms`) but the timeout did not drop the
/// connection, so every later call used the dead connection again until QUIC's idle timeout
/// (`client_idle_timeout_ms`, 30 s by default) closed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t90_a_node_restarted_after_sigkill_catches_up_before_the_idle_timeout() {
    use cluster_tests::eventually;
    use cluster_tests::process::ProcCluster;
    use stoa_client::{Client, ClientConfig};
    init_tracing();
    // An idle timeout of 60 s; catching up must not depend on it.
    let mut pc = {
        cluster_tests::fresh_node_binary();
        ProcCluster::start_with(3, 1, "[limits]\nclient_idle_timeout_ms = 60000\n")
    };
    let token = pc.admin_token(Duration::from_secs(60));
    let (ca, servers) = (pc.ca_pem(), pc.servers());
    let connect = |servers: Vec<String>| {
        let cfg = ClientConfig::from_files(servers, token.clone(), &ca).expect("CA");
        Client::connect(cfg)
    };
    let c = connect(servers.clone()).await.expect("connect");
    c.create_room("r", "").await.expect("room");
    for i in 0..10 {
        c.post_with_id("r", &format!("a{i}"), &format!("a{i}"), false)
            .await
            .expect("post");
    }
    let t0 = std::time::Instant::now();
    let mut waited = Vec::new();
    for victim in [2usize, 1] {
        info!(
            node = victim + 1,
            "--- SIGKILL a node, start it again, post elsewhere"
        );
        pc.kill9(victim);
        tokio::time::sleep(Duration::from_millis(500)).await;
        pc.spawn(victim);
        let (_, last) = c.history("r", None, None, 1).await.expect("history");
        let mut want = last.0;
        for i in 0..10 {
            want = c
                .post_with_id(
                    "r",
                    &format!("b{victim}-{i}"),
                    &format!("b{victim}-{i}"),
                    false,
                )
                .await
                .expect("post")
                .seq
                .0;
        }
        let t = std::time::Instant::now();
        let restarted = connect(vec![servers[victim].clone()]);
        let restarted = tokio::time::timeout(Duration::from_secs(30), restarted)
            .await
            .expect("connect within 30 s")
            .expect("connect to the restarted node");
        eventually(
            Duration::from_secs(20),
            "the restarted node holds every post (well before the 60 s idle timeout)",
            || async {
                restarted
                    .history("r", None, None, 1)
                    .await
                    .is_ok_and(|(_, last)| last.0 >= want)
            },
        )
        .await;
        waited.push(t.elapsed());
    }
    info!(?waited, total = ?t0.elapsed(), "caught up");
}

/// Found by t60_random_faults_under_load (STOA_SEED=8295709780602156398 STOA_RANDOM_SECS=60, on
/// cf8cef8): restarting a stopped node failed with "could not acquire lock" on its sled
/// database, after "storage still referenced after shutdown". `NodeHandle::shutdown` waits at
/// most 10 s for the store to be released, but a shard's proposer keeps taking queued posts and
/// proposing them for up to 10 s each (`Proposals` retries until its own deadline, also when the
/// node is shutting down), one batch after another (`proposals_in_flight_max` at a time). Here
/// the leader drops the follower's calls, three posts queue up on the follower as three batches,
/// and the follower stops: the third batch starts ~10 s later and holds the store past the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t90_a_node_stopped_with_posts_in_flight_releases_its_storage() {
    init_tracing();
    let mut tc = TestCluster::start(3).await;
    let leader = tc.shard_leader("lobby").expect("leader");
    let follower = (leader + 1) % 3;
    let in_flight = tc.cluster.node(0).ctx.config.limits.proposals_in_flight_max;

    info!(
        leader = leader + 1,
        follower = follower + 1,
        "--- the leader drops every call from the follower"
    );
    tc.cluster
        .node(leader)
        .pool
        .block_incoming(follower as u64 + 1, true);
    let mut posts = Vec::new();
    for k in 0..in_flight + 1 {
        info!(
            k,
            "--- a post through the follower: forwarded, never answered"
        );
        let c = tc.client(follower).await;
        posts.push(tokio::spawn(async move {
            let _ = c
                .post_with_id("lobby", &format!("stuck {k}"), &format!("stuck{k}"), false)
                .await;
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    info!("--- the follower stops, and starts again on its data");
    let t = std::time::Instant::now();
    tc.cluster.stop(follower).await;
    info!(ms = t.elapsed().as_millis() as u64, "stopped");
    tc.cluster.nodes[leader]
        .as_ref()
        .expect("leader runs")
        .pool
        .heal();
    tc.cluster
        .restart(follower)
        .await
        .expect("the stopped node's storage is released: it starts again");
    for p in posts {
        p.abort();
    }
    tc.shutdown().await;
}
