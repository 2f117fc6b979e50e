use cluster_tests::{init_tracing, next_delivered, TestCluster};
use std::time::Duration;
use stoa_node::domain::meta::MetaCommand;
use stoa_node::raft::{Command, CommandResult, GroupId};
use stoa_proto::{ErrorCode, RoomOp};
use tracing::info;

const ROOM: &str = "lobby";

async fn admin_change(tc: &TestCluster, op: RoomOp) {
    let node = tc.cluster.node(0);
    let cmd = MetaCommand::Room {
        by: "admin".into(),
        op,
        shard: 0,
        shard_count: node.ctx.config.cluster.shards,
    };
    match node
        .ctx
        .proposals
        .propose(GroupId::META, Command::Meta(cmd))
        .await
    {
        Ok(CommandResult::Meta(Ok(_))) => {}
        other => panic!("directory change failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_disabling_a_room_ends_live_delivery_everywhere_and_refuses_posts() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let token = tc
        .client(0)
        .await
        .create_user("ann", false)
        .await
        .expect("create ann");
    let ann = |i: usize| tc.user_client(i, &token);

    info!("--- ann follows the room from nodes 2 and 3 and receives a post");
    let (a2, a3) = (ann(1).await, ann(2).await);
    let mut e2 = a2.events().expect("events");
    a2.subscribe(ROOM, None).await.expect("subscribe");
    a3.subscribe(ROOM, None).await.expect("subscribe");
    a3.post_with_id(ROOM, "before", "b1", false)
        .await
        .expect("post");
    let m = next_delivered(&mut e2).await;
    assert_eq!(m.text, "before");

    info!("--- the administrator disables the room: both connections are told, posts are refused");
    admin_change(
        &tc,
        RoomOp::SetDisabled {
            name: ROOM.into(),
            disabled: true,
        },
    )
    .await;
    for (n, c) in [(2, &a2), (3, &a3)] {
        let mut closed = Vec::new();
        for _ in 0..100 {
            closed = c.closed_rooms();
            if !closed.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(closed.len(), 1, "node {n}: no RoomClosed");
        assert_eq!(
            (closed[0].0.as_str(), closed[0].1.code),
            (ROOM, ErrorCode::Forbidden),
            "node {n}"
        );
    }
    // A disabled room cannot be found by a non-manager: it answers not_found.
    let e = a3
        .post_with_id(ROOM, "during", "b2", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    assert!(a2
        .list_rooms()
        .await
        .expect("list")
        .iter()
        .all(|r| r.name != ROOM));

    info!("--- enabled again, the room works and its history is intact");
    admin_change(
        &tc,
        RoomOp::SetDisabled {
            name: ROOM.into(),
            disabled: false,
        },
    )
    .await;
    let p = a3
        .post_with_id(ROOM, "after", "b3", false)
        .await
        .expect("post after enable");
    assert_eq!(p.seq.0, 2);
    // Read through node 2, which applies the post a moment after the leader acknowledged it.
    cluster_tests::eventually(
        Duration::from_secs(10),
        "node 2 has both messages",
        || async {
            let (h, _) = a2.history(ROOM, None, None, 10).await.expect("history");
            h.iter().map(|m| m.text.as_str()).collect::<Vec<_>>() == ["before", "after"]
        },
    )
    .await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_invitations_followed_rooms_and_message_search() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let admin = tc.client(0).await;
    let token = admin.create_user("ann", false).await.expect("create ann");
    admin
        .room_create(stoa_proto::RoomSpec {
            name: "ops".into(),
            category: "demo".into(),
            description: "operations".into(),
            privacy: stoa_proto::Privacy::Closed,
            room_type: stoa_proto::RoomType::Normal,
            invitations: stoa_proto::Invitations::Inherit,
            addin: None,
        })
        .await
        .expect("create ops");

    info!("--- ann is made a member of a closed room: it is in her invitations, once");
    admin
        .room_role("ops", stoa_proto::Role::Member, "ann", true)
        .await
        .expect("add member");
    let ann = tc.user_client(2, &token).await;
    assert_eq!(
        ann.invitations().await.expect("invitations"),
        vec!["ops".to_string()]
    );
    assert!(ann.invitations().await.expect("invitations").is_empty());

    info!("--- she follows it; posts from elsewhere show as unread until she marks them read");
    ann.follow("ops", true).await.expect("follow");
    for text in ["deploy tonight at nine", "the deploy is done", "lunch?"] {
        admin.post("ops", text).await.expect("post");
    }
    // Counted from node 3's replica of the shard, which applies the posts a moment after node 1.
    cluster_tests::eventually(Duration::from_secs(10), "3 unread on node 3", || async {
        ann.followed()
            .await
            .map(|f| f.len() == 1 && f[0].room == "ops" && f[0].unread == 3)
            .unwrap_or(false)
    })
    .await;
    ann.mark_read("ops", stoa_proto::Seq(2))
        .await
        .expect("mark read");
    // Read-your-writes: the marker is visible on ann's node as soon as mark_read answers.
    let after = ann.followed().await.expect("followed");
    assert_eq!(after[0].unread, 1, "{after:?}");
    let joined = ann.join_followed().await.expect("join followed");
    assert_eq!(joined.len(), 1);

    info!("--- message search finds the deploy messages, newest first, only where she may read");
    let query = stoa_proto::MessageQuery {
        text: "deploy".into(),
        limit: 10,
        ..Default::default()
    };
    let mut found = Vec::new();
    for _ in 0..50 {
        found = ann.search_messages(query.clone()).await.expect("search");
        if found.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // the index commits about once a second
    }
    assert_eq!(
        found.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["the deploy is done", "deploy tonight at nine"]
    );
    admin.post(ROOM, "deploy in the lobby").await.expect("post");
    let e = ann
        .search_messages(stoa_proto::MessageQuery {
            room: Some("nowhere".into()),
            ..query
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    tc.shutdown().await;
}

/// DESIGN §2.4: a post whose right was checked against the directory before a revocation is never
/// applied after the revocation was acknowledged, on any replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_a_post_checked_before_a_revocation_is_sent_back_after_it() {
    use stoa_node::domain::shard::ProposedPost;
    use stoa_proto::{Privacy, Role, RoomChange};
    init_tracing();
    let tc = TestCluster::start(3).await;
    let admin = tc.client(0).await;
    let token = admin.create_user("ann", false).await.expect("ann");
    admin
        .room_update(
            ROOM,
            RoomChange {
                privacy: Some(Privacy::Closed),
                ..Default::default()
            },
        )
        .await
        .expect("close the room");
    admin
        .room_role(ROOM, Role::Member, "ann", true)
        .await
        .expect("ann is a member");
    // Node 2 checks ann's posts against its own replica of the directory.
    let changed_at = tc.cluster.node(0).ctx.meta.applied_index();
    cluster_tests::eventually(
        Duration::from_secs(10),
        "node 2 has applied the membership",
        || async { tc.cluster.node(1).ctx.meta.applied_index() >= changed_at },
    )
    .await;
    let ann = tc.user_client(1, &token).await;
    ann.post_with_id(ROOM, "while a member", "p1", false)
        .await
        .expect("a member posts");

    info!("--- a post checked now, while ann is a member, is held back until after her removal");
    let node = tc.cluster.node(1);
    let checked_at = node.ctx.meta.applied_index();
    let (room_id, shard) = node
        .ctx
        .meta
        .read(|m| m.room(ROOM).map(|r| (r.id, r.shard)))
        .expect("room");
    admin
        .room_role(ROOM, Role::Member, "ann", false)
        .await
        .expect("ann removed");
    let stale = ProposedPost {
        room_id,
        room: ROOM.into(),
        author: "ann".into(),
        client_msg_id: "p2".into(),
        text: "checked before the removal".into(),
        alert: false,
        ts_ms: stoa_node::net::session::now_ms(),
        file: None,
        checked_at,
    };
    let refused = node.ctx.proposers[shard as usize - 1]
        .post(stale)
        .await
        .expect_err("sent back by the shard");
    assert_eq!(refused.code, ErrorCode::Unavailable, "{refused}");

    info!("--- sent again through the SDK, it is checked afresh and refused for good");
    let e = ann
        .post_with_id(ROOM, "checked before the removal", "p2", false)
        .await
        .expect_err("no longer a member");
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    let (messages, last) = admin.history(ROOM, None, None, 10).await.expect("history");
    assert_eq!(last, stoa_proto::Seq(1), "{messages:?}");
    ann.close().await;
    admin.close().await;
    tc.shutdown().await;
}

/// A revoking change whose proposer never fenced the shards (here: proposed straight to the meta
/// group, as if the proposing node had died right after the commit) is fenced by the shards'
/// leaders on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_shard_leaders_fence_a_revocation_nobody_fenced() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    admin_change(
        &tc,
        RoomOp::SetDisabled {
            name: ROOM.into(),
            disabled: true,
        },
    )
    .await;
    let want = tc.cluster.node(0).ctx.meta.read(|m| m.revoked_at());
    assert!(want > 0, "disabling a room may revoke rights");
    let mut fences = Vec::new();
    for _ in 0..200 {
        fences = (0..3)
            .flat_map(|i| {
                let node = tc.cluster.node(i);
                node.ctx
                    .shards
                    .iter()
                    .map(|s| s.fence())
                    .collect::<Vec<_>>()
            })
            .collect();
        if fences.iter().all(|f| *f >= want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fences.iter().all(|f| *f >= want),
        "fences {fences:?}, want {want}"
    );
    tc.shutdown().await;
}
