//! Keeping the Raft log's disk use bounded. Every group snapshots on its own schedule
//! (`raft.snapshot_logs_since_last`) and purges its log behind the snapshot, but all groups share
//! the log's segment files: a quiet group (the directory, a shard with few rooms) keeps its few
//! live entries for a long time, and with them every segment written since. This task finds such
//! groups ([`crate::store::wal::Wal::groups_pinning_segments`]) and compacts them now: a snapshot,
//! then a purge up to it. Each node does this for its own replicas; no leader is involved.

use crate::raft::{GroupId, Raft};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

const CHECK_EVERY: Duration = Duration::from_secs(5);
/// A group is compacted at most this often: openraft may hold a purge back while a replication
/// still reads the entries, and a new snapshot every check would not make it go faster.
const COMPACT_AT_MOST_EVERY: Duration = Duration::from_secs(60);
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn compact_pinning_groups(store: Arc<Store>, rafts: Arc<Vec<Raft>>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = std::collections::HashMap::<GroupId, tokio::time::Instant>::new();
    loop {
        tick.tick().await;
        for group in store.wal.groups_pinning_segments() {
            let Some(raft) = rafts.get(group.0 as usize) else {
                continue;
            };
            let now = tokio::time::Instant::now();
            if last
                .get(&group)
                .is_some_and(|t| now.duration_since(*t) < COMPACT_AT_MOST_EVERY)
            {
                continue;
            }
            last.insert(group, now);
            if let Err(e) = compact(group, raft).await {
                tracing::warn!(%group, error = %e, "could not compact a group that pins log segments");
            }
        }
    }
}

async fn compact(group: GroupId, raft: &Raft) -> Result<(), String> {
    let (applied, snapshot) = {
        let m = raft.metrics();
        let m = m.borrow();
        (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
    };
    let Some(applied) = applied else {
        return Ok(());
    };
    if snapshot < Some(applied) {
        tracing::info!(%group, applied, "compacting a group that pins old log segments");
        raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
        raft.wait(Some(SNAPSHOT_TIMEOUT))
            .metrics(
                |m| m.snapshot.map(|l| l.index) >= Some(applied),
                "snapshot for compaction",
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    // Openraft purges once no replication still reads those entries; the log's segments go
    // with the purge (`LogStore::purge`).
    raft.trigger()
        .purge_log(applied)
        .await
        .map_err(|e| e.to_string())
}
