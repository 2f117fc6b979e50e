use super::*;

const LOBBY: RoomId = 1;
const OPS: RoomId = 2;

fn limits() -> PresenceLimits {
    PresenceLimits {
        entries_per_node_max: 100,
        report_bytes_max: 1 << 20,
        expiry_ms: 3000,
        journal_max: 8,
    }
}

fn node(me: u64) -> Presence {
    Presence::new(me, 1000 + me, limits())
}

fn names(v: &[&str]) -> Roster {
    Roster::Names(v.iter().map(|s| s.to_string()).collect())
}

/// Sends `from`'s report for what `to` acked, the way the sender task does; answers the new ack.
fn sync(from: &Presence, to: &mut Presence, acked: Option<u64>, now_ms: u64) -> Option<u64> {
    let report = from.report_for(acked);
    let version = match &report.body {
        ReportBody::Full { version, .. } => *version,
        ReportBody::Delta { after, changes } => after + changes.len() as u64,
    };
    match to.receive(from.me, report, now_ms).0 {
        Ack::Applied => Some(version),
        Ack::NeedFull => None,
        Ack::Refused(e) => panic!("refused: {e}"),
    }
}

#[test]
fn local_join_and_leave_change_the_roster_once_per_user() {
    let mut p = node(1);
    assert!(p.local_join(LOBBY, "ann"));
    assert!(!p.local_join(LOBBY, "ann"), "a second connection of ann");
    assert!(p.local_join(LOBBY, "bob"));
    assert!(p.local_join(OPS, "ann"));
    assert_eq!(p.roster(LOBBY, 75), names(&["ann", "bob"]));
    assert_eq!(p.count(OPS), 1);
    assert!(p.local_leave(LOBBY, "ann"));
    assert!(!p.local_leave(LOBBY, "ann"), "already gone");
    assert!(!p.local_leave(LOBBY, "zed"), "never there");
    assert_eq!(p.roster(LOBBY, 75), names(&["bob"]));
    assert_eq!(p.local_entries(), 2);
    assert_eq!(p.version(), 4);
}

#[test]
fn a_user_on_two_nodes_counts_once_and_stays_until_both_leave() {
    let (mut a, mut b) = (node(1), node(2));
    a.local_join(LOBBY, "ann");
    b.local_join(LOBBY, "ann");
    b.local_join(LOBBY, "bob");
    let acked = sync(&b, &mut a, None, 0);
    assert_eq!(a.roster(LOBBY, 75), names(&["ann", "bob"]));
    assert_eq!(a.count(LOBBY), 2);
    assert_eq!(a.nodes_reporting(LOBBY, "ann"), 2);

    // ann leaves node 1: still connected through node 2.
    assert!(!a.local_leave(LOBBY, "ann"));
    assert_eq!(a.count(LOBBY), 2);
    // ann leaves node 2 too: now she is gone.
    b.local_leave(LOBBY, "ann");
    let r = b.report_for(acked);
    assert!(matches!(&r.body, ReportBody::Delta { changes, .. } if changes.len() == 1));
    let (ack, changed) = a.receive(2, r, 10);
    assert_eq!((ack, changed), (Ack::Applied, vec![LOBBY]));
    assert_eq!(a.roster(LOBBY, 75), names(&["bob"]));
}

#[test]
fn deltas_apply_only_on_the_version_they_extend() {
    let (mut a, mut b) = (node(1), node(2));
    b.local_join(LOBBY, "ann");
    let acked = sync(&b, &mut a, None, 0);
    assert_eq!(acked, Some(1));
    b.local_join(LOBBY, "bob");
    b.local_join(LOBBY, "cy");

    // A delta that skips a version (an earlier one was lost) is not applied.
    let skipping = Report {
        incarnation: b.incarnation(),
        body: ReportBody::Delta {
            after: 2,
            changes: vec![Change {
                room: LOBBY,
                user: "cy".into(),
                present: true,
            }],
        },
    };
    assert_eq!(a.receive(2, skipping, 5), (Ack::NeedFull, vec![]));
    assert_eq!(a.count(LOBBY), 1);

    // The right delta applies, and an empty one afterwards is a heartbeat.
    assert_eq!(sync(&b, &mut a, acked, 6), Some(3));
    assert_eq!(a.roster(LOBBY, 75), names(&["ann", "bob", "cy"]));
    let beat = b.report_for(Some(3));
    assert_eq!(
        beat.body,
        ReportBody::Delta {
            after: 3,
            changes: vec![]
        }
    );
    assert_eq!(a.receive(2, beat, 7).0, Ack::Applied);

    // A delta from a peer nothing is known of asks for the whole roster.
    let mut c = node(3);
    assert_eq!(c.receive(2, b.report_for(Some(3)), 8).0, Ack::NeedFull);
    assert_eq!(sync(&b, &mut c, None, 9), Some(3));
    assert_eq!(c.count(LOBBY), 3);
}

#[test]
fn a_peer_far_behind_gets_the_whole_roster() {
    let (mut a, mut b) = (node(1), node(2));
    let acked = sync(&b, &mut a, None, 0);
    assert_eq!(acked, Some(0));
    for i in 0..20 {
        b.local_join(LOBBY, &format!("u{i}"));
    }
    // The journal keeps 8 changes: a peer at version 0 is sent everything.
    assert!(matches!(
        b.report_for(acked).body,
        ReportBody::Full { version: 20, .. }
    ));
    assert_eq!(sync(&b, &mut a, acked, 1), Some(20));
    assert_eq!(a.count(LOBBY), 20);
    // One just behind still gets a delta.
    assert!(matches!(
        b.report_for(Some(19)).body,
        ReportBody::Delta { after: 19, ref changes } if changes.len() == 1
    ));
}

#[test]
fn a_silent_peer_expires_with_its_participants() {
    let (mut a, mut b) = (node(1), node(2));
    a.local_join(LOBBY, "ann");
    b.local_join(LOBBY, "ann");
    b.local_join(LOBBY, "bob");
    b.local_join(OPS, "bob");
    let acked = sync(&b, &mut a, None, 1000);
    assert_eq!(a.count(LOBBY), 2);

    // Heard at 1000; a heartbeat at 3000 keeps it.
    assert_eq!(sync(&b, &mut a, acked, 3000), acked);
    assert_eq!(a.expire(5500), (vec![], vec![]));
    // Silent for more than expiry_ms (3000): dropped. ann stays (she is local).
    assert_eq!(a.expire(6001), (vec![2], vec![LOBBY, OPS]));
    assert_eq!(a.roster(LOBBY, 75), names(&["ann"]));
    assert_eq!(a.count(OPS), 0);
    assert!(a.peers().is_empty());

    // When it speaks again, its delta is not enough: it sends everything.
    assert_eq!(a.receive(2, b.report_for(acked), 7000).0, Ack::NeedFull);
    assert_eq!(sync(&b, &mut a, None, 7000), acked);
    assert_eq!(a.count(LOBBY), 2);
}

#[test]
fn a_restarted_peer_replaces_what_its_previous_run_reported() {
    let mut a = node(1);
    let mut old = node(2);
    old.local_join(LOBBY, "ann");
    old.local_join(LOBBY, "bob");
    sync(&old, &mut a, None, 0);
    assert_eq!(a.count(LOBBY), 2);

    // The new run (a later incarnation) has only cy; its deltas are refused, its full roster
    // replaces the old one.
    let mut new = Presence::new(2, old.incarnation() + 1, limits());
    new.local_join(LOBBY, "cy");
    assert_eq!(
        a.receive(2, new.report_for(Some(new.version())), 1).0,
        Ack::NeedFull
    );
    let (ack, changed) = a.receive(2, new.report_for(None), 2);
    assert_eq!((ack, changed), (Ack::Applied, vec![LOBBY]));
    assert_eq!(a.roster(LOBBY, 75), names(&["cy"]));

    // A late report of the old run cannot bring its participants back.
    let (ack, _) = a.receive(2, old.report_for(None), 3);
    assert!(
        matches!(ack, Ack::Refused(ref e) if e.contains("older")),
        "{ack:?}"
    );
    assert_eq!(a.count(LOBBY), 0, "the peer's roster is dropped");
}

#[test]
fn untrusted_reports_are_bounded() {
    let mut a = node(1);
    a.local_join(LOBBY, "ann");
    let full = |rooms: Vec<(RoomId, Vec<String>)>| Report {
        incarnation: 7,
        body: ReportBody::Full { version: 1, rooms },
    };

    // More entries than entries_per_node_max (100): refused whole.
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let (ack, changed) = a.receive(2, full(vec![(LOBBY, many)]), 0);
    assert!(
        matches!(ack, Ack::Refused(ref e) if e.contains("101")),
        "{ack:?}"
    );
    assert!(changed.is_empty());
    assert_eq!(a.count(LOBBY), 1);

    // Duplicates count once, so 100 distinct names in 200 entries are fine.
    let dup: Vec<String> = (0..200).map(|i| format!("u{}", i % 100)).collect();
    assert_eq!(a.receive(2, full(vec![(LOBBY, dup)]), 0).0, Ack::Applied);
    assert_eq!(a.count(LOBBY), 101);

    // A delta that would pass the bound is refused, and the peer's roster dropped (nothing of it
    // lingers, and ann, who is local, stays).
    let over = Report {
        incarnation: 7,
        body: ReportBody::Delta {
            after: 1,
            changes: vec![Change {
                room: OPS,
                user: "one-too-many".into(),
                present: true,
            }],
        },
    };
    assert!(matches!(a.receive(2, over, 1).0, Ack::Refused(_)));
    assert_eq!(a.roster(LOBBY, 75), names(&["ann"]));
    assert_eq!(a.count(OPS), 0);

    // Names: empty, too long (in characters or in bytes) are refused.
    for bad in [
        String::new(),
        "x".repeat(NAME_CHARS_MAX + 1),
        "é".repeat(NAME_CHARS_MAX + 1),
        "x".repeat(1 << 20),
    ] {
        let (ack, _) = a.receive(3, full(vec![(LOBBY, vec![bad])]), 2);
        assert!(
            matches!(ack, Ack::Refused(ref e) if e.contains("name")),
            "{ack:?}"
        );
    }
    let longest = "é".repeat(NAME_CHARS_MAX);
    assert_eq!(
        a.receive(3, full(vec![(OPS, vec![longest])]), 2).0,
        Ack::Applied
    );

    // A node cannot report to itself.
    assert!(matches!(
        a.receive(1, full(vec![(OPS, vec!["x".into()])]), 2).0,
        Ack::Refused(_)
    ));
}

#[test]
fn full_reports_are_cut_at_the_bounds() {
    let mut p = Presence::new(
        1,
        1,
        PresenceLimits {
            entries_per_node_max: 5,
            ..limits()
        },
    );
    for i in 0..4 {
        p.local_join(LOBBY, &format!("u{i}"));
        p.local_join(OPS, &format!("u{i}"));
    }
    let ReportBody::Full { rooms, .. } = p.report_for(None).body else {
        panic!("a full report");
    };
    let entries: usize = rooms.iter().map(|(_, n)| n.len()).sum();
    assert_eq!(entries, 5);
    assert_eq!(
        rooms[0],
        (
            LOBBY,
            vec!["u0", "u1", "u2", "u3"]
                .into_iter()
                .map(String::from)
                .collect()
        )
    );
    // What is cut is accepted by a peer with the same bound.
    let mut q = Presence::new(
        2,
        2,
        PresenceLimits {
            entries_per_node_max: 5,
            ..limits()
        },
    );
    assert_eq!(q.receive(1, p.report_for(None), 0).0, Ack::Applied);
}

#[test]
fn roster_names_up_to_the_limit_then_the_count() {
    let mut p = node(1);
    for u in ["cy", "ann", "bob"] {
        p.local_join(LOBBY, u);
    }
    assert_eq!(p.roster(LOBBY, 3), names(&["ann", "bob", "cy"]));
    assert_eq!(p.roster(LOBBY, 2), Roster::OverLimit { count: 3, limit: 2 });
    assert_eq!(p.roster(OPS, 2), names(&[]));
}

#[test]
fn changes_while_at_or_below_the_limit_are_joins_and_leaves() {
    assert_eq!(
        changes(&names(&["ann", "bob"]), &names(&["bob", "cy"])),
        vec![
            RosterChange::Left("ann".into()),
            RosterChange::Joined("cy".into())
        ]
    );
    assert_eq!(changes(&names(&["ann"]), &names(&["ann"])), vec![]);
    assert_eq!(
        first_event(&names(&["ann"])),
        RosterChange::All(vec!["ann".into()])
    );
}

#[test]
fn crossing_the_limit_sends_one_notice_then_nothing_then_the_roster() {
    let over = |count| Roster::OverLimit { count, limit: 2 };
    // Going above: one notice with the count.
    assert_eq!(
        changes(&names(&["ann", "bob"]), &over(3)),
        vec![RosterChange::OverLimit { count: 3, limit: 2 }]
    );
    // Staying above, whatever moves: nothing.
    assert_eq!(changes(&over(3), &over(4)), vec![]);
    assert_eq!(changes(&over(4), &over(3)), vec![]);
    // Coming back to the limit: the whole roster.
    assert_eq!(
        changes(&over(3), &names(&["ann", "cy"])),
        vec![RosterChange::All(vec!["ann".into(), "cy".into()])]
    );
    // A connection that starts while above gets the notice first.
    assert_eq!(
        first_event(&over(9)),
        RosterChange::OverLimit { count: 9, limit: 2 }
    );
}

#[test]
fn a_lowered_limit_is_a_crossing_too() {
    let mut p = node(1);
    for u in ["ann", "bob", "cy"] {
        p.local_join(LOBBY, u);
    }
    let shown = p.roster(LOBBY, 75);
    let now = p.roster(LOBBY, 2);
    assert_eq!(
        changes(&shown, &now),
        vec![RosterChange::OverLimit { count: 3, limit: 2 }]
    );
    assert_eq!(
        changes(&now, &p.roster(LOBBY, 3)),
        vec![RosterChange::All(vec![
            "ann".into(),
            "bob".into(),
            "cy".into()
        ])]
    );
}
