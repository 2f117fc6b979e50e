use crate::{fast_presence, Watch, WAIT};
use cluster_tests::{eventually, init_tracing, TestCluster};
use stoa_client::Roster;
use tracing::info;

const ROOM: &str = "lobby";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_a_stopped_nodes_participants_disappear_and_a_restart_keeps_none() {
    init_tracing();
    let mut tc = TestCluster::start_with(3, fast_presence).await;
    let admin = tc.client(1).await;
    let ann_token = admin.create_user("ann", false).await.expect("ann");
    let bob_token = admin.create_user("bob", false).await.expect("bob");

    info!("--- ann on node 1, bob on node 3");
    let ann = tc.user_client(0, &ann_token).await;
    let mut ann_sees = Watch::new(&ann, ROOM);
    ann.subscribe(ROOM, None).await.expect("subscribe");
    let bob = tc.user_client(2, &bob_token).await;
    bob.subscribe(ROOM, None).await.expect("subscribe");
    ann_sees.until_names(&["ann", "bob"]).await;

    info!("--- node 3 stops: its participants expire everywhere");
    tc.stop(2).await;
    ann_sees.until_names(&["ann"]).await;
    eventually(WAIT, "node 2 forgets bob", || async {
        admin.participants(ROOM).await.expect("participants") == Roster::Names(vec!["ann".into()])
    })
    .await;
    drop(bob);

    info!("--- node 3 restarts: it reports no one, and its new participants show");
    tc.restart(2).await;
    let cy_token = admin.create_user("cy", false).await.expect("cy");
    let cy = tc.user_client(2, &cy_token).await;
    cy.subscribe(ROOM, None).await.expect("subscribe");
    ann_sees.until_names(&["ann", "cy"]).await;
    let fresh = tc.client(2).await;
    eventually(WAIT, "node 3 knows ann and cy, and no bob", || async {
        fresh.participants(ROOM).await.expect("participants")
            == Roster::Names(vec!["ann".into(), "cy".into()])
    })
    .await;

    info!("--- a partitioned node's participants expire, and come back when it heals");
    tc.isolate(2);
    ann_sees.until_names(&["ann"]).await;
    tc.heal();
    ann_sees.until_names(&["ann", "cy"]).await;

    for c in [ann, cy, fresh, admin] {
        c.close().await;
    }
    tc.shutdown().await;
}
