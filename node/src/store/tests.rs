//! openraft's own storage test suite against the sled store, and a reopen test.

use super::log::LogStore;
use super::sm::StateMachine;
use super::Store;
use crate::domain::shard::ProposedPost;
use crate::raft::{Command, CommandResult, Entry, GroupId, LogId, StorageError, TypeConfig};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Vote};
use std::sync::Arc;
use stoa_proto::Seq;
use tempfile::TempDir;

struct SledBuilder {
    group: GroupId,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let store = Store::open_for_suite(dir.path()).expect("open store");
        let log = LogStore::new(store.clone(), self.group);
        let sm = if self.group.is_meta() {
            StateMachine::open_meta(store).await?.0
        } else {
            StateMachine::open_shard(store, self.group, None).await?.0
        };
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite_on_a_shard_group() -> Result<(), StorageError> {
    Suite::test_all(SledBuilder { group: GroupId(3) })
}

#[test]
fn openraft_suite_on_the_meta_group() -> Result<(), StorageError> {
    Suite::test_all(SledBuilder {
        group: GroupId::META,
    })
}

fn post(i: u64) -> ProposedPost {
    ProposedPost {
        room_id: 9,
        room: "lobby".into(),
        author: "ann".into(),
        client_msg_id: format!("c{i}"),
        text: format!("message {i}"),
        alert: false,
        ts_ms: 1000 + i,
        file: None,
        checked_at: 0,
    }
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload,
    }
}

async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    log.blocking_append(entries).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_vote_and_state_survive_a_reopen() {
    let dir = TempDir::new().unwrap();
    let g = GroupId(1);
    {
        let store = Store::open(dir.path()).unwrap();
        let mut log = LogStore::new(store.clone(), g);
        let (mut sm, view) = StateMachine::open_shard(store.clone(), g, None)
            .await
            .unwrap();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        let entries: Vec<Entry> = (1..=3)
            .map(|i| {
                entry(
                    i,
                    EntryPayload::Normal(Command::Posts(vec![post(i), post(i)])),
                )
            })
            .collect();
        // openraft begins every log at index 0.
        append(&mut log, vec![entry(0, EntryPayload::Blank)]).await;
        append(&mut log, entries.clone()).await;
        let results = sm.apply(entries).await.unwrap();
        // The second copy of each post in an entry is a retry: same seq, not a new message.
        assert_eq!(results.len(), 3);
        for (i, r) in results.iter().enumerate() {
            let CommandResult::Posts(r) = r else {
                panic!("{r:?}")
            };
            assert_eq!(r[0].as_ref().unwrap().seq, Seq(i as u64 + 1));
            assert_eq!(r[0], r[1]);
        }
        assert_eq!(view.last_seq(9), Seq(3));
        drop((log, sm, view));
        drop(store);
    }
    let store = Store::open(dir.path()).unwrap();
    let mut log = LogStore::new(store.clone(), g);
    let (mut sm, view) = StateMachine::open_shard(store.clone(), g, None)
        .await
        .unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(1, 1))
    );
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
    assert_eq!(log.try_get_log_entries(1..4).await.unwrap().len(), 3);
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(3));
    assert_eq!(view.last_seq(9), Seq(3));
    let msgs = view
        .read(9, "lobby".into(), Seq(0), Seq(u64::MAX), 10, true)
        .await
        .unwrap();
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(msgs[2].text, "message 3");
    // A retry after the restart is still recognised.
    let results = sm
        .apply(vec![entry(
            4,
            EntryPayload::Normal(Command::Posts(vec![post(2)])),
        )])
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![CommandResult::Posts(vec![Ok(
            crate::domain::shard::PostOutcome {
                seq: Seq(2),
                ts_ms: 1002
            }
        )])]
    );
    assert_eq!(view.last_seq(9), Seq(3));
    let page = view
        .read(9, "lobby".into(), Seq(0), Seq(3), 1, true)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|m| m.seq.0).collect::<Vec<_>>(), vec![2]);
    let page = view
        .read(9, "lobby".into(), Seq(1), Seq(u64::MAX), 5, false)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|m| m.seq.0).collect::<Vec<_>>(), vec![2, 3]);
    let _ = Arc::strong_count(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_waits_until_the_state_machine_holds_what_it_purges() {
    // After a snapshot install openraft asks for the purge before the state machine has the
    // snapshot; purging first would let a crash leave neither the entries nor their state.
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = GroupId(1);
    let mut log = LogStore::new(store.clone(), g);
    append(
        &mut log,
        (0..=5).map(|i| entry(i, EntryPayload::Blank)).collect(),
    )
    .await;
    let upto = LogId::new(CommittedLeaderId::new(1, 1), 5);
    let purging = tokio::spawn({
        let mut log = log.clone();
        async move { log.purge(upto).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !purging.is_finished(),
        "the purge went ahead of the state machine"
    );
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, None);
    store.note_applied(g, Some(5));
    purging.await.unwrap().unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_purged_log_id,
        Some(upto)
    );

    // A state machine that failed (a refused snapshot) will never get there: the purge gives up
    // at once, and the log keeps its entries.
    let g2 = GroupId(2);
    let mut log2 = LogStore::new(store.clone(), g2);
    append(
        &mut log2,
        (0..=5).map(|i| entry(i, EntryPayload::Blank)).collect(),
    )
    .await;
    let purging = tokio::spawn({
        let mut log2 = log2.clone();
        async move { log2.purge(upto).await }
    });
    store.note_failed(g2);
    assert!(purging.await.unwrap().is_err());
    assert_eq!(log2.get_log_state().await.unwrap().last_purged_log_id, None);
}
