use cluster_tests::history::{History, Outcome};
use cluster_tests::workload::{fault_tolerant, Recorded};
use cluster_tests::{eventually, init_tracing, TestCluster};
use std::time::Duration;
use stoa_client::Status;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_retry_with_the_same_client_id_across_failover_gets_one_seq() {
    init_tracing();
    let mut tc = TestCluster::start(3).await;
    let rooms = tc.rooms(&[]).await;
    let history = History::new();
    let leader = tc.shard_leader("lobby").expect("leader");
    let other = (leader + 1) % 3;

    info!(
        node = leader + 1,
        "--- a post through the leader is acknowledged; the leader dies"
    );
    let a = tc.recorded(&history, "a", vec![tc.addr(leader)]).await;
    let (first, _) = a.post_as("lobby", "same-1", "same-1").await;
    let first = first.expect("acknowledged").seq;
    a.close().await;
    tc.stop(leader).await;

    info!("--- the same client message id sent to a survivor answers the same seq");
    let b = tc.recorded(&history, "b", vec![tc.addr(other)]).await;
    let (again, _) = b.post_as("lobby", "same-1", "same-1").await;
    assert_eq!(again.expect("retry acknowledged").seq, first);
    tc.restart(leader).await;

    info!("--- a post into an isolated leader has an unknown outcome; its retry elsewhere wins");
    let leader = tc.shard_leader("lobby").expect("leader");
    let majority = (leader + 1) % 3;
    let c = {
        let client = tc
            .client_with(vec![tc.addr(leader)], |cfg| {
                fault_tolerant(cfg);
                cfg.request_timeout = Duration::from_secs(2);
            })
            .await;
        Recorded::new("c", client, "admin", &history)
    };
    tc.isolate(leader);
    let (lost, outcome) = c.post_as("lobby", "same-2", "same-2").await;
    assert!(
        lost.is_err(),
        "the isolated leader acknowledged {outcome:?}"
    );
    eventually(Duration::from_secs(20), "a new leader", || async {
        tc.shard_leader_seen_by(majority, "lobby")
            .is_some_and(|l| l != leader)
    })
    .await;
    let d = tc.recorded(&history, "d", vec![tc.addr(majority)]).await;
    let (won, _) = d.post_as("lobby", "same-2", "same-2").await;
    let won = won
        .expect("the retry through the majority is acknowledged")
        .seq;
    info!(seq = %won, "--- heal: the old leader's pending copy must not be stored a second time");
    tc.heal();
    eventually(
        Duration::from_secs(30),
        "the old leader's client is served again",
        || async { matches!(c.post("lobby").await.1, Outcome::Acked(_)) },
    )
    .await;
    let (again, _) = c.post_as("lobby", "same-2", "same-2").await;
    assert_eq!(again.expect("retry through the healed node").seq, won);

    info!("--- the SDK retries a post in flight when its node stops, with the same id");
    for round in 0..2 {
        // A follower whose forwarded proposals are slowed down, so the post is in flight when
        // the node stops: it may or may not have been committed, and the SDK sends it again.
        let leader = tc.shard_leader("lobby").expect("leader");
        let victim = (leader + 1 + round % 2) % 3;
        tc.set_delay(victim, Some(Duration::from_millis(400)));
        let e = tc
            .recorded(&history, &format!("e{round}"), tc.servers_from(victim))
            .await;
        let Status::Connected { node, .. } = e.client.status() else {
            panic!("not connected: {:?}", e.client.status());
        };
        assert_eq!(node.0 as usize, victim + 1);
        let text = format!("inflight-{round}");
        let post = {
            let e = e.clone();
            tokio::spawn(async move { e.post_as("lobby", &text, &text).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        tc.stop(victim).await;
        let (result, outcome) = post.await.expect("post task");
        info!(
            round,
            node = victim + 1,
            ?outcome,
            "post across the failover"
        );
        result.expect("the SDK retried across the failover within its deadline");
        tc.set_delay(victim, None);
        tc.restart(victim).await;
        e.close().await;
    }

    let clients = [b, c, d];
    tc.finish(&history, None, &clients, &rooms).await;
    tc.shutdown().await;
}
