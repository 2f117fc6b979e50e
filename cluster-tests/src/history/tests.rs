//! The checker on hand-made histories: a correct one passes, and each broken rule is reported
//! with the kind of violation that names it. A checker that cannot fail proves nothing.

use super::*;
use stoa_proto::{ApiError, ErrorCode};

const ROOM: &str = "lobby";

fn msg(seq: u64, text: &str) -> Message {
    Message {
        room: ROOM.into(),
        seq: Seq(seq),
        author: "admin".into(),
        text: text.into(),
        ts_ms: 1000 + seq,
        alert: false,
        moderated: None,
        file: None,
    }
}

/// Records a post of `text` (client message id `id-<text>`) with `outcome`.
fn post(h: &History, text: &str, outcome: Outcome) -> OpId {
    let op = h.post_sent("c1", ROOM, "admin", &format!("id-{text}"), text);
    h.post_outcome(op, outcome);
    op
}

fn acked(seq: u64) -> Outcome {
    Outcome::Acked(Seq(seq))
}

fn unknown() -> Outcome {
    Outcome::Unknown("timed out".into())
}

/// Three acknowledged posts a, b, c at seqs 1, 2, 3, not read yet.
fn posted() -> History {
    let h = History::new();
    for (i, t) in ["a", "b", "c"].iter().enumerate() {
        post(&h, t, acked(i as u64 + 1));
    }
    h
}

/// The same final read from each of three nodes.
fn final_reads(h: &History, stored: &[Message]) {
    for node in 0..3 {
        h.final_read(node, ROOM, stored.to_vec());
    }
}

/// Three acknowledged posts stored the same on three nodes and delivered to one client.
fn good() -> History {
    let h = posted();
    let stored = vec![msg(1, "a"), msg(2, "b"), msg(3, "c")];
    final_reads(&h, &stored);
    h.subscribed("c2", ROOM, Seq(0));
    for m in &stored {
        h.delivered("c2", m);
    }
    h
}

/// The violations of `h`, which must not pass.
fn violations(h: &History) -> Vec<Violation> {
    match h.check() {
        Ok(s) => panic!("a broken history passed the checker: {s}"),
        Err(v) => v,
    }
}

#[test]
fn a_correct_history_passes() {
    let s = good().check().expect("correct history");
    assert_eq!((s.rooms, s.stored, s.acked, s.delivered), (1, 3, 3, 3));
}

#[test]
fn a_correct_history_with_unknown_and_failed_posts_and_lagging_reads_passes() {
    let h = posted();
    post(&h, "lost", unknown()); // never stored: fine
    post(&h, "late", unknown()); // stored once: fine
    post(&h, "refused", Outcome::Failed("not_found".into()));
    post(&h, "pending", Outcome::Pending);
    // A read taken earlier, before the last message, is a prefix: fine.
    h.node_read(1, ROOM, vec![msg(1, "a"), msg(2, "b")]);
    final_reads(&h, &[msg(1, "a"), msg(2, "b"), msg(3, "c"), msg(4, "late")]);
    // A client that subscribed after seq 2 and got 3.
    h.subscribed("c3", ROOM, Seq(2));
    h.delivered("c3", &msg(3, "c"));
    let s = h.check().expect("correct history");
    assert_eq!((s.unknown, s.unknown_stored, s.failed), (3, 1, 1));
}

#[test]
fn a_gap_in_a_node_read_is_found() {
    let h = good();
    h.node_read(1, ROOM, vec![msg(1, "a"), msg(3, "c")]);
    let v = violations(&h);
    assert!(
        matches!(
            &v[..],
            [Violation::Gap {
                index: 1,
                seq: Seq(3),
                ..
            }]
        ),
        "{v:?}"
    );
}

#[test]
fn a_read_that_does_not_start_at_one_is_a_gap() {
    let h = good();
    h.node_read(2, ROOM, vec![msg(2, "b"), msg(3, "c")]);
    let v = violations(&h);
    assert!(matches!(&v[..], [Violation::Gap { index: 0, .. }]), "{v:?}");
}

#[test]
fn nodes_disagreeing_on_a_seq_is_found() {
    let h = good();
    // Node 2 holds b and c in the other order.
    h.node_read(1, ROOM, vec![msg(1, "a"), msg(2, "c"), msg(3, "b")]);
    let v = violations(&h);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::Diverged { seq: Seq(2), .. })),
        "{v:?}"
    );
}

#[test]
fn a_final_read_behind_the_others_is_found() {
    let h = good();
    h.final_read(2, ROOM, vec![msg(1, "a")]);
    let v = violations(&h);
    assert!(
        matches!(
            &v[..],
            [Violation::FinalReadShort {
                node: 2,
                len: 1,
                reference_len: 3,
                ..
            }]
        ),
        "{v:?}"
    );
}

#[test]
fn an_acknowledged_post_that_is_not_stored_is_found() {
    let h = good();
    post(&h, "d", acked(4));
    let v = violations(&h);
    assert!(
        matches!(&v[..], [Violation::AckedMissing { seq: Seq(4), .. }]),
        "{v:?}"
    );
}

#[test]
fn an_acknowledged_post_without_any_read_of_its_room_is_missing() {
    let h = History::new();
    post(&h, "a", acked(1));
    let v = violations(&h);
    assert!(matches!(&v[..], [Violation::AckedMissing { .. }]), "{v:?}");
}

#[test]
fn an_acknowledged_post_stored_at_another_seq_is_found() {
    let h = History::new();
    post(&h, "a", acked(2));
    post(&h, "b", unknown());
    h.final_read(0, ROOM, vec![msg(1, "a"), msg(2, "b")]);
    let v = violations(&h);
    assert!(
        matches!(
            &v[..],
            [Violation::AckedMoved {
                acked: Seq(2),
                stored: Seq(1),
                ..
            }]
        ),
        "{v:?}"
    );
}

#[test]
fn a_retry_acknowledged_with_a_second_seq_is_found() {
    let h = good();
    // The same client message id as "a", sent again, answered with another seq.
    let op = h.post_sent("c1", ROOM, "admin", "id-a", "a");
    h.post_outcome(op, acked(3));
    let v = violations(&h);
    assert!(
        v.iter().any(
            |x| matches!(x, Violation::AckedDifferently { seqs, .. } if seqs == &[Seq(1), Seq(3)])
        ),
        "{v:?}"
    );
}

#[test]
fn an_acknowledged_post_stored_twice_is_found() {
    let h = History::new();
    post(&h, "a", acked(1));
    h.final_read(0, ROOM, vec![msg(1, "a"), msg(2, "a")]);
    let v = violations(&h);
    assert!(
        matches!(&v[..], [Violation::Duplicate { seqs, .. }] if seqs == &[Seq(1), Seq(2)]),
        "{v:?}"
    );
}

#[test]
fn a_post_with_unknown_outcome_stored_twice_is_found() {
    let h = posted();
    post(&h, "d", unknown());
    final_reads(
        &h,
        &[
            msg(1, "a"),
            msg(2, "b"),
            msg(3, "c"),
            msg(4, "d"),
            msg(5, "d"),
        ],
    );
    let v = violations(&h);
    assert!(
        matches!(&v[..], [Violation::Duplicate { seqs, .. }] if seqs == &[Seq(4), Seq(5)]),
        "{v:?}"
    );
}

#[test]
fn a_stored_message_nobody_posted_is_found() {
    let h = posted();
    final_reads(
        &h,
        &[msg(1, "a"), msg(2, "b"), msg(3, "c"), msg(4, "ghost")],
    );
    let v = violations(&h);
    assert!(
        v.iter().any(
            |x| matches!(x, Violation::NeverPosted { seq: Seq(4), text, .. } if text == "ghost")
        ),
        "{v:?}"
    );
}

#[test]
fn a_delivered_message_nobody_posted_is_found() {
    let h = good();
    h.subscribed("c3", ROOM, Seq(0));
    h.delivered("c3", &msg(1, "a"));
    h.delivered("c3", &msg(2, "ghost"));
    let v = violations(&h);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::NeverPosted { source, .. } if source.contains("c3"))),
        "{v:?}"
    );
}

#[test]
fn a_failed_post_that_is_stored_is_found() {
    let h = posted();
    h.post_outcome(
        post(&h, "d", Outcome::Pending),
        Outcome::of(&Err(ClientError::Api(ApiError::new(
            ErrorCode::Forbidden,
            "no",
        )))),
    );
    final_reads(&h, &[msg(1, "a"), msg(2, "b"), msg(3, "c"), msg(4, "d")]);
    let v = violations(&h);
    assert!(
        matches!(&v[..], [Violation::FailedButStored { seq: Seq(4), .. }]),
        "{v:?}"
    );
}

#[test]
fn a_retryable_error_is_an_unknown_outcome_not_a_failure() {
    let unavailable = Outcome::of(&Err(ClientError::Api(ApiError::new(
        ErrorCode::Unavailable,
        "no leader",
    ))));
    assert!(matches!(unavailable, Outcome::Unknown(_)));
    let timeout = Outcome::of(&Err(ClientError::Timeout(std::time::Duration::from_secs(
        1,
    ))));
    assert!(matches!(timeout, Outcome::Unknown(_)));
    let refused = Outcome::of(&Err(ClientError::Api(ApiError::new(
        ErrorCode::TooLarge,
        "big",
    ))));
    assert!(matches!(refused, Outcome::Failed(_)));
}

#[test]
fn a_delivery_gap_is_found() {
    let h = good();
    h.subscribed("c3", ROOM, Seq(0));
    h.delivered("c3", &msg(1, "a"));
    h.delivered("c3", &msg(3, "c"));
    let v = violations(&h);
    assert!(
        matches!(
            &v[..],
            [Violation::Gap {
                index: 1,
                expected: Seq(2),
                seq: Seq(3),
                ..
            }]
        ),
        "{v:?}"
    );
}

#[test]
fn a_duplicate_delivery_is_found() {
    let h = good();
    h.subscribed("c3", ROOM, Seq(0));
    h.delivered("c3", &msg(1, "a"));
    h.delivered("c3", &msg(1, "a"));
    let v = violations(&h);
    assert!(matches!(&v[..], [Violation::Gap { .. }]), "{v:?}");
}

#[test]
fn a_delivery_that_differs_from_storage_is_found() {
    let h = good();
    h.subscribed("c3", ROOM, Seq(0));
    h.delivered("c3", &msg(1, "a"));
    let mut other = msg(2, "b");
    other.ts_ms += 1;
    h.delivered("c3", &other);
    let v = violations(&h);
    assert!(
        matches!(&v[..], [Violation::Diverged { seq: Seq(2), .. }]),
        "{v:?}"
    );
}

#[test]
fn a_delivery_starting_elsewhere_than_asked_is_found() {
    let h = good();
    h.subscribed("c3", ROOM, Seq(0));
    h.delivered("c3", &msg(2, "b"));
    let v = violations(&h);
    assert!(
        matches!(
            &v[..],
            [Violation::DeliveryStart {
                after: Seq(0),
                first: Seq(2),
                ..
            }]
        ),
        "{v:?}"
    );
}

#[test]
fn a_delivered_message_that_no_node_stores_is_found() {
    let h = good();
    post(&h, "d", unknown());
    h.subscribed("c3", ROOM, Seq(2));
    h.delivered("c3", &msg(3, "c"));
    h.delivered("c3", &msg(4, "d"));
    let v = violations(&h);
    assert!(
        matches!(
            &v[..],
            [Violation::DeliveredNotStored {
                seq: Seq(4),
                reference_len: 3,
                ..
            }]
        ),
        "{v:?}"
    );
}

#[test]
#[should_panic(expected = "reused")]
fn the_recorder_refuses_one_text_for_two_posts() {
    let h = History::new();
    h.post_sent("c1", ROOM, "admin", "x1", "same");
    h.post_sent("c1", ROOM, "admin", "x2", "same");
}

#[test]
fn assert_ok_lists_every_violation() {
    let h = good();
    post(&h, "d", acked(4));
    post(&h, "e", acked(5));
    let err = std::panic::catch_unwind(|| h.assert_ok()).expect_err("must fail");
    let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("2 guarantee(s)"), "{text}");
    assert!(text.contains("\"d\"") && text.contains("\"e\""), "{text}");
}
