//! Moderation and files on 3 nodes: what one node accepts, every node shows.

use bytes::Bytes;
use cluster_tests::raw::{self, Next, RawConn, Transport};
use cluster_tests::{init_tracing, next_delivered, words_in, TestCluster};
use std::time::Duration;
use stoa_client::{Client, ErrorCode, Seq};
use stoa_proto::{
    CategorySpec, Event, Invitations, Message, MessageFilter, MessageQuery, ModerateOp, Moderation,
    ModerationAction, Principal, Privacy, Request, Response, RoomSpec, RoomType, ServerFrame,
    SettingsChange, DEFAULT_REPLACEMENT,
};
use tracing::info;

async fn user(tc: &TestCluster, name: &str, node: usize) -> Client {
    let token = tc
        .client(0)
        .await
        .create_user(name, false)
        .await
        .expect("create user");
    tc.user_client(node, &token).await
}

/// Subscribe to `town` again as a client holding messages up to `after` that has seen
/// `moderated_after` moderations; answers the node's answer and the messages it sends replaced:
/// `want` of them, and any more that come while the stream stays busy; and the highest moderation
/// count its `Replaced` events carried.
async fn resume(
    conn: &mut RawConn,
    id: u64,
    after: Seq,
    moderated_after: u64,
    want: usize,
) -> (Response, Vec<Message>, Option<u64>) {
    let request = Request::Subscribe {
        room: "town".into(),
        after: Some(after),
        moderated_after: Some(moderated_after),
    };
    conn.send_request(id, request).await;
    let (mut answer, mut replaced, mut told) = (None, Vec::new(), None);
    loop {
        let wait = match answer {
            Some(_) if replaced.len() >= want => Duration::from_millis(300),
            _ => Duration::from_secs(10),
        };
        match conn.next(wait).await {
            Next::Frame(ServerFrame::Response { id: got, result }) if got == id => {
                answer = Some(result.expect("subscribed"));
            }
            Next::Frame(ServerFrame::Event(Event::Replaced {
                messages,
                moderation,
                ..
            })) => {
                replaced.extend(messages);
                told = told.max(Some(moderation));
            }
            Next::Frame(_) => {} // the roster
            Next::Silent => match answer {
                Some(a) if replaced.len() >= want => return (a, replaced, told),
                _ => panic!("no answer or too few replaced: {answer:?} {replaced:?}"),
            },
            Next::End(why) | Next::Undecodable(why) => panic!("the stream ended: {why}"),
        }
    }
}

async fn category_and_room(admin: &Client, category: &str, room: &str, file_upload: bool) {
    category_and_room_keeping(admin, category, room, file_upload, true).await;
}

/// A category and a room in it; `chat_history`: whether the category keeps history.
async fn category_and_room_keeping(
    admin: &Client,
    category: &str,
    room: &str,
    file_upload: bool,
    chat_history: bool,
) {
    admin
        .category_create(CategorySpec {
            name: category.into(),
            description: String::new(),
            allowed: vec![Principal::Everyone],
            denied: vec![],
            creators: vec![],
            file_upload,
            invitations: true,
            chat_history,
        })
        .await
        .expect("category");
    admin
        .room_create(RoomSpec {
            name: room.into(),
            category: category.into(),
            description: String::new(),
            privacy: Privacy::Open,
            room_type: RoomType::Normal,
            invitations: Invitations::Inherit,
            addin: None,
        })
        .await
        .expect("room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t40_moderation_reaches_live_clients_history_and_search_on_every_node() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let admin = tc.client(0).await;
    category_and_room(&admin, "talk", "town", false).await;
    let ann = user(&tc, "ann", 1).await;
    let bob = user(&tc, "bob", 2).await;
    let mut bob_events = bob.events().expect("events");
    bob.subscribe("town", None).await.expect("subscribe");
    for (i, text) in [
        "good morning",
        "the secret code is 4711",
        "lunch at noon",
        "SECRET plans attached",
    ]
    .iter()
    .enumerate()
    {
        ann.post_with_id("town", text, &format!("m{i}"), false)
            .await
            .expect("post");
    }
    for _ in 0..4 {
        next_delivered(&mut bob_events).await;
    }

    info!("--- authors cannot moderate");
    let refused = ann
        .moderate(ModerateOp::Messages {
            filter: MessageFilter {
                room: Some("town".into()),
                ..Default::default()
            },
            action: ModerationAction::Remove,
        })
        .await
        .expect_err("ann is no administrator");
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));

    info!("--- the administrator replaces every message with 'secret', through node 1");
    let n = admin
        .moderate(ModerateOp::Messages {
            filter: words_in("town", &["secret"]),
            action: ModerationAction::Replace { text: None },
        })
        .await
        .expect("moderate");
    assert_eq!(n, 2);

    info!("--- bob, live on node 3, is told");
    let mut replaced = Vec::new();
    for _ in 0..100 {
        replaced.extend(bob.replaced());
        if replaced.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seqs: Vec<u64> = replaced.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, [2, 4]);
    assert!(replaced
        .iter()
        .all(|m| m.text == DEFAULT_REPLACEMENT && m.moderated == Some(Moderation::Replaced)));

    info!("--- every node's history shows the replacements in place, and search forgets the words");
    for node in 0..3 {
        let reader = tc.client(node).await;
        let expected = [
            "good morning",
            DEFAULT_REPLACEMENT,
            "lunch at noon",
            DEFAULT_REPLACEMENT,
        ];
        // A follower applies the moderation a moment after the leader answered.
        let mut texts = Vec::new();
        for _ in 0..100 {
            let (messages, last) = reader
                .history("town", None, None, 10)
                .await
                .expect("history");
            assert_eq!(last, Seq(4));
            texts = messages.into_iter().map(|m| m.text).collect::<Vec<_>>();
            if texts == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(texts, expected, "node {node}");
        let found = reader
            .search_messages(MessageQuery {
                text: "secret".into(),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("search");
        assert!(found.is_empty(), "node {node} still finds {found:?}");
        reader.close().await;
    }

    info!("--- a client that was away is sent the replacements when it resumes, on every node");
    let endpoint = raw::endpoint();
    let cfg = raw::client_config(&tc.cluster.ca_pem_path(), Transport::default());
    for node in 0..3 {
        let addr = tc.cluster.addrs()[node];
        let (mut away, _) = RawConn::signed_in(&endpoint, &cfg, addr, &tc.admin_token).await;
        // It holds messages 1 to 4 and has seen no moderation of the room. The answer keeps
        // its count; the last replaced frame brings it to the room's.
        let (answer, replaced, told) = resume(&mut away, 1, Seq(4), 0, 2).await;
        assert!(
            matches!(
                answer,
                Response::Subscribed {
                    last_seq: Seq(4),
                    moderation: 0,
                    ..
                }
            ),
            "node {node}: {answer:?}"
        );
        assert_eq!(told, Some(1));
        let expected = [(2, DEFAULT_REPLACEMENT), (4, DEFAULT_REPLACEMENT)];
        let got: Vec<(u64, &str)> = replaced
            .iter()
            .map(|m| (m.seq.0, m.text.as_str()))
            .collect();
        assert_eq!(got, expected, "node {node}");
        // One that saw it is sent nothing; one holding only messages before the changed ones
        // is told the count alone.
        let (answer, replaced, told) = resume(&mut away, 2, Seq(4), 1, 0).await;
        assert!(matches!(answer, Response::Subscribed { moderation: 1, .. }));
        assert_eq!((replaced.len(), told), (0, None), "node {node}");
        let (_, replaced, told) = resume(&mut away, 3, Seq(1), 0, 0).await;
        assert_eq!((replaced.len(), told), (0, Some(1)), "node {node}");
    }

    info!("--- clearing the history through now removes everything, keeping the seqs");
    let through_ms = stoa_node::net::session::now_ms();
    let n = admin
        .moderate(ModerateOp::ClearHistory {
            room: "town".into(),
            through_ms,
        })
        .await
        .expect("clear");
    assert_eq!(n, 4);
    let (messages, _) = admin
        .history("town", None, None, 10)
        .await
        .expect("history");
    assert_eq!(messages.len(), 4);
    assert!(messages
        .iter()
        .all(|m| m.moderated == Some(Moderation::Removed) && m.text.is_empty()));
    let posted = ann.post("town", "after the clear").await.expect("post");
    assert_eq!(posted.seq, Seq(5), "the sequence goes on without a gap");
    for c in [admin, ann, bob] {
        c.close().await;
    }
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t40_a_resume_after_many_moderations_gets_them_all_in_pages() {
    init_tracing();
    // Pages of at most two messages: each moderation below is a page of its own.
    let tc = TestCluster::start_with(3, |c| c.limits.subscribe_backlog_max = 2).await;
    let admin = tc.client(0).await;
    category_and_room(&admin, "talk", "town", false).await;
    for i in 0..6 {
        admin
            .post_with_id(
                "town",
                &format!("word{} filler", i / 2),
                &format!("m{i}"),
                false,
            )
            .await
            .expect("post");
    }
    for word in ["word0", "word1", "word2"] {
        let n = admin
            .moderate(ModerateOp::Messages {
                filter: words_in("town", &[word]),
                action: ModerationAction::Remove,
            })
            .await
            .expect("moderate");
        assert_eq!(n, 2);
    }
    // Node 1 has applied all three (it may be a follower, a moment behind).
    for _ in 0..100 {
        let (messages, _) = admin
            .history("town", None, None, 10)
            .await
            .expect("history");
        if messages.iter().all(|m| m.moderated.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addr = tc.cluster.addrs()[0];
    let endpoint = raw::endpoint();
    let cfg = raw::client_config(&tc.cluster.ca_pem_path(), Transport::default());
    let (mut away, _) = RawConn::signed_in(&endpoint, &cfg, addr, &tc.admin_token).await;
    let (answer, replaced, told) = resume(&mut away, 1, Seq(6), 0, 6).await;
    assert!(matches!(answer, Response::Subscribed { moderation: 0, .. }));
    let seqs: Vec<u64> = replaced.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert!(replaced
        .iter()
        .all(|m| m.moderated == Some(Moderation::Removed)));
    assert_eq!(told, Some(3));
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t40_joining_a_long_room_that_keeps_no_history_goes_live_from_now() {
    init_tracing();
    let tc = TestCluster::start_with(3, |c| c.limits.subscribe_backlog_max = 2).await;
    let admin = tc.client(0).await;
    category_and_room_keeping(&admin, "ephemeral", "now", false, false).await;
    for i in 0..5 {
        admin
            .post_with_id("now", "before", &format!("b{i}"), false)
            .await
            .expect("post");
    }
    let ann = user(&tc, "ann", 1).await;
    let mut events = ann.events().expect("events");
    let (shown, last) = ann
        .join("now")
        .await
        .expect("join a room longer than the backlog limit");
    assert!(shown.is_empty());
    assert_eq!(last, Seq(5));
    admin
        .post_with_id("now", "after", "a0", false)
        .await
        .expect("post");
    let live = next_delivered(&mut events).await;
    assert!(format!("{live:?}").contains("after"), "{live:?}");
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t40_files_upload_on_one_node_and_download_checked_on_another() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let admin = tc.client(0).await;
    category_and_room(&admin, "docs", "library", true).await;
    category_and_room(&admin, "plain", "chatter", false).await;
    let ann = user(&tc, "ann", 0).await;
    let bob = user(&tc, "bob", 2).await;

    info!("--- a file of several chunks goes in through node 1");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let (posted, file) = ann
        .upload(
            "library",
            "report.bin",
            Bytes::from(data.clone()),
            "Q3 report",
        )
        .await
        .expect("upload");
    assert_eq!(file.size, data.len() as u64);

    info!("--- bob reads it through node 3: in history, and downloaded intact");
    // Node 3 applies the post a moment after node 1 acknowledged it.
    let mut found = None;
    for _ in 0..100 {
        let (messages, _) = bob
            .history("library", None, None, 10)
            .await
            .expect("history");
        found = messages.into_iter().find(|m| m.seq == posted.seq);
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = found.expect("the file post reaches node 3");
    assert_eq!(m.text, "Q3 report");
    assert_eq!(m.file.as_ref(), Some(&file));
    let (got_file, got) = bob.download("library", &file.id).await.expect("download");
    assert_eq!(got_file, file);
    assert!(got == data, "downloaded bytes differ");

    info!("--- refused before any byte: uploads off in the category, too large, unknown file");
    let e = ann
        .upload("chatter", "a.txt", Bytes::from_static(b"hi"), "")
        .await
        .expect_err("uploads are off");
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    admin
        .settings_set(SettingsChange {
            max_file_size_kb: Some(100),
            ..Default::default()
        })
        .await
        .expect("settings");
    let e = ann
        .upload("library", "big.bin", Bytes::from(vec![0u8; 200 << 10]), "")
        .await
        .expect_err("over max_file_size_kb");
    assert_eq!(e.code(), Some(ErrorCode::TooLarge));
    let e = bob
        .download("library", "no-such-file")
        .await
        .expect_err("unknown file");
    assert_eq!(e.code(), Some(ErrorCode::NotFound));

    info!("--- a removed file cannot be downloaded any more");
    admin
        .moderate(ModerateOp::Messages {
            filter: MessageFilter {
                room: Some("library".into()),
                author: Some("ann".into()),
                ..Default::default()
            },
            action: ModerationAction::Remove,
        })
        .await
        .expect("remove");
    let e = bob
        .download("library", &file.id)
        .await
        .expect_err("removed");
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    for c in [admin, ann, bob] {
        c.close().await;
    }
    tc.shutdown().await;
}
