//! The writer thread: takes everything appended since its last turn, writes it, syncs it, and
//! completes whoever waited for it. While it writes, appends gather for its next turn, so the
//! number of syncs follows the disk, not the number of appends.

use super::{replay, Shared};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

/// See the writer's wait loop.
const IDLE_WRITE_AFTER: Duration = Duration::from_secs(1);

pub(super) fn run(shared: &Shared) {
    loop {
        let (chunks, waiters, files, written, failed, live_from) = {
            let mut st = shared.lock();
            // Records nobody waits for (committed indexes, truncations) ride along with the
            // next write somebody does wait for: syncing them alone would double the syncs.
            while st.waiters.is_empty() && !st.stopping {
                if st.pending.is_empty() {
                    st = shared
                        .work
                        .wait(st)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    continue;
                }
                // Stragglers nobody waits for are still written once the log has been idle
                // a while, so a quiet group's last committed index reaches the disk.
                let (guard, waited) = shared
                    .work
                    .wait_timeout(st, IDLE_WRITE_AFTER)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                st = guard;
                if waited.timed_out() {
                    break;
                }
            }
            if st.pending.is_empty() && st.waiters.is_empty() {
                return;
            }
            let live_from = st.live_from();
            let chunks = std::mem::take(&mut st.pending);
            let files: Vec<Option<Arc<File>>> = chunks
                .iter()
                .map(|(seg, _)| st.files.get(seg).cloned())
                .collect();
            (
                chunks,
                std::mem::take(&mut st.waiters),
                files,
                st.written,
                st.failed.clone(),
                live_from,
            )
        };
        // After a failed write or sync nothing more is written: the kernel may have dropped the
        // failed pages, and a later sync succeeding would say nothing about them.
        let result = match failed {
            Some(why) => Err(io::Error::other(why)),
            None => write(shared, chunks, files, written),
        };
        let outcome = {
            let mut st = shared.lock();
            match result {
                Ok(Written {
                    position,
                    created,
                    ends,
                }) => {
                    st.files.extend(created);
                    for (seg, end) in ends {
                        st.sizes.insert(seg, end);
                    }
                    st.written = position;
                    st.durable_live_from = live_from;
                    let budget = shared.options.cache_bytes_per_group;
                    for g in st.groups.values_mut() {
                        g.evict(budget, position);
                    }
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "the raft log could not be written; its groups stop");
                    st.failed.get_or_insert_with(|| e.to_string());
                    Err(e)
                }
            }
        };
        for w in waiters {
            w.complete(match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

struct Written {
    /// Everything before it is written and synced.
    position: (u32, u64),
    /// Segments begun in this turn.
    created: Vec<(u32, Arc<File>)>,
    /// Each segment written in this turn and its length now.
    ends: Vec<(u32, u64)>,
}

/// Write the chunks in order, creating segments as they begin, then sync every file written.
fn write(
    shared: &Shared,
    chunks: Vec<(u32, Vec<u8>)>,
    files: Vec<Option<Arc<File>>>,
    mut position: (u32, u64),
) -> io::Result<Written> {
    let mut created: Vec<(u32, Arc<File>)> = Vec::new();
    let mut touched: Vec<Arc<File>> = Vec::new();
    let mut ends: Vec<(u32, u64)> = Vec::new();
    for ((seg, bytes), file) in chunks.into_iter().zip(files) {
        if position.0 != seg {
            // Sync the segments written so far before the next one exists: a crash
            // must never leave a torn record anywhere but at the end of the last segment.
            for f in touched.drain(..) {
                f.sync_data()?;
            }
        }
        let file = match file.or_else(|| {
            created
                .iter()
                .find(|(s, _)| *s == seg)
                .map(|(_, f)| f.clone())
        }) {
            Some(f) => f,
            None => {
                let path = replay::segment_path(&shared.dir, seg);
                let f = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                // A new file is only durable once the directory entry naming it is.
                File::open(&shared.dir)?.sync_all()?;
                let f = Arc::new(f);
                created.push((seg, f.clone()));
                f
            }
        };
        (&*file).write_all(&bytes)?;
        position = if position.0 == seg {
            (seg, position.1 + bytes.len() as u64)
        } else {
            (seg, bytes.len() as u64)
        };
        ends.push(position);
        if !touched.iter().any(|f| Arc::ptr_eq(f, &file)) {
            touched.push(file);
        }
    }
    for f in &touched {
        f.sync_data()?;
    }
    Ok(Written {
        position,
        created,
        ends,
    })
}
