//! File identity for record keys: the sha256 of a model file (cached beside it), of a
//! checkpoint folder's files, and of a LoRA adapter's.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

fn stamp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Size and modification time, which change whenever the file is rewritten.
fn identity(path: &Path) -> Result<String> {
    let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{} {}", md.len(), mtime))
}

/// The sha256 of `path`, read from a `<file>.sha256` stamp when size and modification time
/// still match, else computed and stamped (if the folder is writable).
pub fn cached_sha256(path: &Path) -> Result<String> {
    let id = identity(path)?;
    let stamp = stamp_path(path);
    if let Ok(text) = std::fs::read_to_string(&stamp) {
        if let Some((sid, sha)) = text.trim().rsplit_once(' ') {
            if sid == id && sha.len() == 64 {
                return Ok(sha.to_string());
            }
        }
    }
    let sha = sha256_file(path)?;
    let _ = std::fs::write(&stamp, format!("{id} {sha}"));
    Ok(sha)
}

/// Records `sha` as the sha256 of `path`, computed while the file was written, so that
/// [`cached_sha256`] does not read it again.
pub fn store_sha256(path: &Path, sha: &str) -> Result<()> {
    let id = identity(path)?;
    let _ = std::fs::write(stamp_path(path), format!("{id} {sha}"));
    Ok(())
}

/// Hex sha256 of a string, for record keys.
pub fn sha256_str(s: &str) -> String {
    format!("{:x}", Sha256::digest(s.as_bytes()))
}

/// sha256 over `name sha256` lines of the given files, in order: the identity of a model
/// made of several files (a checkpoint folder, an adapter).
pub fn files_sha256(files: &[PathBuf]) -> Result<String> {
    let mut lines = String::new();
    for f in files {
        let sha = cached_sha256(f)?;
        let name = f.file_name().map(|n| n.to_string_lossy().to_string());
        lines.push_str(&format!("{} {sha}\n", name.unwrap_or_default()));
    }
    Ok(sha256_str(&lines))
}
