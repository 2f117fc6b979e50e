//! The SDK against in-process fake nodes (see `fake_node`): real QUIC, TLS and frames.

mod fake_node;

use fake_node::{Cluster, GOOD_TOKEN};
use std::time::Duration;
use stoa_client::{Client, ClientConfig, ClientError, ErrorCode, EventStream, Seq, Status};
use tokio::time::timeout;

fn config(cluster: &Cluster) -> ClientConfig {
    let mut cfg = ClientConfig::new(cluster.servers(), GOOD_TOKEN, cluster.ca_pem.clone());
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.request_timeout = Duration::from_secs(5);
    cfg.retry_deadline = Duration::from_secs(5);
    cfg
}

async fn connect(cluster: &Cluster) -> Client {
    Client::connect(config(cluster)).await.expect("connect")
}

/// The next `n` messages of the stream as seqs, failing after 5 s of silence.
async fn take_seqs(events: &mut EventStream, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        match timeout(Duration::from_secs(5), events.next()).await {
            Ok(Some(m)) => out.push(m.seq.0),
            Ok(None) => panic!("stream ended after {out:?}"),
            Err(_) => panic!("no message after {out:?}"),
        }
    }
    out
}

async fn assert_quiet(events: &mut EventStream) {
    if let Ok(Some(m)) = timeout(Duration::from_millis(300), events.next()).await {
        panic!("unexpected extra message #{}", m.seq);
    }
}

#[tokio::test]
async fn requests_round_trip() {
    let cluster = Cluster::start(1);
    let client = connect(&cluster).await;
    let me = client.whoami().await.unwrap();
    assert_eq!((me.user.as_str(), me.admin, me.node.0), ("ann", true, 1));
    assert_eq!(
        client.create_room("dev", "developers").await.unwrap().name,
        "dev"
    );
    let err = client.create_room("dev", "again").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AlreadyExists));
    let names: Vec<String> = client
        .list_rooms()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, vec!["dev", "lobby"]);
    assert_eq!(client.create_user("bob", false).await.unwrap(), "tok-bob");

    let first = client.post("dev", "hello").await.unwrap();
    assert_eq!(first.seq, Seq(1));
    let same = client
        .post_with_id("dev", "hello", "my-id", true)
        .await
        .unwrap();
    let again = client
        .post_with_id("dev", "hello", "my-id", true)
        .await
        .unwrap();
    assert_eq!(
        same, again,
        "a repeated client message id answers the same post"
    );
    let (page, last) = client.history("dev", None, None, 10).await.unwrap();
    assert_eq!((page.len(), last), (2, Seq(2)));
    assert!(page[1].alert);
    assert_eq!(
        client.post("nowhere", "x").await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    client.close().await;
    assert!(matches!(client.whoami().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn many_requests_in_flight_share_one_stream() {
    let cluster = Cluster::start(1);
    let client = connect(&cluster).await;
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.post("lobby", &format!("m{i}")).await.unwrap().seq.0 })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_bad_token_or_a_foreign_ca_is_refused() {
    let cluster = Cluster::start(1);
    let mut cfg = config(&cluster);
    cfg.token = "nope".into();
    let err = Client::connect(cfg).await.err().expect("refused");
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated), "{err}");

    let other = Cluster::start(1);
    let mut cfg = config(&cluster);
    cfg.ca_pem = other.ca_pem.clone();
    let err = Client::connect(cfg).await.err().expect("refused");
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn live_delivery_and_join() {
    let cluster = Cluster::start(1);
    let reader = connect(&cluster).await;
    let writer = connect(&cluster).await;
    writer.post("lobby", "before").await.unwrap();
    let mut events = reader.events().unwrap();
    assert!(reader.events().is_none(), "the stream is taken once");
    let (messages, last) = reader.join("lobby").await.unwrap();
    assert_eq!((messages.len(), last), (1, Seq(1)));
    for i in 0..5 {
        writer.post("lobby", &format!("m{i}")).await.unwrap();
    }
    assert_eq!(take_seqs(&mut events, 5).await, vec![2, 3, 4, 5, 6]);
    assert_eq!(reader.last_seq("lobby"), Some(Seq(6)));
    reader.unsubscribe("lobby").await.unwrap();
    writer.post("lobby", "after").await.unwrap();
    assert_quiet(&mut events).await;
}

#[tokio::test]
async fn subscribe_after_replays_the_backlog() {
    let cluster = Cluster::start(1);
    let client = connect(&cluster).await;
    for i in 0..4 {
        client.post("lobby", &format!("m{i}")).await.unwrap();
    }
    let mut events = client.events().unwrap();
    assert_eq!(
        client.subscribe("lobby", Some(Seq(1))).await.unwrap(),
        Seq(4)
    );
    client.post("lobby", "live").await.unwrap();
    assert_eq!(take_seqs(&mut events, 4).await, vec![2, 3, 4, 5]);
    assert_quiet(&mut events).await;
}

#[tokio::test]
async fn a_lost_live_message_is_fetched_again() {
    let cluster = Cluster::start(1);
    let client = connect(&cluster).await;
    let mut events = client.events().unwrap();
    client.subscribe("lobby", None).await.unwrap();
    client.post("lobby", "1").await.unwrap();
    cluster.with(|st| st.faults.lose_live = 2);
    for i in 2..=6 {
        client.post("lobby", &i.to_string()).await.unwrap();
    }
    assert_eq!(take_seqs(&mut events, 6).await, vec![1, 2, 3, 4, 5, 6]);
    assert_quiet(&mut events).await;
}

#[tokio::test]
async fn lagged_resumes_and_a_large_backlog_is_paged() {
    let cluster = Cluster::start(1);
    let client = connect(&cluster).await;
    let other = connect(&cluster).await;
    let mut events = client.events().unwrap();
    client.subscribe("lobby", None).await.unwrap();
    other.post("lobby", "1").await.unwrap();
    assert_eq!(take_seqs(&mut events, 1).await, vec![1]);

    // Lagged with a small backlog: resubscribe.
    cluster.with(|st| st.faults.lose_live = 3);
    for i in 2..=4 {
        other.post("lobby", &i.to_string()).await.unwrap();
    }
    cluster.lag("lobby");
    assert_eq!(take_seqs(&mut events, 3).await, vec![2, 3, 4]);

    // A gap larger than the node's backlog limit: page with History, then subscribe.
    cluster.with(|st| {
        st.faults.backlog_max = 5;
        st.faults.lose_live = 20;
    });
    for i in 5..=25 {
        other.post("lobby", &i.to_string()).await.unwrap();
    }
    assert_eq!(
        take_seqs(&mut events, 21).await,
        (5..=25).collect::<Vec<_>>()
    );
    assert!(
        cluster.with(|st| st.histories) > 0,
        "the catch-up used History"
    );
    other.post("lobby", "26").await.unwrap();
    assert_eq!(take_seqs(&mut events, 1).await, vec![26]);
    assert_quiet(&mut events).await;
}

#[tokio::test]
async fn reconnect_to_another_node_resumes_without_gap_or_duplicate() {
    let cluster = Cluster::start(2);
    let mut cfg = config(&cluster);
    cfg.servers.truncate(1);
    cfg.servers.push(cluster.servers()[1].clone());
    let client = Client::connect(cfg).await.unwrap();
    assert!(matches!(client.status(), Status::Connected { node, .. } if node.0 == 1));
    let mut events = client.events().unwrap();
    client.subscribe("lobby", None).await.unwrap();
    let mut writer_cfg = config(&cluster);
    writer_cfg.servers = vec![cluster.servers()[1].clone()];
    let writer = Client::connect(writer_cfg).await.unwrap();
    for i in 1..=3 {
        writer.post("lobby", &i.to_string()).await.unwrap();
    }
    assert_eq!(take_seqs(&mut events, 3).await, vec![1, 2, 3]);

    cluster.kill(0, true);
    for i in 4..=8 {
        writer.post("lobby", &i.to_string()).await.unwrap();
    }
    assert_eq!(take_seqs(&mut events, 5).await, vec![4, 5, 6, 7, 8]);
    assert!(matches!(client.status(), Status::Connected { node, .. } if node.0 == 2));
    writer.post("lobby", "9").await.unwrap();
    assert_eq!(take_seqs(&mut events, 1).await, vec![9]);
    assert_quiet(&mut events).await;

    // Requests made after the reconnect work.
    assert_eq!(client.whoami().await.unwrap().node.0, 2);
}

#[tokio::test]
async fn force_reconnect_resumes() {
    let cluster = Cluster::start(2);
    let client = connect(&cluster).await;
    let mut events = client.events().unwrap();
    client.subscribe("lobby", None).await.unwrap();
    client.post("lobby", "1").await.unwrap();
    assert_eq!(take_seqs(&mut events, 1).await, vec![1]);
    client.force_reconnect();
    client.post("lobby", "2").await.unwrap();
    assert_eq!(take_seqs(&mut events, 1).await, vec![2]);
    assert_eq!(cluster.sessions_on(0) + cluster.sessions_on(1), 1);
}

#[tokio::test]
async fn a_post_is_retried_with_the_same_id_and_applied_once() {
    let cluster = Cluster::start(2);
    let client = connect(&cluster).await;
    cluster.with(|st| st.faults.refuse_posts = 2);
    assert_eq!(client.post("lobby", "a").await.unwrap().seq, Seq(1));
    assert_eq!(cluster.with(|st| st.post_attempts), 3);

    // Applied, then the connection dies before the answer: sent again, same seq.
    cluster.with(|st| st.faults.drop_after_post = 1);
    assert_eq!(client.post("lobby", "b").await.unwrap().seq, Seq(2));
    assert_eq!(cluster.stored("lobby"), 2);
}

#[tokio::test]
async fn other_requests_fail_on_connection_loss_and_time_out_when_unanswered() {
    let cluster = Cluster::start(1);
    let mut cfg = config(&cluster);
    cfg.request_timeout = Duration::from_millis(300);
    let client = Client::connect(cfg).await.unwrap();
    cluster.with(|st| st.faults.mute = true);
    assert!(matches!(
        client.whoami().await,
        Err(ClientError::Timeout(_))
    ));
    let pending = tokio::spawn({
        let c = client.clone();
        async move { c.history("lobby", None, None, 5).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.kill(0, false);
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    cluster.with(|st| st.faults.mute = false);
    // The client reconnected to the same (only) node.
    assert_eq!(client.whoami().await.unwrap().user, "ann");
}

#[tokio::test]
async fn the_client_fails_when_no_node_comes_back() {
    let cluster = Cluster::start(1);
    let mut cfg = config(&cluster);
    cfg.retry_deadline = Duration::from_millis(500);
    cfg.connect_timeout = Duration::from_millis(300);
    let client = Client::connect(cfg).await.unwrap();
    let mut events = client.events().unwrap();
    cluster.kill(0, true);
    let end = timeout(Duration::from_secs(5), events.next())
        .await
        .expect("stream ends");
    assert!(end.is_none());
    assert!(
        matches!(client.status(), Status::Failed(_)),
        "{:?}",
        client.status()
    );
    assert!(client.whoami().await.is_err());
}

#[tokio::test]
async fn clients_share_one_endpoint() {
    let cluster = Cluster::start(1);
    let endpoint = stoa_client::new_endpoint(false).unwrap();
    let mut clients = Vec::new();
    let n: usize = std::env::var("STOA_TEST_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for _ in 0..n {
        clients.push(
            Client::connect_with_endpoint(config(&cluster), endpoint.clone())
                .await
                .unwrap(),
        );
    }
    for c in &clients {
        c.post("lobby", "x").await.unwrap();
    }
    assert_eq!(cluster.stored("lobby"), n);
    assert_eq!(endpoint.open_connections(), n);
    for c in &clients {
        c.close().await;
    }
}

/// Compile-time: the client and its futures can move between tasks and threads.
#[allow(dead_code)]
fn client_and_futures_are_send_and_sync(client: Client, mut events: EventStream) {
    fn check<T: Send + 'static>(_: &T) {}
    fn check_sync<T: Sync>(_: &T) {}
    check(&client);
    check_sync(&client);
    let c = client.clone();
    check(&async move {
        let _ = c.post("r", "t").await;
        let _ = c.join("r").await;
        let _ = c.subscribe("r", None).await;
        let _ = c.history("r", None, None, 1).await;
        let _ = events.next().await;
    });
}
