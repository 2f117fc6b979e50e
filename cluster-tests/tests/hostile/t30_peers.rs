use cluster_tests::{init_tracing, raw, TestCluster};
use openraft::raft::VoteRequest;
use openraft::Vote;
use std::time::Duration;
use stoa_node::net::peer::{PeerRequest, PeerResponse, PEER_MESSAGE_BYTES_MAX};
use stoa_node::net::tls::{self, NodeTls};
use stoa_node::raft::GroupId;
use stoa_proto::{node_server_name, NodeId};
use tempfile::TempDir;
use tracing::info;

/// A harmless request: a vote in a group that does not exist (a real group would be disturbed).
fn vote_in_no_group() -> Vec<u8> {
    stoa_proto::encode(&PeerRequest::Vote {
        group: GroupId(99),
        rpc: VoteRequest::new(Vote::new(1, 2), None),
    })
    .expect("encode")
}

/// Dials node 1 as a peer presenting `identity`, sends `payload` as one call, and returns the
/// decoded answer or why there was none.
async fn call(
    addr: std::net::SocketAddr,
    identity: &NodeTls,
    payload: &[u8],
) -> Result<PeerResponse, String> {
    let cfg = identity.peer_client_config().map_err(|e| e.to_string())?;
    let endpoint = raw::endpoint();
    let out = async {
        let conn = raw::dial_as(&endpoint, &cfg, addr, &node_server_name(NodeId(1))).await?;
        // Errors carry the connection's close reason, when the node gave one.
        let why = |e: String| match conn.close_reason() {
            Some(reason) => format!("{e} ({reason})"),
            None => e,
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| why(e.to_string()))?;
        send.write_all(payload)
            .await
            .map_err(|e| why(e.to_string()))?;
        send.finish().map_err(|e| why(e.to_string()))?;
        let bytes = recv
            .read_to_end(PEER_MESSAGE_BYTES_MAX)
            .await
            .map_err(|e| why(e.to_string()))?;
        stoa_proto::decode::<PeerResponse>(&bytes).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_peers_with_a_foreign_or_non_member_certificate_are_refused() {
    init_tracing();
    info!("--- the cluster CA also signs a certificate for node 9, which is not a member");
    let dir = TempDir::new().expect("temp dir");
    let ids = [NodeId(1), NodeId(2), NodeId(3), NodeId(9)];
    let certs = tls::generate(&ids).expect("certificates");
    tls::write_generated(&dir.path().join("certs"), &certs).expect("write certificates");
    std::fs::write(dir.path().join("ca.pem"), &certs.ca_cert_pem).expect("write the CA");
    let cert_of = |id: u64| {
        let (_, cert, key) = certs
            .nodes
            .iter()
            .find(|(n, _, _)| n.0 == id)
            .expect("generated");
        NodeTls::from_pem(&certs.ca_cert_pem, cert, key).expect("node TLS")
    };
    let tc = TestCluster::start_in(dir, 3, |_| {}).await;
    let addr = tc.cluster.addrs()[0];

    info!("--- control: node 2's own certificate is served (a vote in no group is refused)");
    match call(addr, &cert_of(2), &vote_in_no_group()).await {
        Ok(PeerResponse::Refused(why)) => assert!(why.contains("no group"), "{why}"),
        other => panic!("a member's call was not served: {other:?}"),
    }
    match call(addr, &cert_of(2), b"\xff\xff\xff garbage").await {
        Ok(PeerResponse::Refused(why)) => assert!(why.contains("malformed"), "{why}"),
        other => panic!("a malformed request from a member: {other:?}"),
    }

    info!("--- a valid cluster certificate for node 9, not a member: refused");
    let r = call(addr, &cert_of(9), &vote_in_no_group()).await;
    info!(?r, "non-member");
    let why = r.expect_err("a non-member was served");
    assert!(why.contains("not a cluster member"), "{why}");

    info!("--- a certificate for node 2 signed by another CA: refused in the handshake");
    let foreign = tls::generate(&[NodeId(2)]).expect("a foreign CA");
    let (_, cert, key) = &foreign.nodes[0];
    let mut impostor = NodeTls::from_pem(&foreign.ca_cert_pem, cert, key).expect("TLS");
    // Trust the real cluster CA, so only the node's check of our certificate can fail.
    impostor.ca = cert_of(2).ca;
    let r = call(addr, &impostor, &vote_in_no_group()).await;
    info!(?r, "foreign CA");
    let why = r.expect_err("a certificate from a foreign CA was served");
    assert!(why.contains("certificate"), "{why}");

    info!("--- a client connection (ALPN stoa/1) cannot make peer calls");
    let endpoint = raw::endpoint();
    let cfg = raw::client_config(&tc.cluster.ca_pem_path(), raw::Transport::default());
    let conn = raw::dial(&endpoint, &cfg, addr)
        .await
        .expect("client handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&vote_in_no_group()).await.expect("write");
    let _ = send.finish();
    let answer = tokio::time::timeout(Duration::from_secs(15), recv.read_to_end(1 << 20))
        .await
        .expect("the node ends the stream");
    if let Ok(bytes) = answer {
        assert!(
            stoa_proto::decode::<PeerResponse>(&bytes).is_err(),
            "a client got a peer answer"
        );
    }

    info!("--- a member's connection is raised past a client's one stream: calls run side by side");
    let cfg = cert_of(2).peer_client_config().expect("peer config");
    let conn = raw::dial_as(&endpoint, &cfg, addr, &node_server_name(NodeId(1)))
        .await
        .expect("peer handshake");
    // The first call is held open (not finished), so a second stream needs a limit above one.
    let (mut held, _held_recv) = conn.open_bi().await.expect("first stream");
    held.write_all(&[0]).await.expect("write");
    let second = tokio::time::timeout(Duration::from_secs(10), conn.open_bi())
        .await
        .expect("a second stream while the first is open")
        .expect("stream");
    let (mut send, mut recv) = second;
    send.write_all(&vote_in_no_group()).await.expect("write");
    send.finish().expect("finish");
    let bytes = recv
        .read_to_end(PEER_MESSAGE_BYTES_MAX)
        .await
        .expect("answer");
    assert!(matches!(
        stoa_proto::decode::<PeerResponse>(&bytes),
        Ok(PeerResponse::Refused(_))
    ));

    info!("--- the cluster is unharmed");
    let c = tc.client(0).await;
    c.post_with_id("lobby", "still here", "x", false)
        .await
        .expect("post");
    tc.shutdown().await;
}
