use cluster_tests::process::ProcCluster;
use cluster_tests::{assert_gap_free, eventually, full_history, init_tracing, TestCluster};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use stoa_client::{Client, ClientConfig};
use stoa_proto::Message;
use tracing::info;

const ROOM: &str = "lobby";

/// Every acknowledged post is in `history` exactly once, at the seq it was acknowledged with.
fn check_acked(history: &[Message], acked: &HashMap<String, u64>) {
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for m in history {
        assert!(
            seen.insert(m.text.as_str(), m.seq.0).is_none(),
            "{:?} stored twice",
            m.text
        );
    }
    for (text, seq) in acked {
        assert_eq!(
            seen.get(text.as_str()),
            Some(seq),
            "acknowledged post {text:?} (seq {seq}) missing or moved"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_shard_leader_stops_and_posts_continue_with_nothing_lost() {
    init_tracing();
    let mut tc = TestCluster::start(3).await;
    let c = tc.client_all().await;
    let mut acked = HashMap::new();
    for i in 0..20 {
        let text = format!("before {i}");
        let p = c
            .post_with_id(ROOM, &text, &format!("b{i}"), false)
            .await
            .expect("post");
        acked.insert(text, p.seq.0);
    }

    let leader = tc
        .shard_leader(ROOM)
        .expect("the room's shard has a leader");
    info!(
        leader = leader + 1,
        "--- the leader of the room's shard stops"
    );
    tc.cluster.stop(leader).await;

    info!("--- posts continue after the election (the client retries with the same ids)");
    for i in 0..20 {
        let text = format!("after {i}");
        let p = c
            .post_with_id(ROOM, &text, &format!("a{i}"), false)
            .await
            .expect("post after leader loss");
        acked.insert(text, p.seq.0);
    }

    info!("--- both survivors hold every acknowledged post once, in the same order");
    let mut histories = Vec::new();
    for i in (0..3).filter(|&i| i != leader) {
        let h = full_history(&tc.client(i).await, ROOM).await;
        assert_gap_free(ROOM, &h);
        check_acked(&h, &acked);
        histories.push(h);
    }
    assert_eq!(histories[0], histories[1]);
    tc.shutdown().await;
}

/// Three `stoa-node run` processes; one at a time is SIGKILLed at random moments under a stream of
/// posts and restarted. Every acknowledged post must be on every node, in one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_kill9_real_processes_under_posts() {
    init_tracing();
    let seed: u64 = std::env::var("STOA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    info!(seed, "--- replay with STOA_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The binary of this tree, not whatever an earlier build left next to the test.
    cluster_tests::fresh_node_binary();
    let mut pc = ProcCluster::start(3);
    let token = pc.admin_token(Duration::from_secs(60));
    let cfg = ClientConfig::from_files(pc.servers(), token.clone(), pc.ca_pem()).expect("ca");
    let c = Client::connect(cfg).await.expect("connect");
    c.create_room("kill9", "").await.expect("create room");

    info!("--- posting while nodes are killed with SIGKILL and restarted, one at a time");
    let poster = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut acked = HashMap::new();
            let start = Instant::now();
            let mut i = 0u64;
            while i < 400 && start.elapsed() < Duration::from_secs(25) {
                let text = format!("post {i}");
                match c
                    .post_with_id("kill9", &text, &format!("k{i}"), false)
                    .await
                {
                    Ok(p) => {
                        acked.insert(text, p.seq.0);
                    }
                    Err(e) => tracing::warn!(error = %e, i, "post not acknowledged"),
                }
                i += 1;
            }
            acked
        })
    };
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
        let victim = rng.gen_range(0..3);
        info!(round, victim = victim + 1, "--- SIGKILL");
        pc.kill9(victim);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
        pc.spawn(victim);
    }
    let acked = poster.await.expect("poster");
    assert!(acked.len() > 10, "only {} posts acknowledged", acked.len());

    info!(
        acked = acked.len(),
        "--- every node converges to the same history holding every acknowledged post"
    );
    let mut reference: Option<Vec<Message>> = None;
    for i in 0..3 {
        let cfg =
            ClientConfig::from_files(vec![pc.servers()[i].clone()], token.clone(), pc.ca_pem())
                .expect("ca");
        let ci = Client::connect(cfg).await.expect("connect to one node");
        let want = acked.values().copied().max().unwrap_or(0) as usize;
        eventually(Duration::from_secs(30), "node caught up", || async {
            ci.history("kill9", None, None, 1)
                .await
                .map(|(_, last)| last.0 as usize >= want)
                .unwrap_or(false)
        })
        .await;
        let h = full_history(&ci, "kill9").await;
        assert_gap_free("kill9", &h);
        check_acked(&h, &acked);
        match &reference {
            None => reference = Some(h),
            Some(r) => assert_eq!(
                &h[..r.len().min(h.len())],
                &r[..r.len().min(h.len())],
                "node {} diverges",
                i + 1
            ),
        }
    }
}
