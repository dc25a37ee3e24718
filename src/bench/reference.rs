//! Reference figures from llama.cpp's own benchmark tools, run on the same GGUF file and
//! thread count in the same process run: `llama-bench` (pp/tg) and `llama-batched-bench`
//! (aggregate decoding of parallel sequences). Only their JSON output is read; none of
//! llama.cpp's code is part of this crate.

use super::BenchRow;
use crate::error::{Error, Result};
use std::path::Path;

/// Runs `llama-bench` on the same file and threads with `tests` (e.g. `-p 128,512 -n 128`)
/// and returns its figures as `(test, tokens/s)`, with llama-bench's test names (`pp512`,
/// `tg128`).
pub fn llama_bench(
    llama_bench: &Path,
    gguf: &Path,
    threads: usize,
    reps: usize,
    tests: &[&str],
) -> Result<Vec<(String, f64)>> {
    let out = std::process::Command::new(llama_bench)
        .arg("-m")
        .arg(gguf)
        .args(["-t", &threads.to_string()])
        .args(tests)
        .args(["-r", &reps.max(1).to_string(), "-o", "json"])
        .output()
        .map_err(|e| Error::io(llama_bench, e))?;
    if !out.status.success() {
        return Err(Error::config(
            llama_bench.display().to_string(),
            format!(
                "llama-bench failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::config(
            llama_bench.display().to_string(),
            format!("unreadable JSON: {e}"),
        )
    })?;
    let mut found = Vec::new();
    for t in v.as_array().into_iter().flatten() {
        let (p, g) = (
            t["n_prompt"].as_u64().unwrap_or(0),
            t["n_gen"].as_u64().unwrap_or(0),
        );
        let test = if g > 0 {
            format!("tg{g}")
        } else {
            format!("pp{p}")
        };
        if let Some(speed) = t["avg_ts"].as_f64() {
            found.push((test, speed));
        }
    }
    Ok(found)
}

/// Runs one round of `llama-bench` (pp128, pp512, tg128, one repetition after its own
/// warm-up) on the same file and threads and adds its figures to the rows of the same tests.
pub fn add_llama_bench(
    rows: &mut [BenchRow],
    bin: &Path,
    gguf: &Path,
    threads: usize,
) -> Result<()> {
    for (test, speed) in llama_bench(bin, gguf, threads, 1, &["-p", "128,512", "-n", "128"])? {
        if let Some(r) = rows.iter_mut().find(|r| r.test == test) {
            r.push_reference(speed);
        }
    }
    Ok(())
}

/// Runs `llama-batched-bench` once (prompt 32 tokens, `n` generated, the given parallel
/// counts) on the same file and threads, and adds its `tg{n}@b{B}` figures (S_TG) to the
/// rows of the same tests.
pub fn add_llama_batched_bench(
    rows: &mut [BenchRow],
    bin: &Path,
    gguf: &Path,
    threads: usize,
    n: usize,
    parallel: &[usize],
) -> Result<()> {
    let npl: Vec<String> = parallel.iter().map(|p| p.to_string()).collect();
    let out = std::process::Command::new(bin)
        .arg("-m")
        .arg(gguf)
        .args(["-t", &threads.to_string(), "-c", "8192", "-npp", "32"])
        .args(["-ntg", &n.to_string(), "-npl", &npl.join(",")])
        .args(["--output-format", "jsonl"])
        .output()
        .map_err(|e| Error::io(bin, e))?;
    if !out.status.success() {
        return Err(Error::config(
            bin.display().to_string(),
            format!(
                "llama-batched-bench failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            continue;
        };
        let (Some(pl), Some(speed)) = (v["pl"].as_u64(), v["speed_tg"].as_f64()) else {
            continue;
        };
        let test = format!("tg{n}@b{pl}");
        if let Some(r) = rows.iter_mut().find(|r| r.test == test) {
            r.push_reference(speed);
        }
    }
    Ok(())
}
