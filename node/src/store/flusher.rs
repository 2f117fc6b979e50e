//! One thread that flushes the sled database for every group: whoever is waiting when a flush starts
//! is released by that flush, so N concurrent appends cost one fsync (group commit).

use crate::raft::TypeConfig;
use openraft::storage::LogFlushed;
use std::io;
use std::sync::mpsc;
use tokio::sync::oneshot;

pub enum FlushWaiter {
    Log(LogFlushed<TypeConfig>),
    Notify(oneshot::Sender<io::Result<()>>),
}

/// How many waiters may queue for the flusher; senders block (on the blocking pool) beyond it.
const WAITERS_MAX: usize = 65_536;

/// Dropping the flusher stops its thread after a last flush and waits for it, so the database is
/// closed (and its lock released) when the store is dropped.
pub struct Flusher {
    tx: Option<mpsc::SyncSender<FlushWaiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Flusher {
    pub fn start(db: sled::Db) -> Flusher {
        let (tx, rx) = mpsc::sync_channel::<FlushWaiter>(WAITERS_MAX);
        let thread = std::thread::Builder::new()
            .name("stoa-flusher".into())
            .spawn(move || run(db, rx))
            .expect("spawning the flusher thread at startup");
        Flusher {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queue a waiter to be completed after the next flush. Call from a blocking context: it blocks
    /// when the queue is full.
    pub fn after_next_flush(&self, waiter: FlushWaiter) {
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(w)) = tx.send(waiter) {
                    complete(w, Err(io::Error::other("flusher stopped")));
                }
            }
            None => complete(waiter, Err(io::Error::other("flusher stopped"))),
        }
    }

    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let Some(sender) = self.tx.clone() else {
            return Err(io::Error::other("flusher stopped"));
        };
        tokio::task::spawn_blocking(move || {
            if let Err(mpsc::SendError(w)) = sender.send(FlushWaiter::Notify(tx)) {
                complete(w, Err(io::Error::other("flusher stopped")));
            }
        })
        .await
        .map_err(io::Error::other)?;
        rx.await.map_err(|_| io::Error::other("flusher stopped"))?
    }
}

fn run(db: sled::Db, rx: mpsc::Receiver<FlushWaiter>) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = db.flush().map(|_| ()).map_err(io::Error::other);
        if let Err(e) = &result {
            tracing::error!(error = %e, "flush failed");
        }
        for w in batch.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            complete(w, r);
        }
    }
}

fn complete(w: FlushWaiter, r: io::Result<()>) {
    match w {
        FlushWaiter::Log(cb) => cb.log_io_completed(r),
        FlushWaiter::Notify(tx) => {
            let _ = tx.send(r);
        }
    }
}
