use cluster_tests::raw::{self, Next, RawConn, Transport};
use cluster_tests::{init_tracing, TestCluster};
use std::collections::HashSet;
use std::time::Duration;
use stoa_proto::{ErrorCode, Event, Request, Response, Seq, ServerFrame};
use tracing::info;

/// Found by this test (1 run in 3 on cf8cef8 + 6025016): the client sometimes sees its connection
/// lost without the `too_large` goodbye. After a protocol error the session queues the goodbye,
/// its writer finishes the stream and the session returns, dropping the connection at once (an
/// implicit close that discards stream data not yet delivered); only the goodbyes sent before
/// the welcome wait for the stream to be `stopped()`. Ten such clients at once make it show
/// reliably.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_oversized_frame_closes_that_stream_only() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let addr = tc.cluster.addrs()[0];
    let max = tc.cluster.node(0).ctx.config.limits.frame_bytes_max;
    let endpoint = raw::endpoint();
    let cfg = raw::client_config(&tc.cluster.ca_pem_path(), Transport::default());
    let other = tc.client(0).await;
    other
        .post_with_id("lobby", "before", "before", false)
        .await
        .expect("post");

    info!(
        max,
        "--- ten signed-in clients announce a frame one byte over frame_bytes_max"
    );
    let oversized = (0..10).map(|k| {
        let (endpoint, cfg, token) = (&endpoint, &cfg, &tc.admin_token);
        async move {
            let (mut c, _) = RawConn::signed_in(endpoint, cfg, addr, token).await;
            let mut bytes = (max as u32 + 1).to_be_bytes().to_vec();
            bytes.extend_from_slice(&vec![0u8; 64 << 10]);
            // The node may close the stream before all of it is written.
            let _ = c.send_bytes(&bytes).await;
            let (frames, end) = c.rest(Duration::from_secs(10)).await;
            info!(k, ?frames, end, "answer");
            frames
        }
    });
    for frames in futures::future::join_all(oversized).await {
        match &frames[..] {
            [ServerFrame::Goodbye(e)] => assert_eq!(e.code, ErrorCode::TooLarge, "{e}"),
            other => panic!("expected one too_large goodbye, got {other:?}"),
        }
    }

    info!("--- the other client on the same node keeps working");
    let p = other
        .post_with_id("lobby", "after", "after", false)
        .await
        .expect("post after the oversized frames");
    assert_eq!(p.seq, Seq(2));
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_a_flood_of_requests_is_held_back_and_others_are_answered() {
    init_tracing();
    let tc = TestCluster::start_with(3, |c| {
        c.limits.requests_in_flight_max = 8;
        c.limits.send_queue_frames_max = 64;
    })
    .await;
    let addr = tc.cluster.addrs()[0];
    let endpoint = raw::endpoint();
    // A small receive window: the flooder's unread answers back up at the node quickly.
    let cfg = raw::client_config(
        &tc.cluster.ca_pem_path(),
        Transport {
            receive_window: Some(16 << 10),
            ..Transport::default()
        },
    );
    let (c, _) = RawConn::signed_in(&endpoint, &cfg, addr, &tc.admin_token).await;
    let RawConn {
        mut send,
        mut recv,
        conn,
        ..
    } = c;

    // ~1 KiB requests the node answers at once (limit 0 is refused before the room is looked
    // up); 4000 of them (4 MiB) are far more than what the node's stream window, its send queue
    // and the requests in flight can hold (~1.3 MiB).
    const FLOOD: u64 = 4000;
    let padding = "x".repeat(1000);
    info!(
        FLOOD,
        "--- one connection floods requests and reads none of the answers"
    );
    let writer = tokio::spawn(async move {
        for id in 1..=FLOOD {
            let frame = stoa_proto::encode_frame(
                &stoa_proto::ClientFrame::Request {
                    id,
                    body: Request::History {
                        room: padding.clone(),
                        before: None,
                        after: None,
                        limit: 0,
                    },
                },
                1 << 20,
            )
            .expect("encode");
            send.write_all(&frame)
                .await
                .expect("write while the node reads");
        }
        send
    });

    info!("--- meanwhile other clients of the same node get answers");
    let others = [tc.client(0).await, tc.client(0).await];
    for (k, o) in others.iter().enumerate() {
        for i in 0..10 {
            o.post_with_id("lobby", &format!("o{k}-{i}"), &format!("o{k}-{i}"), false)
                .await
                .expect("post during the flood");
        }
        let (h, _) = o.history("lobby", None, None, 100).await.expect("history");
        assert!(!h.is_empty());
    }
    assert!(
        !writer.is_finished(),
        "the node read every request of a client that reads no answer: nothing held it back"
    );

    info!("--- the flooder reads: every request it sent is answered exactly once");
    let reader = tokio::spawn(async move {
        let mut decoder = stoa_proto::FrameDecoder::new(1 << 20);
        let mut answered = HashSet::new();
        while answered.len() < FLOOD as usize {
            let chunk =
                tokio::time::timeout(Duration::from_secs(20), recv.read_chunk(1 << 16, true))
                    .await
                    .expect("answers keep coming")
                    .expect("read")
                    .expect("stream open");
            decoder.extend(&chunk.bytes);
            while let Some(f) = decoder.next_frame::<ServerFrame>().expect("frame") {
                match f {
                    ServerFrame::Response { id, result: Err(e) } => {
                        assert_eq!(e.code, ErrorCode::TooLarge, "{e}");
                        assert!(answered.insert(id), "request {id} answered twice");
                    }
                    other => panic!("unexpected frame {other:?}"),
                }
            }
        }
        answered.len()
    });
    let _send = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the flood is written once answers are read")
        .expect("writer");
    let answered = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("every answer arrives")
        .expect("reader");
    assert_eq!(answered, FLOOD as usize);
    conn.close(0u32.into(), b"done");
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_idle_connections_without_hello_are_cut_and_others_work() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let addr = tc.cluster.addrs()[0];
    let endpoint = raw::endpoint();
    let cfg = raw::client_config(&tc.cluster.ca_pem_path(), Transport::default());
    // 1000 handshakes on one debug-built node take a few seconds; STOA_IDLE_CONNECTIONS lowers it.
    let n: usize = std::env::var("STOA_IDLE_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);

    info!(
        n,
        "--- open idle connections: half open no stream, half send half a header"
    );
    let mut idle = Vec::new();
    for batch in 0..n.div_ceil(100) {
        let dials = (0..100.min(n - batch * 100)).map(|_| raw::dial(&endpoint, &cfg, addr));
        for conn in futures::future::join_all(dials).await {
            idle.push(conn.expect("an idle connection's handshake"));
        }
    }
    let mut partial = Vec::new();
    for conn in idle.iter().skip(n / 2) {
        let (mut send, recv) = conn.open_bi().await.expect("stream");
        send.write_all(&[0, 0]).await.expect("write half a header");
        partial.push((send, recv));
    }

    info!("--- a signed-in client connects and works while they are open");
    let c = tc.client(0).await;
    for i in 0..10 {
        c.post_with_id("lobby", &format!("m{i}"), &format!("m{i}"), false)
            .await
            .expect("post next to the idle connections");
    }

    info!("--- every idle connection is cut by the hello deadline");
    let closed = futures::future::join_all(idle.iter().map(|conn| async move {
        tokio::time::timeout(Duration::from_secs(30), conn.closed())
            .await
            .is_ok()
    }))
    .await;
    assert!(
        closed.iter().all(|&c| c),
        "some idle connections were never cut"
    );
    let mut goodbyes = 0;
    for (_, mut recv) in partial {
        let bytes = recv.read_to_end(1 << 16).await.unwrap_or_default();
        let mut d = stoa_proto::FrameDecoder::new(1 << 16);
        d.extend(&bytes);
        if let Ok(Some(ServerFrame::Goodbye(e))) = d.next_frame::<ServerFrame>() {
            assert_eq!(e.code, ErrorCode::Unauthenticated);
            goodbyes += 1;
        }
    }
    info!(
        goodbyes,
        "half-hello connections that read their goodbye before the close"
    );
    let p = c
        .post_with_id("lobby", "after", "after", false)
        .await
        .expect("post after the cut");
    assert_eq!(p.seq, Seq(11));
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_a_client_that_never_reads_is_cut_from_live_delivery() {
    init_tracing();
    let tc = TestCluster::start_with(3, |c| c.limits.send_queue_frames_max = 64).await;
    let addr = tc.cluster.addrs()[0];
    let endpoint = raw::endpoint();
    let cfg = raw::client_config(
        &tc.cluster.ca_pem_path(),
        Transport {
            receive_window: Some(8 << 10),
            ..Transport::default()
        },
    );

    info!("--- a raw client subscribes to lobby and stops reading; an SDK client follows too");
    let (mut slow, _) = RawConn::signed_in(&endpoint, &cfg, addr, &tc.admin_token).await;
    slow.send_request(
        1,
        Request::Subscribe {
            room: "lobby".into(),
            after: None,
            moderated_after: None,
        },
    )
    .await;
    // The room's roster comes with the subscription, before or after its answer.
    loop {
        match slow.next(Duration::from_secs(10)).await {
            Next::Frame(ServerFrame::Response {
                id: 1,
                result: Ok(Response::Subscribed { .. }),
            }) => break,
            Next::Frame(ServerFrame::Event(Event::Roster { .. })) => {}
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }
    let follower = tc.client(0).await;
    let mut events = follower.events().expect("events");
    follower
        .subscribe("lobby", Some(Seq::ZERO))
        .await
        .expect("subscribe");

    const POSTS: u64 = 200;
    info!(
        POSTS,
        "--- 8 KiB posts, far more than the slow client's window and send queue"
    );
    let poster = tc.client(1).await;
    let text = "y".repeat(8 << 10);
    for i in 0..POSTS {
        poster
            .post_with_id("lobby", &format!("{i}{text}"), &format!("big{i}"), false)
            .await
            .expect("post");
    }

    info!("--- the follower receives every message, in order");
    for i in 1..=POSTS {
        let m = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("delivered while the slow client is stuck")
            .expect("stream open");
        assert_eq!(m.seq, Seq(i));
    }

    info!("--- the slow client reads at last: a prefix of the room, then Lagged, then nothing");
    let mut seqs = Vec::new();
    let mut lagged = None;
    loop {
        match slow.next(Duration::from_secs(2)).await {
            Next::Frame(ServerFrame::Event(Event::Message(m))) => {
                assert!(lagged.is_none(), "message {} after Lagged", m.seq);
                seqs.push(m.seq.0);
            }
            Next::Frame(ServerFrame::Event(Event::Lagged { room, after })) => {
                assert_eq!(room, "lobby");
                lagged = Some(after);
            }
            Next::Frame(ServerFrame::Event(Event::Roster { .. })) => {
                assert!(lagged.is_none(), "roster event after Lagged");
            }
            Next::Silent => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let after = lagged.expect("the slow client was told it lagged");
    info!(received = seqs.len(), after = %after, "slow client");
    assert!((seqs.len() as u64) < POSTS, "the slow client was never cut");
    assert_eq!(
        seqs,
        (1..=after.0).collect::<Vec<_>>(),
        "a gap-free prefix up to Lagged"
    );

    info!("--- the cut is only from live delivery: the connection still answers requests");
    slow.send_request(2, Request::WhoAmI).await;
    match slow.next(Duration::from_secs(10)).await {
        Next::Frame(ServerFrame::Response {
            id: 2,
            result: Ok(_),
        }) => {}
        other => panic!("expected the answer to WhoAmI, got {other:?}"),
    }
    tc.shutdown().await;
}

/// Directory changes are entries of the one meta group every node shares: a user who is not an
/// administrator gets `RateLimited` beyond the rate, counted over all the user's connections to
/// the node (a second connection buys no second burst); an administrator is not limited. The
/// requests are sent at once, so the outcome does not depend on how fast commits are.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_a_users_directory_changes_are_rate_limited_an_administrators_are_not() {
    init_tracing();
    let tc = TestCluster::start_with(3, |c| {
        c.limits.directory_writes_per_s_per_user_max = 5;
    })
    .await;
    let admin = tc.client(0).await;
    let token = admin.create_user("ann", false).await.expect("create ann");
    let ann = [
        tc.user_client(1, &token).await,
        tc.user_client(1, &token).await,
    ];

    // Following a room twice is refused by the directory itself: that change passed the limiter
    // too, and only RateLimited counts.
    let burst = |clients: Vec<stoa_client::Client>| async move {
        let calls = clients.iter().flat_map(|c| {
            (0..20).map(move |_| {
                let c = c.clone();
                async move { c.follow("lobby", true).await }
            })
        });
        let mut refused = 0;
        for r in futures::future::join_all(calls).await {
            match r {
                Err(stoa_client::ClientError::Api(e)) if e.code == ErrorCode::RateLimited => {
                    refused += 1;
                }
                Ok(()) | Err(stoa_client::ClientError::Api(_)) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        refused
    };
    info!("--- 20 follow changes at once on each of ann's 2 connections: about 5 of 40 pass");
    let refused = burst(ann.to_vec()).await;
    assert!((32..=35).contains(&refused), "{refused} of 40 refused");
    info!("--- the same from the administrator: none refused");
    assert_eq!(burst(vec![admin.clone()]).await, 0);
    info!("--- ann's reads are not limited, and her changes pass again once the bucket refills");
    assert!(ann[0].followed().await.is_ok());
    cluster_tests::eventually(Duration::from_secs(10), "ann's change passes", || {
        let ann = ann[1].clone();
        async move { ann.follow("lobby", true).await.is_ok() }
    })
    .await;
    tc.shutdown().await;
}

/// A client uses one stream, so a client connection may open one: the node keeps no state for
/// streams it will never read and cannot be made to buffer data on them. (Opening a stream with
/// credit is local to the client and immediate, so the second one waiting means no credit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_a_client_connection_gets_one_stream() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let cfg = raw::client_config(&tc.cluster.ca_pem_path(), Transport::default());
    let endpoint = raw::endpoint();
    let addr = tc.addr(0).parse().unwrap();
    let (c, _) = RawConn::signed_in(&endpoint, &cfg, addr, &tc.admin_token).await;
    let second = tokio::time::timeout(Duration::from_millis(500), c.conn.open_bi()).await;
    assert!(second.is_err(), "a second stream was granted");
    info!("--- the first stream still works");
    let mut c = c;
    c.send_request(1, Request::WhoAmI).await;
    match c.next(Duration::from_secs(10)).await {
        Next::Frame(ServerFrame::Response { id: 1, result }) => {
            assert!(result.is_ok(), "{result:?}")
        }
        other => panic!("expected the answer, got {other:?}"),
    }
    tc.shutdown().await;
}
