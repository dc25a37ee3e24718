//! Throughput benchmarks of the engine, with optional llama.cpp reference figures measured in
//! the same run on the same file and thread count (`llama-bench`), reported as ratios.
//!
//! Tests follow llama-bench's names: `ppN` is one forward pass over N prompt tokens into an
//! empty cache; `tgN` is N single-token decoding steps. Each figure is the mean of `reps`
//! runs after one warm-up.

use crate::error::{Error, Result};
use crate::model::Model;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Model name.
    pub model: String,
    /// `pp128`, `pp512`, `tg128`, ...
    pub test: String,
    /// Our tokens per second.
    pub tokens_per_s: f64,
    /// llama.cpp's tokens per second, when measured.
    pub llama_cpp_tokens_per_s: Option<f64>,
}

impl BenchRow {
    /// Our speed over llama.cpp's.
    pub fn ratio(&self) -> Option<f64> {
        self.llama_cpp_tokens_per_s.map(|r| self.tokens_per_s / r)
    }
}

/// Token ids for a benchmark prompt of `n` tokens (ordinary text, repeated).
fn bench_tokens(model: &Model, n: usize) -> Result<Vec<u32>> {
    let text = "The quick brown fox jumps over the lazy dog while the committee reviews \
                the quarterly report on renewable energy, water use and public transport. ";
    let unit = model.tokenizer().encode(text, false)?;
    Ok(unit.iter().copied().cycle().take(n).collect())
}

fn prompt_speed(model: &mut Model, n: usize, reps: usize) -> Result<f64> {
    let ids = bench_tokens(model, n)?;
    let mut total = 0.0;
    for r in 0..=reps {
        let mut cache = model.transformer().new_cache();
        let t = Instant::now();
        model.transformer().forward(&ids, &mut cache, false)?;
        if r > 0 {
            total += t.elapsed().as_secs_f64();
        }
    }
    Ok(n as f64 * reps as f64 / total)
}

fn decode_speed(model: &mut Model, n: usize, reps: usize) -> Result<f64> {
    let start = bench_tokens(model, 1)?;
    let mut total = 0.0;
    for r in 0..=reps {
        let mut cache = model.transformer().new_cache();
        let mut tok = start[0];
        let t = Instant::now();
        for _ in 0..n {
            let logits: Vec<f32> = model
                .transformer()
                .forward(&[tok], &mut cache, false)?
                .squeeze(0)?
                .to_vec1()?;
            tok = crate::sampling::argmax(&logits);
        }
        if r > 0 {
            total += t.elapsed().as_secs_f64();
        }
    }
    Ok(n as f64 * reps as f64 / total)
}

/// Measures pp128, pp512 and tg128 for one model.
pub fn bench_model(name: &str, model: &mut Model, reps: usize) -> Result<Vec<BenchRow>> {
    let reps = reps.max(1);
    let mut rows = Vec::new();
    for n in [128, 512] {
        rows.push(BenchRow {
            model: name.into(),
            test: format!("pp{n}"),
            tokens_per_s: prompt_speed(model, n, reps)?,
            llama_cpp_tokens_per_s: None,
        });
    }
    rows.push(BenchRow {
        model: name.into(),
        test: "tg128".into(),
        tokens_per_s: decode_speed(model, 128, reps)?,
        llama_cpp_tokens_per_s: None,
    });
    Ok(rows)
}

/// Runs `llama-bench` on the same file and threads and fills in the reference figures.
pub fn add_llama_bench(
    rows: &mut [BenchRow],
    llama_bench: &Path,
    gguf: &Path,
    threads: usize,
    reps: usize,
) -> Result<()> {
    let out = std::process::Command::new(llama_bench)
        .arg("-m")
        .arg(gguf)
        .args(["-t", &threads.to_string(), "-p", "128,512", "-n", "128"])
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
        if let Some(r) = rows.iter_mut().find(|r| r.test == test) {
            r.llama_cpp_tokens_per_s = t["avg_ts"].as_f64();
        }
    }
    Ok(())
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
