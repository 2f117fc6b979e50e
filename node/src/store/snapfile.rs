//! Snapshot data in files of their own (`<data_dir>/snapshots/`), never whole in memory.
//!
//! A shard's snapshot is every row of its state machine: its whole history. Building one streams
//! the rows from sled into a file, sending one to a follower reads the file in chunks, and
//! installing one streams the rows back into sled in bounded batches, so none of them holds the
//! history in RAM. sled keeps only which file is current (`snap` tree), in a [`StoredSnapshot`],
//! and which file an unfinished install is writing from (`keys::install_marker`).
//!
//! File format: records `[u32 LE length][bincode (key, value)]`, nothing else; a file is written
//! under a temporary name, synced, then renamed, so a file with its final name is complete.

use super::{decode_stored, encode_stored, read_err, write_err, StoreError};
use crate::raft::{GroupId, SnapshotMeta, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// What sled records of a group's current snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub meta: SnapshotMeta,
    /// File name under the snapshots directory.
    pub file: String,
}

/// Largest record a snapshot file may announce; the decoder's own 16 MiB allocation limit
/// refuses a bigger one anyway. A row is a key and a value of the state machine: a message, a
/// file chunk (256 KiB) or the directory.
const RECORD_BYTES_MAX: usize = stoa_proto::limits::FRAME_BYTES_MAX;

/// Writes one snapshot file.
/// A writer dropped before [`SnapshotWriter::finish`] deletes its temporary file.
pub(crate) struct SnapshotWriter {
    dir: PathBuf,
    name: String,
    out: Option<BufWriter<File>>,
    renamed: bool,
}

impl SnapshotWriter {
    pub fn create(dir: &Path, group: GroupId) -> Result<SnapshotWriter, StorageError> {
        let name = format!("g{}-{:016x}.snap", group.0, rand::random::<u64>());
        let file = File::create(dir.join(temp_name(&name))).map_err(write_err)?;
        Ok(SnapshotWriter {
            dir: dir.to_path_buf(),
            name,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            renamed: false,
        })
    }

    pub fn row(&mut self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let record = encode_stored(&(key, value))?;
        let len = u32::try_from(record.len()).map_err(write_err)?;
        let out = self.out.as_mut().expect("only finish() takes the file");
        out.write_all(&len.to_le_bytes()).map_err(write_err)?;
        out.write_all(&record).map_err(write_err)
    }

    /// Sync the file and give it its final name; answers that name.
    pub fn finish(mut self) -> Result<String, StorageError> {
        let file = self
            .out
            .take()
            .expect("only finish() takes the file")
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        std::fs::rename(
            self.dir.join(temp_name(&self.name)),
            self.dir.join(&self.name),
        )
        .map_err(write_err)?;
        self.renamed = true;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
        Ok(std::mem::take(&mut self.name))
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(self.dir.join(temp_name(&self.name)));
        }
    }
}

fn temp_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// A state-machine row: key and value.
pub(crate) type Row = (Vec<u8>, Vec<u8>);

/// Reads the rows of a snapshot file one at a time, each checked to belong to `group` (the file
/// may come from a peer); memory is bounded by one record. Any malformed record is an error.
pub(crate) struct Rows<R> {
    input: R,
    group: GroupId,
    prefix: [u8; 4],
}

impl<R: Read> Rows<R> {
    pub fn new(input: R, group: GroupId) -> Rows<R> {
        Rows {
            input,
            group,
            prefix: super::keys::group_prefix(group),
        }
    }

    /// The next row; `None` at the end of the file (which must fall between records).
    pub fn next_row(&mut self) -> Result<Option<Row>, StorageError> {
        let mut header = [0u8; 4];
        match self.input.read(&mut header[..1]).map_err(read_err)? {
            0 => return Ok(None),
            _ => self
                .input
                .read_exact(&mut header[1..])
                .map_err(|e| self.cut(e, "a record header is cut short"))?,
        }
        let len = u32::from_le_bytes(header) as usize;
        if len > RECORD_BYTES_MAX {
            return Err(self.corrupt(format!("a record of {len} bytes is too big")));
        }
        let mut record = vec![0u8; len];
        self.input
            .read_exact(&mut record)
            .map_err(|e| self.cut(e, "a record is cut short"))?;
        let (key, value): Row = decode_stored(&self.prefix, &record)?;
        if !key.starts_with(&self.prefix) {
            return Err(self.corrupt(format!(
                "holds a key of another group: {}",
                super::keys::describe(&key)
            )));
        }
        Ok(Some((key, value)))
    }

    fn corrupt(&self, reason: String) -> StorageError {
        read_err(StoreError::Corrupt {
            key: format!("snapshot of {}", self.group),
            reason,
        })
    }

    /// An end of file inside a record is corruption; other read errors are I/O.
    fn cut(&self, e: std::io::Error, what: &str) -> StorageError {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.corrupt(what.into()),
            _ => read_err(e),
        }
    }
}

/// Delete snapshot files that sled's `snap` tree does not name (as a group's current snapshot
/// or an unfinished install): left by a crash between writing a new snapshot and recording it,
/// or before deleting the one it replaced. Runs when the store opens, before any group can build or install.
pub(crate) fn sweep(dir: &Path, snap: &sled::Tree) -> Result<(), StoreError> {
    let mut current = HashSet::new();
    for kv in snap.iter() {
        let (k, v) = kv?;
        let stored: StoredSnapshot = stoa_proto::decode(&v).map_err(|e| StoreError::Corrupt {
            key: super::keys::describe(&k),
            reason: e.to_string(),
        })?;
        current.insert(stored.file);
    }
    let unnamed = || -> std::io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_file() && !current.contains(&name) {
                paths.push(entry.path());
            }
        }
        Ok(paths)
    };
    for path in unnamed().map_err(|e| files_err(dir, e))? {
        std::fs::remove_file(&path).map_err(|e| files_err(dir, e))?;
    }
    Ok(())
}

pub(crate) fn files_err(dir: &Path, source: std::io::Error) -> StoreError {
    StoreError::Files {
        path: dir.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::group_prefix;

    fn key(g: GroupId, k: &[u8]) -> Vec<u8> {
        let mut v = group_prefix(g).to_vec();
        v.extend_from_slice(k);
        v
    }

    #[test]
    fn rows_round_trip_and_foreign_or_cut_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupId(2);
        let mut w = SnapshotWriter::create(dir.path(), g).unwrap();
        w.row(&key(g, b"a"), b"1").unwrap();
        w.row(&key(g, b"b"), &[7u8; 5000]).unwrap();
        let name = w.finish().unwrap();
        let data = std::fs::read(dir.path().join(&name)).unwrap();
        let read = all_rows(&data, g).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1], (key(g, b"b"), vec![7u8; 5000]));

        assert!(
            all_rows(&data, GroupId(1)).is_err(),
            "rows of another group"
        );
        assert!(
            all_rows(&data[..data.len() - 1], g).is_err(),
            "a record cut short"
        );
        assert!(all_rows(&data[..2], g).is_err(), "a header cut short");
        assert!(all_rows(&[0xff; 8], g).is_err(), "a length past the end");
        assert!(all_rows(&[], g).unwrap().is_empty());
    }

    fn all_rows(data: &[u8], g: GroupId) -> Result<Vec<Row>, StorageError> {
        let mut rows = Rows::new(data, g);
        let mut out = Vec::new();
        while let Some(row) = rows.next_row()? {
            out.push(row);
        }
        Ok(out)
    }

    #[test]
    fn sweep_keeps_only_the_files_sled_names() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("snapshots");
        std::fs::create_dir(&files).unwrap();
        let g = GroupId(1);
        let keep = SnapshotWriter::create(&files, g).unwrap().finish().unwrap();
        let _stale = SnapshotWriter::create(&files, g).unwrap().finish().unwrap();
        let mut half = SnapshotWriter::create(&files, g).unwrap();
        half.row(&key(g, b"x"), b"y").unwrap();
        std::mem::forget(half); // a crash before finish: only the temporary file exists
        std::fs::create_dir(files.join("not-a-snapshot")).unwrap();

        let db = sled::Config::new().temporary(true).open().unwrap();
        let snap = db.open_tree("snap").unwrap();
        let record = StoredSnapshot {
            meta: SnapshotMeta::default(),
            file: keep.clone(),
        };
        snap.insert(group_prefix(g), encode_stored(&record).unwrap())
            .unwrap();
        sweep(&files, &snap).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&files)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![keep, "not-a-snapshot".to_string()]);
    }
}
