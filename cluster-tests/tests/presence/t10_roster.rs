use crate::{fast_presence, Watch, WAIT};
use cluster_tests::{eventually, init_tracing, TestCluster};
use stoa_client::{ErrorCode, Roster, RosterChange, SettingsChange};
use tracing::info;

const ROOM: &str = "lobby";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_users_on_different_nodes_see_each_other_join_and_leave() {
    init_tracing();
    let tc = TestCluster::start_with(3, fast_presence).await;
    let admin = tc.client(1).await;
    let ann_token = admin.create_user("ann", false).await.expect("ann");
    let bob_token = admin.create_user("bob", false).await.expect("bob");

    info!("--- ann follows the room on node 1: she is told the roster, then herself joining");
    let ann = tc.user_client(0, &ann_token).await;
    let mut ann_sees = Watch::new(&ann, ROOM);
    ann.subscribe(ROOM, None).await.expect("subscribe");
    ann_sees.until_names(&["ann"]).await;
    assert!(
        matches!(ann_sees.log.first(), Some(RosterChange::All(_))),
        "the first event is the whole roster: {:?}",
        ann_sees.log
    );

    info!("--- bob joins on node 3: ann sees him arrive; his first roster has ann");
    let bob = tc.user_client(2, &bob_token).await;
    let mut bob_sees = Watch::new(&bob, ROOM);
    bob.join(ROOM).await.expect("join");
    ann_sees.until_names(&["ann", "bob"]).await;
    bob_sees.until_names(&["ann", "bob"]).await;

    info!("--- any node answers the roster read, to readers only");
    for i in 0..3 {
        let c = tc.client(i).await;
        eventually(WAIT, "every node knows both", || async {
            c.participants(ROOM).await.expect("participants")
                == Roster::Names(vec!["ann".into(), "bob".into()])
        })
        .await;
        c.close().await;
    }
    let e = admin.participants("no-such-room").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");

    info!("--- bob connected twice (node 2 and node 3) counts once, and stays until both leave");
    let bob_again = tc.user_client(1, &bob_token).await;
    bob_again.subscribe(ROOM, None).await.expect("subscribe");
    let node1 = tc.cluster.node(0).ctx.fanout.presence().clone();
    let room_id = tc
        .cluster
        .node(0)
        .ctx
        .meta
        .read(|m| m.room(ROOM).map(|r| r.id))
        .expect("the room");
    eventually(WAIT, "node 1 knows bob from nodes 2 and 3", || {
        let n = node1.nodes_reporting(room_id, "bob");
        async move { n == 2 }
    })
    .await;
    bob.unsubscribe(ROOM).await.expect("unsubscribe");
    // Still there through node 2: ann saw no leave (her next change is the one below).
    bob_again.close().await;
    ann_sees.until_names(&["ann"]).await;
    let bob_events: Vec<&RosterChange> = ann_sees
        .log
        .iter()
        .filter(|c| matches!(c, RosterChange::Joined(u) | RosterChange::Left(u) if u == "bob"))
        .collect();
    assert_eq!(
        bob_events,
        [
            &RosterChange::Joined("bob".into()),
            &RosterChange::Left("bob".into())
        ],
        "one join and one leave for bob's two connections"
    );

    for c in [ann, bob, admin] {
        c.close().await;
    }
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_above_the_limit_clients_get_one_notice_then_nothing_then_the_roster() {
    init_tracing();
    let tc = TestCluster::start_with(3, fast_presence).await;
    let admin = tc.client(1).await;
    let mut tokens = Vec::new();
    for name in ["ann", "bob", "cy", "dan"] {
        tokens.push(admin.create_user(name, false).await.expect("user"));
    }
    info!("--- the limit is set to 2 at run time (Config request)");
    let set = |limit| SettingsChange {
        participant_update_limit: Some(limit),
        ..Default::default()
    };
    admin.settings_set(set(2)).await.expect("limit 2");

    info!("--- ann (node 1) and bob (node 3): at the limit, updates flow");
    let ann = tc.user_client(0, &tokens[0]).await;
    let mut ann_sees = Watch::new(&ann, ROOM);
    ann.subscribe(ROOM, None).await.expect("subscribe");
    let bob = tc.user_client(2, &tokens[1]).await;
    bob.subscribe(ROOM, None).await.expect("subscribe");
    ann_sees.until_names(&["ann", "bob"]).await;

    info!("--- cy (node 2) makes 3: one notice with the count");
    let cy = tc.user_client(1, &tokens[2]).await;
    let mut cy_sees = Watch::new(&cy, ROOM);
    cy.subscribe(ROOM, None).await.expect("subscribe");
    ann_sees.until("the notice", |w| w.over.is_some()).await;
    assert_eq!(
        ann_sees.log.last(),
        Some(&RosterChange::OverLimit { count: 3, limit: 2 })
    );
    let notices = ann_sees.log.len();
    cy_sees.until("cy's notice", |w| w.over.is_some()).await;

    info!("--- dan (node 1) makes 4: no update, the read says the count");
    let dan = tc.user_client(0, &tokens[3]).await;
    dan.subscribe(ROOM, None).await.expect("subscribe");
    let over4 = Roster::OverLimit { count: 4, limit: 2 };
    eventually(WAIT, "4 participants", || async {
        ann.participants(ROOM).await.expect("participants") == over4
    })
    .await;
    eventually(WAIT, "4 participants seen from node 2", || async {
        cy.participants(ROOM).await.expect("participants") == over4
    })
    .await;

    info!("--- the limit goes up to 10: the full roster, and nothing between the notice and it");
    admin.settings_set(set(10)).await.expect("limit 10");
    ann_sees.until_names(&["ann", "bob", "cy", "dan"]).await;
    assert_eq!(
        &ann_sees.log[notices..],
        [RosterChange::All(vec![
            "ann".into(),
            "bob".into(),
            "cy".into(),
            "dan".into()
        ])],
        "no join or leave while above the limit"
    );

    info!("--- updates flow again: cy leaves");
    cy.close().await;
    ann_sees.until_names(&["ann", "bob", "dan"]).await;
    assert_eq!(ann_sees.log.last(), Some(&RosterChange::Left("cy".into())));

    for c in [ann, bob, dan, admin] {
        c.close().await;
    }
    tc.shutdown().await;
}
