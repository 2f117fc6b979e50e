use cluster_tests::{assert_gap_free, full_history, init_tracing, next_delivered, TestCluster};
use std::time::Duration;
use stoa_proto::{ErrorCode, Seq};
use tracing::info;

const ROOM: &str = "lobby";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_post_on_one_node_is_received_live_on_all_three() {
    init_tracing();
    let tc = TestCluster::start(3).await;

    info!("--- a client on every node subscribes to the room");
    let clients = [tc.client(0).await, tc.client(1).await, tc.client(2).await];
    let mut streams = Vec::new();
    for c in &clients {
        c.subscribe(ROOM, None).await.expect("subscribe");
        streams.push(c.events().expect("event stream taken once"));
    }

    info!("--- 20 posts through node 1 get seqs 1..=20");
    for i in 0..20u64 {
        let p = clients[0]
            .post_with_id(ROOM, &format!("m{i}"), &format!("id{i}"), false)
            .await
            .expect("post");
        assert_eq!(p.seq, Seq(i + 1));
    }

    info!("--- every node's client receives all 20 live, in order");
    for (n, s) in streams.iter_mut().enumerate() {
        for i in 0..20u64 {
            let m = tokio::time::timeout(Duration::from_secs(10), s.next())
                .await
                .unwrap_or_else(|_| panic!("node {n}: message {i} not delivered"))
                .expect("stream open");
            assert_eq!(
                (m.seq, m.text.as_str()),
                (Seq(i + 1), format!("m{i}").as_str()),
                "node {n}"
            );
        }
    }

    info!("--- a retry with the same client id, sent to another node, answers the same seq");
    let again = clients[2]
        .post_with_id(ROOM, "m3", "id3", false)
        .await
        .expect("retry");
    assert_eq!(again.seq, Seq(4));

    info!("--- every node stores the same 20 messages");
    for c in &clients {
        let h = full_history(c, ROOM).await;
        assert_eq!(h.len(), 20);
        assert_gap_free(ROOM, &h);
        assert_eq!(h[3].text, "m3");
    }
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_join_history_and_errors() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let c = tc.client(1).await;

    info!("--- 40 posts; join returns the last 30 (default_chat_history)");
    for i in 0..40u64 {
        c.post_with_id(ROOM, &format!("m{i}"), &format!("j{i}"), false)
            .await
            .expect("post");
    }
    let joiner = tc.client(2).await;
    let (messages, last) = joiner.join(ROOM).await.expect("join");
    assert_eq!(last, Seq(40));
    assert_eq!(messages.len(), 30);
    assert_eq!(messages.first().map(|m| m.seq), Some(Seq(11)));

    info!("--- scroll back from seq 11 by pages of 4");
    let (page, _) = joiner
        .history(ROOM, Some(Seq(11)), None, 4)
        .await
        .expect("history");
    assert_eq!(
        page.iter().map(|m| m.seq.0).collect::<Vec<_>>(),
        vec![7, 8, 9, 10]
    );

    info!("--- after join, new posts arrive live");
    let mut events = joiner.events().expect("event stream taken once");
    c.post_with_id(ROOM, "live", "j-live", false)
        .await
        .expect("post");
    let m = next_delivered(&mut events).await;
    assert_eq!((m.seq, m.text.as_str()), (Seq(41), "live"));

    info!("--- typed errors: unknown room, oversized text, page over the limit");
    let e = c
        .post_with_id("nowhere", "x", "e1", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = c
        .post_with_id(ROOM, &"x".repeat(20_000), "e2", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TooLarge));
    let e = c.history(ROOM, None, None, 100_000).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TooLarge));
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_users_and_rooms_created_on_one_node_work_on_another() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let admin = tc.client(0).await;

    info!("--- the admin creates a user and a room through node 1");
    let token = admin.create_user("ann", false).await.expect("create user");
    admin
        .create_room("ops", "operations")
        .await
        .expect("create room");
    let e = admin.create_room("ops", "again").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AlreadyExists));

    info!("--- ann signs in on node 3 and posts; she may not create users");
    let cfg =
        stoa_client::ClientConfig::from_files(vec![tc.addr(2)], token, tc.cluster.ca_pem_path())
            .unwrap();
    let ann = stoa_client::Client::connect(cfg)
        .await
        .expect("ann connects");
    let p = ann
        .post_with_id("ops", "hi", "a1", false)
        .await
        .expect("ann posts");
    assert_eq!(p.seq, Seq(1));
    let e = ann.create_user("bob", false).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    let (h, _) = admin.history("ops", None, None, 10).await.expect("history");
    assert_eq!(h[0].author, "ann");

    info!("--- a wrong token is refused");
    let cfg = stoa_client::ClientConfig::from_files(
        vec![tc.addr(1)],
        "not-a-token",
        tc.cluster.ca_pem_path(),
    )
    .unwrap();
    let e = stoa_client::Client::connect(cfg)
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), Some(ErrorCode::Unauthenticated));
    tc.shutdown().await;
}

/// `GET path` over plain HTTP/1.0; answers the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: stoa\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
        .await
        .expect("answered in time")
        .expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header and a body");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name` (with its labels, if any) in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_metrics_count_posts_deliveries_and_raft_progress() {
    init_tracing();
    let tc = TestCluster::start_with(3, |c| c.node.metrics_listen = "127.0.0.1:0".into()).await;
    let listener = tc.client(1).await;
    listener.subscribe(ROOM, None).await.expect("subscribe");
    let mut events = listener.events().expect("event stream");
    let poster = tc.client(0).await;
    for i in 0..10 {
        poster.post(ROOM, &format!("m{i}")).await.expect("post");
    }
    for _ in 0..10 {
        next_delivered(&mut events).await;
    }

    info!("--- every node applied the 10 posts; node 2 delivered them to its subscriber");
    let addrs: Vec<_> = tc
        .cluster
        .nodes
        .iter()
        .map(|n| n.as_ref().unwrap().metrics_addr().expect("metrics on"))
        .collect();
    for (n, node) in tc.cluster.nodes.iter().enumerate() {
        let addr = node.as_ref().unwrap().metrics_addr().expect("metrics on");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let text = loop {
            let (status, text) = http_get(addr, "/metrics").await;
            assert!(status.contains("200"), "node {n}: {status}");
            if sample(&text, "stoa_posts_applied_total") == Some(10.0)
                || tokio::time::Instant::now() > deadline
            {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            sample(&text, "stoa_posts_applied_total"),
            Some(10.0),
            "node {n}:\n{text}"
        );
        let delivered = sample(&text, "stoa_deliveries_total").expect("deliveries");
        assert_eq!(delivered, if n == 1 { 10.0 } else { 0.0 }, "node {n}");
        // Nodes 1 and 2 serve a client each (the poster, the listener); the cluster's setup
        // may have used any node, so node 3 is not checked.
        if n < 2 {
            assert!(sample(&text, "stoa_client_connections").unwrap() >= 1.0);
            assert!(sample(&text, "stoa_client_quic_datagrams_sent_total").unwrap() > 0.0);
        }
        for g in 0..3 {
            let applied = sample(&text, &format!("stoa_raft_applied_index{{group=\"{g}\"}}"));
            assert!(applied.unwrap() >= 1.0, "node {n} group {g}:\n{text}");
        }
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }
    // A deposed leader may still think it leads for a moment: ask until the nodes agree.
    cluster_tests::eventually(Duration::from_secs(10), "one directory leader", || {
        let addrs = addrs.clone();
        async move {
            let mut leaders = 0.0;
            for a in addrs {
                let (_, text) = http_get(a, "/metrics").await;
                leaders += sample(&text, "stoa_raft_leader{group=\"0\"}").unwrap_or(0.0);
            }
            leaders == 1.0
        }
    })
    .await;

    info!("--- anything but GET /metrics is not found");
    let addr = tc.cluster.nodes[0]
        .as_ref()
        .unwrap()
        .metrics_addr()
        .unwrap();
    assert!(http_get(addr, "/").await.0.contains("404"));
    tc.shutdown().await;
}
