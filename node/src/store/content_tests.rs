//! Moderation and files as a shard's state machine applies them, entry by entry and within one
//! applied batch.

use super::sm::{Applied, ShardView, StateMachine};
use super::Store;
use crate::domain::shard::{FileChunk, ProposedPost};
use crate::raft::{Command, CommandResult, Entry, GroupId, LogId, Moderate, SnapshotMeta};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};
use std::sync::Arc;
use stoa_proto::{
    ErrorCode, FileRef, KeywordMatch, Message, MessageFilter, Moderation, ModerationAction, Seq,
    DEFAULT_REPLACEMENT,
};
use tempfile::TempDir;
use tokio::sync::mpsc;

const ROOM: u64 = 9;

struct Shard {
    _dir: TempDir,
    store: Arc<Store>,
    sm: StateMachine,
    view: ShardView,
    applied: mpsc::Receiver<Vec<Applied>>,
    index: u64,
}

impl Shard {
    async fn new() -> Shard {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, applied) = mpsc::channel(64);
        let (sm, view) = StateMachine::open_shard(store.clone(), GroupId(1), Some(tx))
            .await
            .unwrap();
        Shard {
            _dir: dir,
            store,
            sm,
            view,
            applied,
            index: 0,
        }
    }

    /// Apply commands as one batch of entries; answers their results.
    async fn apply(&mut self, cmds: Vec<Command>) -> Vec<CommandResult> {
        let entries: Vec<Entry> = cmds
            .into_iter()
            .map(|c| {
                self.index += 1;
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
                    payload: EntryPayload::Normal(c),
                }
            })
            .collect();
        self.sm.apply(entries).await.unwrap()
    }

    async fn messages(&self) -> Vec<Message> {
        self.view
            .read(ROOM, "r".into(), Seq::ZERO, Seq(u64::MAX), 100, false)
            .await
            .unwrap()
    }

    fn events(&mut self) -> Vec<Applied> {
        let mut out = Vec::new();
        while let Ok(batch) = self.applied.try_recv() {
            out.extend(batch);
        }
        out
    }
}

fn post(cid: &str, author: &str, text: &str, ts_ms: u64) -> ProposedPost {
    ProposedPost {
        room_id: ROOM,
        room: "r".into(),
        author: author.into(),
        client_msg_id: cid.into(),
        text: text.into(),
        alert: false,
        ts_ms,
        file: None,
        checked_at: 0,
    }
}

fn moderate(filter: MessageFilter, action: ModerationAction) -> Command {
    Command::Moderate(Moderate {
        room_id: Some(ROOM),
        filter,
        action,
    })
}

fn keywords(words: &[&str], matching: KeywordMatch) -> MessageFilter {
    MessageFilter {
        room: Some("r".into()),
        keywords: words.iter().map(|w| w.to_string()).collect(),
        matching,
        ..Default::default()
    }
}

#[tokio::test]
async fn moderation_in_the_same_batch_as_the_posts_sees_them_and_keeps_their_places() {
    let mut shard = Shard::new().await;
    let results = shard
        .apply(vec![
            Command::Posts(vec![
                post("a", "ann", "the launch is on Friday", 1),
                post("b", "bob", "LAUNCH codes are 1234", 2),
            ]),
            moderate(
                keywords(&["launch", "codes"], KeywordMatch::All),
                ModerationAction::Replace { text: None },
            ),
            Command::Posts(vec![post("c", "ann", "launch codes again", 3)]),
        ])
        .await;
    assert_eq!(results[1], CommandResult::Moderated(Ok(1)));
    let texts: Vec<(u64, String, Option<Moderation>)> = shard
        .messages()
        .await
        .into_iter()
        .map(|m| (m.seq.0, m.text, m.moderated))
        .collect();
    assert_eq!(
        texts,
        vec![
            (1, "the launch is on Friday".into(), None),
            (2, DEFAULT_REPLACEMENT.into(), Some(Moderation::Replaced)),
            // Posted after the moderation: not touched by it.
            (3, "launch codes again".into(), None),
        ]
    );
    // Live delivery gets the replacement in log order, between the posts around it.
    let kinds: Vec<String> = shard
        .events()
        .iter()
        .map(|e| match e {
            Applied::Posted(_, m) => format!("post {}", m.seq),
            Applied::Installed(_) => "install".into(),
            Applied::Replaced { messages, .. } => format!("replace {}", messages[0].seq),
        })
        .collect();
    assert_eq!(kinds, ["post 1", "post 2", "replace 2", "post 3"]);
}

#[tokio::test]
async fn removal_by_author_and_time_leaves_tombstones_and_keeps_the_first_original() {
    let mut shard = Shard::new().await;
    shard
        .apply(vec![Command::Posts(vec![
            post("a", "ann", "one", 10),
            post("b", "bob", "two", 20),
            post("c", "bob", "three", 30),
        ])])
        .await;
    let by_bob_early = MessageFilter {
        room: Some("r".into()),
        author: Some("bob".into()),
        to_ms: Some(25),
        ..Default::default()
    };
    let replace = ModerationAction::Replace {
        text: Some("[gone]".into()),
    };
    assert_eq!(
        shard
            .apply(vec![moderate(by_bob_early.clone(), replace)])
            .await,
        vec![CommandResult::Moderated(Ok(1))]
    );
    assert_eq!(
        shard
            .apply(vec![moderate(by_bob_early, ModerationAction::Remove)])
            .await,
        vec![CommandResult::Moderated(Ok(1))]
    );
    let msgs = shard.messages().await;
    assert_eq!(msgs.len(), 3, "no hole: {msgs:?}");
    assert_eq!(msgs[1].moderated, Some(Moderation::Removed));
    assert_eq!(msgs[1].text, "");
    assert_eq!(msgs[1].author, "bob");
    assert_eq!(msgs[2].text, "three");
    // The original text stays on disk for compliance, not the intermediate replacement.
    let original = shard
        .store
        .sm
        .get(super::keys::original(GroupId(1), ROOM, 2))
        .unwrap()
        .expect("original kept");
    let original: crate::domain::shard::StoredMessage = stoa_proto::decode(&original).unwrap();
    assert_eq!(original.text, "two");
    // Removing again selects nothing.
    let clear = MessageFilter {
        room: Some("r".into()),
        to_ms: Some(20),
        ..Default::default()
    };
    assert_eq!(
        shard
            .apply(vec![moderate(clear, ModerationAction::Remove)])
            .await,
        vec![CommandResult::Moderated(Ok(1))],
        "only #1 is left to clear"
    );
}

#[tokio::test]
async fn each_moderation_that_changes_a_room_is_counted_and_logged_for_resuming_readers() {
    let mut shard = Shard::new().await;
    let posts = ["red one", "blue two", "red three", "green four"]
        .iter()
        .enumerate()
        .map(|(i, t)| Command::Posts(vec![post(&format!("c{i}"), "ann", t, i as u64)]))
        .collect();
    shard.apply(posts).await;
    assert_eq!(shard.view.moderation(ROOM), 0);
    shard
        .apply(vec![
            moderate(
                keywords(&["red"], KeywordMatch::Any),
                ModerationAction::Replace { text: None },
            ),
            // Changes nothing: not counted.
            moderate(
                keywords(&["purple"], KeywordMatch::Any),
                ModerationAction::Remove,
            ),
            moderate(
                keywords(&["blue", "red"], KeywordMatch::Any),
                ModerationAction::Remove,
            ),
        ])
        .await;
    assert_eq!(shard.view.moderation(ROOM), 2);
    let counts: Vec<(u64, Vec<u64>)> = shard
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Applied::Replaced {
                moderation,
                messages,
                ..
            } => Some((moderation, messages.iter().map(|m| m.seq.0).collect())),
            Applied::Posted(..) | Applied::Installed(_) => None,
        })
        .collect();
    // The second sees the replaced texts, no longer "red": only "blue two" changes.
    assert_eq!(counts, vec![(1, vec![1, 3]), (2, vec![2])]);

    let since = |count: u64, upto: u64| {
        let view = shard.view.clone();
        async move {
            let page = view
                .moderated_since(ROOM, "r".into(), count, u64::MAX, Seq(upto), 100)
                .await
                .unwrap();
            assert!(!page.more);
            page.moderations
                .into_iter()
                .flat_map(|(_, ms)| ms)
                .map(|m| (m.seq.0, m.moderated))
                .collect::<Vec<_>>()
        }
    };
    let (replaced, removed) = (Some(Moderation::Replaced), Some(Moderation::Removed));
    // The current form of each changed message, by moderation.
    assert_eq!(
        since(0, 4).await,
        [(1, replaced), (3, replaced), (2, removed)]
    );
    assert_eq!(since(1, 4).await, [(2, removed)]);
    assert_eq!(
        since(0, 2).await,
        [(1, replaced), (2, removed)],
        "up to the reader's cursor"
    );
    assert_eq!(since(2, 4).await, []);
    // A page stops once it holds the limit, after a whole moderation.
    let page = shard
        .view
        .moderated_since(ROOM, "r".into(), 0, u64::MAX, Seq(4), 1)
        .await
        .unwrap();
    let counts: Vec<(u64, usize)> = page
        .moderations
        .iter()
        .map(|(c, m)| (*c, m.len()))
        .collect();
    assert_eq!((counts, page.more), (vec![(1, 2)], true));
    // Only up to the count asked for.
    let page = shard
        .view
        .moderated_since(ROOM, "r".into(), 0, 1, Seq(4), 100)
        .await
        .unwrap();
    let counts: Vec<u64> = page.moderations.iter().map(|(c, _)| *c).collect();
    assert_eq!((counts, page.more), (vec![1], false));

    // The counts survive a reopen.
    let (_, reopened) = StateMachine::open_shard(shard.store.clone(), GroupId(1), None)
        .await
        .unwrap();
    assert_eq!(reopened.moderation(ROOM), 2);
    assert_eq!(reopened.moderation(ROOM + 1), 0);
}

fn chunk(file_id: &str, index: u32, data: &'static [u8]) -> Command {
    Command::FileChunk(FileChunk {
        room_id: ROOM,
        file_id: file_id.into(),
        index,
        data: bytes::Bytes::from_static(data),
    })
}

fn file_post(cid: &str, file_id: &str, size: u64) -> Command {
    let mut p = post(cid, "ann", "see attached", 5);
    p.file = Some(FileRef {
        id: file_id.into(),
        name: "notes.txt".into(),
        size,
        sha256: "00".repeat(32),
    });
    Command::Posts(vec![p])
}

#[tokio::test]
async fn a_file_is_posted_once_its_chunks_are_stored_even_in_the_same_batch() {
    let mut shard = Shard::new().await;
    let results = shard
        .apply(vec![
            chunk("f1", 0, b"hello "),
            chunk("f1", 1, b"world"),
            file_post("p1", "f1", 11),
            // A late retry of a chunk must not change the posted bytes.
            chunk("f1", 1, b"WORLD"),
        ])
        .await;
    assert!(matches!(&results[2], CommandResult::Posts(r) if r[0].is_ok()));
    assert!(
        matches!(&results[3], CommandResult::FileChunk(Err(e)) if e.code == ErrorCode::AlreadyExists)
    );
    let (record, message) = shard
        .view
        .file(ROOM, "r".into(), "f1".into())
        .await
        .unwrap()
        .expect("file recorded");
    assert_eq!((record.seq, message.seq), (Seq(1), Seq(1)));
    assert_eq!(message.file.as_ref().map(|f| f.size), Some(11));
    let all = shard
        .view
        .read_file(ROOM, "f1".into(), 0, 100)
        .await
        .unwrap();
    assert_eq!(all, b"hello world");
    let middle = shard.view.read_file(ROOM, "f1".into(), 4, 4).await.unwrap();
    assert_eq!(middle, b"o wo");
    let tail = shard
        .view
        .read_file(ROOM, "f1".into(), 9, 100)
        .await
        .unwrap();
    assert_eq!(tail, b"ld");
}

#[tokio::test]
async fn a_file_post_with_missing_chunks_is_refused() {
    let mut shard = Shard::new().await;
    let results = shard
        .apply(vec![chunk("f2", 0, b"abc"), file_post("p2", "f2", 6)])
        .await;
    assert!(
        matches!(&results[1], CommandResult::Posts(r) if matches!(&r[0], Err(e) if e.code == ErrorCode::Invalid))
    );
    assert!(shard.messages().await.is_empty());
    assert!(shard
        .view
        .file(ROOM, "r".into(), "f2".into())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_data_directory_of_another_storage_format_is_refused() {
    let dir = TempDir::new().unwrap();
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.open_tree("log").unwrap().insert(b"x", b"y").unwrap();
        db.flush().unwrap();
    }
    match Store::open(dir.path()) {
        Err(super::StoreError::Format { found: 1, .. }) => {}
        other => panic!("expected a format error, got {:?}", other.map(|_| ())),
    }
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    // Reopening our own format works.
    drop(Store::open(dir.path()).unwrap());
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.insert(super::FORMAT_KEY, &2u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    match Store::open(dir.path()) {
        Err(super::StoreError::Format { found: 2, .. }) => {}
        other => panic!("expected a format error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_fence_sends_back_posts_checked_against_an_older_directory_and_survives_a_reopen() {
    let mut shard = Shard::new().await;
    let checked = |cid: &str, at: u64| {
        let mut p = post(cid, "ann", "hi", 1);
        p.checked_at = at;
        p
    };
    let results = shard
        .apply(vec![
            Command::Posts(vec![checked("a", 4)]),
            Command::Fence { meta_index: 5 },
            // In the same batch as the fence: already sent back.
            Command::Posts(vec![checked("b", 4), checked("c", 5)]),
            // A fence never moves back.
            Command::Fence { meta_index: 3 },
        ])
        .await;
    let CommandResult::Posts(r) = &results[2] else {
        panic!("{results:?}")
    };
    assert!(matches!(&r[0], Err(e) if e.code == ErrorCode::Unavailable));
    assert!(r[1].is_ok());
    assert!(matches!(&results[0], CommandResult::Posts(r) if r[0].is_ok()));

    let (store, dir) = (shard.store.clone(), shard._dir);
    drop((shard.sm, shard.view));
    let (mut sm, _view) = StateMachine::open_shard(store, GroupId(1), None)
        .await
        .unwrap();
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 10),
        payload: EntryPayload::Normal(Command::Posts(vec![checked("d", 4), checked("e", 6)])),
    };
    let results = sm.apply(vec![entry]).await.unwrap();
    let CommandResult::Posts(r) = &results[0] else {
        panic!("{results:?}")
    };
    assert!(matches!(&r[0], Err(e) if e.code == ErrorCode::Unavailable));
    assert!(r[1].is_ok());
    drop(dir);
}

#[tokio::test]
async fn one_moderation_entry_changes_a_bounded_number_of_messages_and_rounds_finish() {
    use super::sm::MODERATED_PER_ENTRY_MAX;
    let mut shard = Shard::new().await;
    let n = MODERATED_PER_ENTRY_MAX + 5;
    let posts = (0..n)
        .map(|i| post(&format!("m{i}"), "ann", "spam spam", i))
        .collect();
    shard.apply(vec![Command::Posts(posts)]).await;
    let everything = MessageFilter {
        room: Some("r".into()),
        ..Default::default()
    };
    let replace = ModerationAction::Replace { text: None };
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let r = shard
            .apply(vec![moderate(everything.clone(), replace.clone())])
            .await;
        rounds.push(r[0].clone());
    }
    // The same replacement again changes nothing, so the rounds end.
    assert_eq!(
        rounds,
        vec![
            CommandResult::Moderated(Ok(MODERATED_PER_ENTRY_MAX)),
            CommandResult::Moderated(Ok(5)),
            CommandResult::Moderated(Ok(0)),
        ]
    );
    let r = shard
        .apply(vec![moderate(everything, ModerationAction::Remove)])
        .await;
    assert_eq!(r[0], CommandResult::Moderated(Ok(MODERATED_PER_ENTRY_MAX)));
}

impl Shard {
    /// Every row of the shard's group but its applied state (which names the log).
    fn rows(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let applied = super::keys::sm_tag(GroupId(1), super::keys::APPLIED);
        self.store
            .sm
            .scan_prefix(super::keys::group_prefix(GroupId(1)))
            .map(|kv| kv.unwrap())
            .filter(|(k, _)| k[..] != applied[..])
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    fn snapshot_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.store.snapshots)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Build a snapshot; answers its meta and its bytes, read from the file it is served from.
    async fn build_snapshot(&mut self) -> (SnapshotMeta, Vec<u8>) {
        use openraft::storage::RaftSnapshotBuilder;
        use tokio::io::AsyncReadExt;
        let mut s = self.sm.get_snapshot_builder().await;
        let mut built = s.build_snapshot().await.unwrap();
        let mut bytes = Vec::new();
        built.snapshot.read_to_end(&mut bytes).await.unwrap();
        (built.meta, bytes)
    }

    /// Receive `bytes` as openraft does (into the file it is given) and install them.
    async fn install_snapshot(&mut self, meta: &SnapshotMeta, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut receiving = self.sm.begin_receiving_snapshot().await.unwrap();
        receiving.write_all(bytes).await.unwrap();
        self.sm.install_snapshot(meta, receiving).await.unwrap();
    }
}

fn one_post(cid: &str, author: &str, text: &str, ts_ms: u64) -> Vec<Command> {
    vec![Command::Posts(vec![post(cid, author, text, ts_ms)])]
}

#[tokio::test]
async fn snapshots_live_in_files_replace_each_other_and_install_elsewhere() {
    use tokio::io::AsyncReadExt;

    let mut a = Shard::new().await;
    a.apply(red_posts(0, 40)).await;
    let (first, _) = a.build_snapshot().await;
    assert_eq!(a.snapshot_files().len(), 1);
    a.apply(one_post("late", "bob", "after", 99)).await;
    let (second, _) = a.build_snapshot().await;
    let files = a.snapshot_files();
    assert_eq!(
        files.len(),
        1,
        "the older snapshot's file is deleted: {files:?}"
    );
    assert_ne!(first.snapshot_id, second.snapshot_id);

    // What a leader sends: the current snapshot, read from its file.
    let mut current = a.sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, second);
    let mut bytes = Vec::new();
    current.snapshot.read_to_end(&mut bytes).await.unwrap();

    // A follower receives it into a file of its own and installs it.
    let mut b = Shard::new().await;
    b.apply(one_post("x", "zed", "replaced by the snapshot", 1))
        .await;
    b.install_snapshot(&second, &bytes).await;
    assert_eq!(b.messages().await, a.messages().await);
    assert_eq!(b.messages().await.len(), 41);
    assert_eq!(b.snapshot_files().len(), 1);
    let (applied, _) = b.sm.applied_state().await.unwrap();
    assert_eq!(applied, second.last_log_id);

    // A snapshot holding another group's rows is refused and changes nothing.
    let mut c = Shard::new().await;
    let (mut other, _) = StateMachine::open_shard(c.store.clone(), GroupId(2), None)
        .await
        .unwrap();
    let mut foreign = other.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut foreign, &bytes)
        .await
        .unwrap();
    assert!(other.install_snapshot(&second, foreign).await.is_err());
    c.apply(one_post("y", "ann", "still here", 2)).await;
    assert_eq!(c.messages().await.len(), 1);
    assert!(
        c.snapshot_files().is_empty(),
        "no copy of the refused snapshot is left"
    );
}

/// Posts `from..to` by ann, one entry each, with the text `red {i}`.
fn red_posts(from: u64, to: u64) -> Vec<Command> {
    (from..to)
        .map(|i| Command::Posts(vec![post(&format!("c{i}"), "ann", &format!("red {i}"), i)]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_built_while_entries_apply_is_the_state_at_its_own_index() {
    use openraft::storage::RaftSnapshotBuilder;
    use tokio::io::AsyncReadExt;
    let mut a = Shard::new().await;
    a.apply(red_posts(0, 5000)).await;
    let sm = a.sm.clone();
    let build = tokio::spawn(async move {
        let mut builder = { sm }.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap()
    });
    for i in 5000..5300 {
        a.apply(red_posts(i, i + 1)).await;
        a.events(); // fan-out's channel is bounded
    }
    let mut built = build.await.unwrap();
    let index = built.meta.last_log_id.expect("applied").index;
    let mut bytes = Vec::new();
    built.snapshot.read_to_end(&mut bytes).await.unwrap();

    let mut reference = Shard::new().await;
    reference.apply(red_posts(0, index)).await;
    let mut b = Shard::new().await;
    b.install_snapshot(&built.meta, &bytes).await;
    assert_eq!(b.rows(), reference.rows(), "the state at index {index}");
}

#[tokio::test]
async fn a_snapshot_holds_the_rows_of_its_cut_while_applies_go_on_during_its_scan() {
    use tokio::io::AsyncReadExt;
    // `reference` applies only what comes before the cut.
    let mut reference = Shard::new().await;
    reference.apply(red_posts(0, 30)).await;

    let mut a = Shard::new().await;
    a.apply(red_posts(0, 30)).await;
    let cut = a.sm.take_cut_for_test();
    // While the build would scan: new posts (new keys), a retry (a dedup hit), a moderation
    // (changed messages, new originals, a moderation log row) and new heads.
    a.apply(red_posts(30, 45)).await;
    a.apply(red_posts(3, 4)).await;
    a.apply(vec![moderate(
        keywords(&["red"], KeywordMatch::Any),
        ModerationAction::Remove,
    )])
    .await;
    let mut built = a.sm.build_from_cut_for_test(cut);
    assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(30));
    let mut bytes = Vec::new();
    built.snapshot.read_to_end(&mut bytes).await.unwrap();

    let mut b = Shard::new().await;
    b.install_snapshot(&built.meta, &bytes).await;
    assert_eq!(b.messages().await, reference.messages().await);
    assert_eq!(b.view.last_seq(ROOM), Seq(30));
    assert_eq!(b.view.moderation(ROOM), 0);
    let (ref_rows, b_rows) = (reference.rows(), b.rows());
    assert_eq!(b_rows, ref_rows, "every row as it was at the cut, no more");

    // The source went on: all 45 posts, moderated.
    let now = a.messages().await;
    assert_eq!(now.len(), 45);
    assert!(now.iter().all(|m| m.moderated == Some(Moderation::Removed)));
}

#[tokio::test]
async fn an_install_a_crash_interrupted_is_finished_when_the_shard_opens() {
    use super::snapfile::{Rows, SnapshotWriter, StoredSnapshot};
    let g = GroupId(1);
    let mut a = Shard::new().await;
    a.apply(red_posts(0, 30)).await;
    let (meta, bytes) = a.build_snapshot().await;

    // b crashed installing it: the received rows were copied to a file of its own and the
    // install recorded, then only some of b's rows were replaced.
    let mut b = Shard::new().await;
    b.apply(one_post("x", "zed", "replaced by the snapshot", 1))
        .await;
    b.apply(one_post("y", "zed", "also replaced", 2)).await;
    let mut copy = SnapshotWriter::create(&b.store.snapshots, g).unwrap();
    let mut rows = Rows::new(&bytes[..], g);
    let mut n = 0;
    while let Some((k, v)) = rows.next_row().unwrap() {
        copy.row(&k, &v).unwrap();
        if n < 5 {
            b.store.sm.insert(k, v).unwrap();
        }
        n += 1;
    }
    let install = StoredSnapshot {
        meta: meta.clone(),
        file: copy.finish().unwrap(),
    };
    let marker = super::keys::install_marker(g);
    b.store
        .snap
        .insert(&marker, super::encode_stored(&install).unwrap())
        .unwrap();

    let (mut reopened, view) = StateMachine::open_shard(b.store.clone(), g, None)
        .await
        .unwrap();
    let read = view
        .read(ROOM, "r".into(), Seq::ZERO, Seq(u64::MAX), 100, false)
        .await
        .unwrap();
    assert_eq!(read, a.messages().await);
    assert_eq!(read.len(), 30);
    let (applied, _) = reopened.applied_state().await.unwrap();
    assert_eq!(applied, meta.last_log_id);
    let current = reopened.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, meta);
    assert_eq!(current.meta.snapshot_id, meta.snapshot_id);
    assert!(
        b.store.snap.get(&marker).unwrap().is_none(),
        "the install is over"
    );
    assert_eq!(b.snapshot_files(), vec![install.file]);
}

#[tokio::test]
async fn a_build_never_replaces_a_snapshot_as_new_as_its_own() {
    let mut a = Shard::new().await;
    let posts = (0..20)
        .map(|i| Command::Posts(vec![post(&format!("c{i}"), "ann", "m", i)]))
        .collect();
    a.apply(posts).await;
    let (built, bytes) = a.build_snapshot().await;

    // b installs a's snapshot; a build that finishes afterwards (here: at the same index) is not
    // recorded, and its file is not left behind.
    let mut b = Shard::new().await;
    b.install_snapshot(&built, &bytes).await;
    let (late, late_bytes) = b.build_snapshot().await;
    assert_eq!(late.last_log_id, built.last_log_id);
    let current = b.sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built, "the installed snapshot stays current");
    assert_eq!(b.snapshot_files().len(), 1);
    // The build's own snapshot is still readable by whoever holds it.
    assert_eq!(late_bytes, bytes);
}
