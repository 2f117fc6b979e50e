use cluster_tests::raw::{self, RawConn, Transport};
use cluster_tests::{init_tracing, TestCluster};
use std::time::Duration;
use stoa_proto::{ClientFrame, ErrorCode, Hello, Request, ServerFrame, PROTOCOL_VERSION};
use tracing::info;

/// The node's hello deadline (`session::HELLO_TIMEOUT`) plus slack.
const HELLO_WAIT: Duration = Duration::from_secs(15);

/// The stream carries exactly one frame, a goodbye with `code`, and then ends.
async fn only_goodbye(c: &mut RawConn, code: ErrorCode, what: &str) {
    let (frames, end) = c.rest(HELLO_WAIT).await;
    info!(what, ?frames, end, "answer to an unauthenticated client");
    match &frames[..] {
        [ServerFrame::Goodbye(e)] => assert_eq!(e.code, code, "{what}: {e}"),
        other => panic!("{what}: expected one goodbye, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_unauthenticated_clients_get_one_error_and_a_closed_stream() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let addr = tc.cluster.addrs()[0];
    let endpoint = raw::endpoint();
    let cfg = raw::client_config(&tc.cluster.ca_pem_path(), Transport::default());

    let garbage = async {
        let mut c = RawConn::open(&endpoint, &cfg, addr).await;
        let mut bytes = 5u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff; 5]);
        c.send_bytes(&bytes).await.expect("write");
        only_goodbye(&mut c, ErrorCode::Invalid, "a garbage first frame").await;
    };
    let request_first = async {
        let mut c = RawConn::open(&endpoint, &cfg, addr).await;
        c.send_request(1, Request::WhoAmI).await;
        c.send_request(2, Request::ListRooms).await;
        only_goodbye(
            &mut c,
            ErrorCode::Unauthenticated,
            "a request before the hello",
        )
        .await;
    };
    let wrong_token = async {
        let mut c = RawConn::open(&endpoint, &cfg, addr).await;
        c.send_frame(&ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            token: "not-a-token".into(),
        }))
        .await;
        c.send_request(1, Request::WhoAmI).await;
        only_goodbye(&mut c, ErrorCode::Unauthenticated, "a wrong token").await;
    };
    let wrong_version = async {
        let mut c = RawConn::open(&endpoint, &cfg, addr).await;
        c.send_frame(&ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION + 41,
            token: tc.admin_token.clone(),
        }))
        .await;
        only_goodbye(&mut c, ErrorCode::Invalid, "a wrong protocol version").await;
    };
    let half_hello = async {
        let mut c = RawConn::open(&endpoint, &cfg, addr).await;
        c.send_bytes(&[0, 0]).await.expect("write");
        only_goodbye(
            &mut c,
            ErrorCode::Unauthenticated,
            "a hello that never completes",
        )
        .await;
    };
    let no_stream = async {
        let conn = raw::dial(&endpoint, &cfg, addr).await.expect("handshake");
        let reason = tokio::time::timeout(HELLO_WAIT, conn.closed())
            .await
            .expect("a connection without a stream is closed by the hello deadline");
        info!(%reason, "a connection that never opens a stream");
        assert!(
            matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(2)),
            "{reason}"
        );
    };
    let well_behaved = async {
        let c = tc.client(0).await;
        for i in 0..20 {
            c.post_with_id("lobby", &format!("m{i}"), &format!("m{i}"), false)
                .await
                .expect("a signed-in client keeps posting");
        }
        c.whoami().await.expect("whoami").user
    };
    info!("--- six kinds of unauthenticated client at once, and one signed-in client");
    let ((), (), (), (), (), (), user) = tokio::join!(
        garbage,
        request_first,
        wrong_token,
        wrong_version,
        half_hello,
        no_stream,
        well_behaved
    );
    assert_eq!(user, "admin");
    tc.shutdown().await;
}
