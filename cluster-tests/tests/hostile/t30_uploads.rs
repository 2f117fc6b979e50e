//! A client that misuses the upload protocol gets a typed error for each mistake, the upload is
//! dropped, and nothing it sent is posted.

use bytes::Bytes;
use cluster_tests::raw::{self, Next, RawConn, Transport};
use cluster_tests::{init_tracing, TestCluster};
use std::time::Duration;
use stoa_proto::{
    CategoryChange, CategoryOp, ErrorCode, Request, Response, ServerFrame, UploadBegin,
};
use tracing::info;

const WAIT: Duration = Duration::from_secs(10);

async fn answer(c: &mut RawConn, id: u64, body: Request) -> Result<Response, stoa_proto::ApiError> {
    c.send_request(id, body).await;
    loop {
        match c.next(WAIT).await {
            Next::Frame(ServerFrame::Response { id: got, result }) if got == id => return result,
            Next::Frame(_) => continue,
            other => panic!("request {id}: {other:?}"),
        }
    }
}

fn begin(name: &str, size: u64, sha256: &str, cid: &str) -> Request {
    Request::UploadBegin(UploadBegin {
        room: "lobby".into(),
        name: name.into(),
        size,
        sha256: sha256.into(),
        client_msg_id: cid.into(),
        text: String::new(),
    })
}

fn code(r: Result<Response, stoa_proto::ApiError>) -> ErrorCode {
    r.expect_err("refused").code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_upload_mistakes_get_typed_errors_and_post_nothing() {
    init_tracing();
    let tc = TestCluster::start(3).await;
    let endpoint = raw::endpoint();
    let cfg = raw::client_config(&tc.cluster.ca_pem_path(), Transport::default());
    let (mut c, _) =
        RawConn::signed_in(&endpoint, &cfg, tc.cluster.addrs()[0], &tc.admin_token).await;
    let mut id = 0;
    let mut next = || {
        id += 1;
        id
    };
    let zeros = "0".repeat(64);

    info!("--- a category that forbids uploads: refused before any byte");
    let uploads = |on| {
        Request::Category(CategoryOp::Update {
            name: "demo".into(),
            change: CategoryChange {
                file_upload: Some(on),
                ..Default::default()
            },
        })
    };
    assert!(matches!(
        answer(&mut c, next(), uploads(false)).await,
        Ok(Response::Done)
    ));
    assert_eq!(
        code(answer(&mut c, next(), begin("a.txt", 3, &zeros, "c1")).await),
        ErrorCode::Forbidden
    );
    assert!(matches!(
        answer(&mut c, next(), uploads(true)).await,
        Ok(Response::Done)
    ));

    info!("--- malformed announcements");
    assert_eq!(
        code(answer(&mut c, next(), begin("../etc/passwd", 3, &zeros, "c1")).await),
        ErrorCode::Invalid
    );
    assert_eq!(
        code(answer(&mut c, next(), begin("a.txt", 3, "not-hex", "c1")).await),
        ErrorCode::Invalid
    );
    assert_eq!(
        code(answer(&mut c, next(), begin("a.txt", 3, &zeros, "")).await),
        ErrorCode::Invalid
    );
    assert_eq!(
        code(answer(&mut c, next(), begin("a.txt", 1 << 40, &zeros, "c1")).await),
        ErrorCode::TooLarge
    );

    info!("--- chunks out of order, too many bytes, unknown uploads, a wrong hash");
    let ready = |r| match r {
        Ok(Response::UploadReady { upload, .. }) => upload,
        other => panic!("{other:?}"),
    };
    let chunk = |upload, offset, data: &'static [u8]| Request::UploadChunk {
        upload,
        offset,
        data: Bytes::from_static(data),
    };
    let u = ready(answer(&mut c, next(), begin("a.txt", 3, &zeros, "c1")).await);
    assert_eq!(
        code(answer(&mut c, next(), chunk(u, 1, b"b")).await),
        ErrorCode::Invalid
    );
    // The mistake dropped the upload.
    assert_eq!(
        code(answer(&mut c, next(), chunk(u, 0, b"a")).await),
        ErrorCode::NotFound
    );
    let u = ready(answer(&mut c, next(), begin("a.txt", 3, &zeros, "c2")).await);
    assert_eq!(
        code(answer(&mut c, next(), chunk(u, 0, b"abcd")).await),
        ErrorCode::Invalid
    );
    let u = ready(answer(&mut c, next(), begin("a.txt", 3, &zeros, "c3")).await);
    assert!(matches!(
        answer(&mut c, next(), chunk(u, 0, b"ab")).await,
        Ok(Response::UploadReceived { bytes: 2 })
    ));
    assert_eq!(
        code(answer(&mut c, next(), Request::UploadCommit { upload: u }).await),
        ErrorCode::Invalid,
        "short"
    );
    let u = ready(answer(&mut c, next(), begin("a.txt", 3, &zeros, "c4")).await);
    assert!(answer(&mut c, next(), chunk(u, 0, b"abc")).await.is_ok());
    assert_eq!(
        code(answer(&mut c, next(), Request::UploadCommit { upload: u }).await),
        ErrorCode::Invalid,
        "hash"
    );
    assert_eq!(
        code(answer(&mut c, next(), Request::UploadCommit { upload: 999 }).await),
        ErrorCode::NotFound
    );

    info!("--- at most two uploads open per connection");
    ready(answer(&mut c, next(), begin("a.txt", 3, &zeros, "c5")).await);
    ready(answer(&mut c, next(), begin("a.txt", 3, &zeros, "c6")).await);
    assert_eq!(
        code(answer(&mut c, next(), begin("a.txt", 3, &zeros, "c7")).await),
        ErrorCode::RateLimited
    );

    info!("--- nothing was posted");
    let history = Request::History {
        room: "lobby".into(),
        before: None,
        after: None,
        limit: 10,
    };
    match answer(&mut c, next(), history).await {
        Ok(Response::History { messages, .. }) => assert!(messages.is_empty(), "{messages:?}"),
        other => panic!("{other:?}"),
    }
    tc.shutdown().await;
}
