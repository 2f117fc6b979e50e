//! The write-ahead log on its own: reopening, segments, purging, torn writes, corruption.
//! openraft's storage suite runs against it too, through `LogStore` (`store::tests`).

use super::*;
use crate::raft::Command;
use openraft::{CommittedLeaderId, EntryPayload};
use std::io::Write;
use tempfile::TempDir;

const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);

/// Small segments and a small cache, so a few hundred entries cross many files and most reads
/// go to disk.
fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 512,
        cache_bytes_per_group: 256,
    }
}

fn id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Normal(Command::Fence {
            meta_index: index * 1000 + term,
        }),
    }
}

fn wait(rx: oneshot::Receiver<io::Result<()>>) {
    rx.blocking_recv()
        .expect("writer answered")
        .expect("durable");
}

fn append(wal: &Wal, g: GroupId, term: u64, indexes: std::ops::RangeInclusive<u64>) {
    let (tx, rx) = oneshot::channel();
    let entries = indexes.map(|i| entry(term, i)).collect();
    wal.append(g, entries, Waiter::Notify(tx)).unwrap();
    wait(rx);
}

fn read(wal: &Wal, g: GroupId, start: u64, end: u64) -> Vec<Entry> {
    wal.load(wal.plan_read(g, start, end)).unwrap()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

/// Everything a reader can see of a group: vote, committed, purged, last, entries.
type Seen = (
    Option<Vote>,
    Option<LogId>,
    Option<LogId>,
    Option<LogId>,
    Vec<Entry>,
);

fn snapshot(wal: &Wal, g: GroupId) -> Seen {
    let (purged, last) = wal.log_state(g);
    (
        wal.vote(g),
        wal.committed(g),
        purged,
        last,
        read(wal, g, 0, u64::MAX),
    )
}

#[test]
fn entries_votes_and_truncations_survive_a_reopen_across_many_segments() {
    let dir = TempDir::new().unwrap();
    let before = {
        let wal = Wal::open(dir.path(), small()).unwrap();
        for batch in 0..20 {
            append(&wal, G1, 1, batch * 10..=batch * 10 + 9);
            append(&wal, G2, 1, batch * 10..=batch * 10 + 9);
        }
        wait(wal.save_vote(G1, Vote::new_committed(3, 2)));
        wal.save_committed(G1, Some(id(1, 150))).unwrap();
        wal.truncate(G2, 150).unwrap();
        append(&wal, G2, 2, 150..=160);
        assert!(segment_files(dir.path()).len() > 10);
        assert!(wal.cached_bytes() <= 2 * 256, "the cache stays bounded");
        let g1 = read(&wal, G1, 95, 105);
        assert_eq!(
            g1.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (95..105).collect::<Vec<_>>()
        );
        assert_eq!(g1[0], entry(1, 95));
        (snapshot(&wal, G1), snapshot(&wal, G2))
    };
    assert_eq!(before.1 .3, Some(id(2, 160)));
    assert_eq!(before.1 .4.len(), 161);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!((snapshot(&wal, G1), snapshot(&wal, G2)), before);
    // The reopened log goes on where it stopped.
    append(&wal, G1, 1, 200..=200);
    assert_eq!(wal.log_state(G1).1, Some(id(1, 200)));
}

#[test]
fn an_entry_that_would_leave_a_hole_is_refused_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append(&wal, G1, 1, 1..=3);
    let (tx, _rx) = oneshot::channel();
    let err = wal
        .append(G1, vec![entry(1, 5)], Waiter::Notify(tx))
        .unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Hole {
                index: 5,
                expected: 4,
                ..
            }
        ),
        "{err}"
    );
    let (tx, _rx) = oneshot::channel();
    let err = wal
        .append(G1, vec![entry(1, 4), entry(1, 6)], Waiter::Notify(tx))
        .unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Hole {
                index: 6,
                expected: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(wal.log_state(G1).1, Some(id(1, 3)));
    // After a purge past the end, the log goes on right after the purge point.
    wait(wal.purge(G1, id(1, 10)));
    let (tx, _rx) = oneshot::channel();
    assert!(wal
        .append(G1, vec![entry(1, 12)], Waiter::Notify(tx))
        .is_err());
    append(&wal, G1, 1, 11..=11);
    assert_eq!(wal.log_state(G1), (Some(id(1, 10)), Some(id(1, 11))));
}

#[test]
fn purged_segments_are_deleted_and_the_log_reopens_without_them() {
    let dir = TempDir::new().unwrap();
    let before = {
        let wal = Wal::open(dir.path(), small()).unwrap();
        for batch in 0..10 {
            append(&wal, G1, 1, batch * 10 + 1..=batch * 10 + 10);
            append(&wal, G2, 1, batch * 10 + 1..=batch * 10 + 10);
        }
        let all = segment_files(dir.path()).len();
        // G1 still holds entries in the first segment: nothing can go.
        wait(wal.purge(G2, id(1, 60)));
        assert_eq!(wal.delete_dead_segments(), 0);
        wait(wal.purge(G1, id(1, 80)));
        let deleted = wal.delete_dead_segments();
        assert!(deleted > 0);
        assert_eq!(segment_files(dir.path()).len(), all - deleted);
        // Entries still live read back, from files that were kept.
        assert_eq!(read(&wal, G2, 61, 63), vec![entry(1, 61), entry(1, 62)]);
        (snapshot(&wal, G1), snapshot(&wal, G2))
    };
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!((snapshot(&wal, G1), snapshot(&wal, G2)), before);
    // Purging everything leaves only the segments this run wrote.
    wait(wal.purge(G1, id(1, 100)));
    wait(wal.purge(G2, id(1, 100)));
    append(&wal, G1, 1, 101..=101);
    wal.delete_dead_segments();
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.log_state(G1), (Some(id(1, 100)), Some(id(1, 101))));
    assert_eq!(wal.log_state(G2), (Some(id(1, 100)), Some(id(1, 100))));
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().unwrap()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_write_torn_at_the_end_is_cut_off() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        append(&wal, G1, 1, 0..=4);
    }
    let last = last_segment(dir.path());
    let len = std::fs::metadata(&last).unwrap().len();
    // A whole header, and the record's body cut short.
    let mut torn = Vec::new();
    let e = entry(1, 5);
    record::encode_into(
        &Record::Entry {
            group: G1,
            entry: &e,
        },
        &mut torn,
    )
    .unwrap();
    torn.truncate(torn.len() - 3);
    append_bytes(&last, &torn);
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        assert_eq!(read(&wal, G1, 0, 10).len(), 5);
        append(&wal, G1, 1, 5..=5);
    }
    assert_eq!(std::fs::metadata(&last).unwrap().len(), len, "cut back");
    // Zeros where a write should have been, at the end of the last segment.
    append_bytes(&last_segment(dir.path()), &[0; 64]);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.log_state(G1).1, Some(id(1, 5)));
}

#[test]
fn damage_before_the_end_refuses_the_open() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        append(&wal, G1, 1, 0..=100);
    }
    let files = segment_files(dir.path());
    assert!(files.len() > 3);
    // A flipped byte inside a segment that is not the last.
    let mut bytes = std::fs::read(&files[1]).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&files[1], &bytes).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(WalError::Corrupt { .. }) => {}
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
    bytes[n / 2] ^= 0x40;
    std::fs::write(&files[1], &bytes).unwrap();
    drop(Wal::open(dir.path(), small()).unwrap());
    // A whole segment missing from the middle is a hole in the log.
    std::fs::remove_file(&files[1]).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(WalError::Corrupt { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_quiet_group_that_pins_old_segments_is_named_and_a_busy_one_is_not() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append(&wal, G1, 1, 1..=2);
    for batch in 0..30 {
        append(&wal, G2, 1, batch * 10 + 1..=batch * 10 + 10);
    }
    // G2 wrote most of what it pins; G1 holds two entries in the first segment.
    assert_eq!(wal.groups_pinning_segments(), vec![G1]);
    wait(wal.purge(G2, id(1, 290)));
    assert_eq!(wal.delete_dead_segments(), 0, "G1 pins them");
    wait(wal.purge(G1, id(1, 2)));
    assert!(wal.delete_dead_segments() > 3);
    assert!(wal.groups_pinning_segments().is_empty());
}

#[test]
fn a_damaged_length_at_the_end_is_corruption_not_a_torn_write() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        append(&wal, G1, 1, 0..=3);
    }
    // The last segment's first record claims to be longer than the file: without the header's
    // own checksum this would read as a torn write, and opening would cut synced records off.
    let last = last_segment(dir.path());
    let mut bytes = std::fs::read(&last).unwrap();
    bytes[1] ^= 0x10;
    std::fs::write(&last, &bytes).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(WalError::Corrupt { reason, .. }) => assert!(reason.contains("header"), "{reason}"),
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn small_segments_left_by_restarts_do_not_count_as_pinned() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        append(&wal, G1, 1, 0..=1);
    }
    for _ in 0..6 {
        let wal = Wal::open(dir.path(), small()).unwrap();
        wal.save_committed(G1, Some(id(1, 1))).unwrap();
        wait(wal.save_vote(G1, Vote::new_committed(1, 1)));
    }
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert!(segment_files(dir.path()).len() >= 7);
    assert!(wal.groups_pinning_segments().is_empty());
}

#[test]
fn a_sound_header_over_a_body_with_a_sector_of_zeros_at_the_end_is_a_torn_write() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        append(&wal, G1, 1, 0..=2);
    }
    let post = crate::domain::shard::ProposedPost {
        room_id: 1,
        room: "lobby".into(),
        author: "ann".into(),
        client_msg_id: "c1".into(),
        text: "x".repeat(3000),
        alert: false,
        ts_ms: 1,
        file: None,
        checked_at: 0,
    };
    let big = Entry {
        log_id: id(1, 3),
        payload: EntryPayload::Normal(Command::Posts(vec![post])),
    };
    let mut torn = Vec::new();
    record::encode_into(
        &Record::Entry {
            group: G1,
            entry: &big,
        },
        &mut torn,
    )
    .unwrap();
    // The pages of a write reach the disk in any order: here a middle sector never did.
    let last = last_segment(dir.path());
    let start = std::fs::metadata(&last).unwrap().len() as usize;
    let sector = (start / 512 + 2) * 512 - start;
    torn[sector..sector + 512].fill(0);
    append_bytes(&last, &torn);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.log_state(G1).1, Some(id(1, 2)));
    assert_eq!(std::fs::metadata(&last).unwrap().len() as usize, start);
}
