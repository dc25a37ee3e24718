//! The on-disk record store of a results folder: append-only JSON-lines files.
//!
//! Each finished record is appended as one line and synced at once, so a run killed at any
//! moment loses at most the record it was writing. On open, a torn last line is cut off; on
//! load, a key written again (a failed record retried later) keeps its last record, in the
//! place of its first. Whole files (tables, reports) are written
//! atomically: to a temporary file, synced, then renamed over the target.

use crate::error::{Error, Result};
use crate::records::Keyed;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest input text file (experiment, prompt set, judge template) read whole.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Reads a text input file whole: only a regular file (a FIFO would hang the read and a
/// device such as `/dev/zero` never ends), and at most [`MAX_INPUT_BYTES`]. Errors name the
/// file.
pub fn read_input(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let refuse = |why: String| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
        )
    };
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(refuse(format!(
            "is {kind}; an input must be a regular file"
        )));
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(refuse(format!(
            "is {} bytes; an input file may hold at most {} MiB",
            meta.len(),
            MAX_INPUT_BYTES >> 20
        )));
    }
    let mut text = String::new();
    use std::io::Read;
    File::open(path)
        .and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| Error::io(path, e))?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(refuse(format!(
            "grew past {} MiB while it was read",
            MAX_INPUT_BYTES >> 20
        )));
    }
    Ok(text)
}

/// A results folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) a results folder.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.jsonl"))
    }

    /// Takes the folder's advisory lock for a run: a second run on the same folder at the
    /// same time is refused with a clear error instead of duplicating the work. The lock is
    /// released when the returned guard is dropped (or the process ends).
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match f.try_lock() {
            Ok(()) => Ok(StoreLock { _file: f }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::config(
                self.dir.display().to_string(),
                "another llm-judge run is writing to this results folder; wait for it to \
                 finish, or write to another folder (--out)",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// Loads every record of a stream (the last one per key) and repairs a torn tail.
    pub fn load<T: DeserializeOwned + Keyed>(&self, name: &str) -> Result<Vec<T>> {
        let path = self.file(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let complete = match text.rfind('\n') {
            Some(i) => i + 1,
            None => 0,
        };
        if complete < text.len() {
            // A torn last line from a killed run: cut it off so appends stay line-aligned.
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.set_len(complete as u64)
                .map_err(|e| Error::io(&path, e))?;
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out: Vec<T> = Vec::new();
        for (i, line) in text[..complete].lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: T = serde_json::from_str(line)
                .map_err(|e| Error::invalid(format!("{}:{}", path.display(), i + 1), e))?;
            match seen.get(r.key()) {
                Some(&i) => out[i] = r,
                None => {
                    seen.insert(r.key().to_string(), out.len());
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Appends those of `records` whose key the stream does not hold yet, or holds only as a
    /// record `counts` refuses (a failed answer, say); returns how many it appended.
    pub fn append_missing<T: Serialize + DeserializeOwned + Keyed>(
        &self,
        name: &str,
        records: impl IntoIterator<Item = T>,
        counts: impl Fn(&T) -> bool,
    ) -> Result<usize> {
        let have: std::collections::HashSet<String> = self
            .load::<T>(name)?
            .into_iter()
            .filter(|r| counts(r))
            .map(|r| r.key().to_string())
            .collect();
        let missing: Vec<T> = records
            .into_iter()
            .filter(|r| !have.contains(r.key()))
            .collect();
        self.append(name, &missing)?;
        Ok(missing.len())
    }

    /// Appends records as lines in one write, then syncs.
    pub fn append<T: Serialize>(&self, name: &str, records: &[T]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let path = self.file(name);
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)
                .map_err(|e| Error::Internal(format!("serialising a record: {e}")))?;
            buf.push(b'\n');
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.write_all(&buf).map_err(|e| Error::io(&path, e))?;
        f.sync_data().map_err(|e| Error::io(&path, e))
    }
}

/// A held run lock of a results folder (see [`Store::lock`]).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// Writes `bytes` to `path` atomically (temporary file, sync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Writes `path` atomically with a writer callback.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    write(&mut f).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct R {
        key: String,
        v: u32,
    }
    impl Keyed for R {
        fn key(&self) -> &str {
            &self.key
        }
    }

    #[test]
    fn torn_tail_is_repaired_and_the_last_record_per_key_wins() {
        let dir = std::env::temp_dir().join(format!("llmj-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir).unwrap();
        let r = |k: &str, v| R { key: k.into(), v };
        s.append("x", &[r("a", 1), r("b", 2)]).unwrap();
        s.append("x", &[r("a", 9)]).unwrap();
        // Simulate a kill mid-write.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("x.jsonl"))
            .unwrap();
        f.write_all(b"{\"key\":\"c\",\"v").unwrap();
        drop(f);
        let got: Vec<R> = s.load("x").unwrap();
        assert_eq!(got, vec![r("a", 9), r("b", 2)]);
        s.append("x", &[r("c", 3)]).unwrap();
        let got: Vec<R> = s.load("x").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], r("c", 3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
