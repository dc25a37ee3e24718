//! Throughput benchmarks of the engine, with optional llama.cpp reference figures measured in
//! the same run on the same file and thread count ([`mod@reference`]), reported as ratios.
//!
//! Tests follow llama-bench's names: `ppN` is one forward pass over N prompt tokens into an
//! empty cache; `tgN` is N single-token decoding steps (the mean of `reps` runs after one
//! warm-up); `tgN@bB` is the aggregate speed of B sequences decoding N tokens each together,
//! as llama-batched-bench's S_TG. [`run`] adds judgments per second (text verdict vs expected
//! score) and the wall time of an experiment grid, sequential vs batched.

pub mod reference;

pub use reference::{add_llama_batched_bench, add_llama_bench};

use crate::error::Result;
use crate::experiment::ExperimentConfig;
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

/// Aggregate decoding speed of `n_seqs` sequences decoding `n` tokens each together
/// ([`crate::model::Transformer::forward_batch`]), after a short prompt of a different length
/// per sequence. Test name `tg{n}@b{n_seqs}`, as llama-batched-bench's S_TG.
pub fn batch_decode_row(
    name: &str,
    model: &mut Model,
    n_seqs: usize,
    n: usize,
) -> Result<BenchRow> {
    let mut caches = Vec::with_capacity(n_seqs);
    let mut next = Vec::with_capacity(n_seqs);
    for i in 0..n_seqs {
        let ids = bench_tokens(model, 8 + i)?;
        let mut cache = model.transformer().new_cache();
        let logits: Vec<f32> = model
            .transformer()
            .forward(&ids, &mut cache, false)?
            .squeeze(0)?
            .to_vec1()?;
        next.push(crate::sampling::argmax(&logits));
        caches.push(cache);
    }
    let t = Instant::now();
    for _ in 0..n {
        let mut refs: Vec<&mut crate::model::KvCache> = caches.iter_mut().collect();
        let logits = model.transformer().forward_batch(&next, &mut refs)?;
        for (b, tok) in next.iter_mut().enumerate() {
            let row: Vec<f32> = logits.get(b)?.to_vec1()?;
            *tok = crate::sampling::argmax(&row);
        }
    }
    Ok(BenchRow {
        model: name.into(),
        test: format!("tg{n}@b{n_seqs}"),
        tokens_per_s: (n * n_seqs) as f64 / t.elapsed().as_secs_f64(),
        llama_cpp_tokens_per_s: None,
    })
}

/// Judgments per second of one judge on fixed answers, through the same calls a run makes
/// (batched): a generated rubric verdict (text) against expected scores read from token
/// probabilities (no text generated). Returns `(text, expected)`.
pub fn judge_speed(model: &Model, answers: usize) -> Result<(f64, f64)> {
    use crate::backend::LocalBackend;
    use crate::judge::{calls_for, run_calls, Asker, Group, Judge, JudgeConfig};
    use crate::records::{Mode, ResponseRecord};
    let question = "Explain how to bake a chocolate cake without using eggs.";
    let records: Vec<ResponseRecord> = (0..answers)
        .map(|i| ResponseRecord {
            key: format!("bench-{i}"),
            model: "bench".into(),
            setting: "bench".into(),
            prompt_id: format!("p{i}"),
            prompt: question.into(),
            text: Some(format!(
                "Answer {i}: mix flour, sugar, cocoa and baking soda; whisk in oil, vinegar and \
                 water; bake at 180 C for {} minutes, then let it cool before icing.",
                25 + i
            )),
            ..Default::default()
        })
        .collect();
    let groups: Vec<Group<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Group {
            index: i,
            answers: vec![r],
        })
        .collect();
    let rate = |mode: Mode| -> Result<f64> {
        let cfg = JudgeConfig::new(model.source().to_string()).with_modes(&[mode]);
        let judge = Judge::new(cfg, "bench".into(), "bench".into(), Default::default(), 0);
        let mut backend = LocalBackend::new(model.clone());
        let asker = Asker::default();
        let calls = calls_for(&judge, &asker, mode, &groups);
        let t = Instant::now();
        let mut first_error = None;
        run_calls(&mut backend, &asker, calls, &mut |_, r| {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
            Ok(())
        })?;
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(answers as f64 / t.elapsed().as_secs_f64())
    };
    Ok((rate(Mode::Rubric)?, rate(Mode::Expected)?))
}

/// Wall time of the generation grid of an experiment (judge left out) in `dir`, with
/// `batch` answers decoded together.
pub fn grid_seconds(cfg: &ExperimentConfig, batch: usize, dir: &Path) -> Result<f64> {
    let mut c = cfg.clone();
    c.batch = batch;
    c.judge = None;
    let plan = c.plan()?;
    let t = Instant::now();
    crate::results::run_plan(&plan, dir, &mut crate::experiment::Silent)?;
    Ok(t.elapsed().as_secs_f64())
}

/// What `llm-judge bench` measures.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Models (bundled names, paths or `hf://` references).
    pub models: Vec<String>,
    /// Repetitions per pp/tg figure.
    pub reps: usize,
    /// Threads (passed to llama.cpp too).
    pub threads: usize,
    /// `llama-bench` binary for pp/tg reference figures.
    pub llama_bench: Option<std::path::PathBuf>,
    /// `llama-batched-bench` binary for batched reference figures.
    pub llama_batched_bench: Option<std::path::PathBuf>,
    /// Sequence counts for aggregate decoding.
    pub parallel: Vec<usize>,
    /// Tokens decoded per sequence in the batched test.
    pub batch_tokens: usize,
    /// Answers judged per judge-speed figure.
    pub judge_answers: usize,
    /// Experiment whose generation grid is timed sequential vs batched.
    pub grid: Option<std::path::PathBuf>,
    /// Prompts of the grid (its first N).
    pub grid_limit: Option<usize>,
    /// Answer token limit of the grid.
    pub grid_max_tokens: Option<usize>,
}

/// Runs every measurement and prints one line per figure through `print`.
pub fn run(opts: &BenchOptions, print: &mut dyn FnMut(String)) -> Result<()> {
    let opt = |v: Option<f64>, p: usize| {
        v.map(|x| format!("{x:.*}", p))
            .unwrap_or_else(|| "-".into())
    };
    print(format!(
        "{:<24} {:>10} {:>12} {:>12} {:>7}",
        "model", "test", "ours tok/s", "llama.cpp", "ratio"
    ));
    for name in &opts.models {
        let mut m = Model::load(&name.parse()?)?;
        let mut rows = bench_model(name, &mut m, opts.reps)?;
        if let Some(lb) = &opts.llama_bench {
            add_llama_bench(&mut rows, lb, m.path(), opts.threads, opts.reps)?;
        }
        let single = rows.last().map(|r| r.tokens_per_s).unwrap_or(f64::NAN);
        let mut batched = Vec::new();
        for &b in &opts.parallel {
            batched.push(batch_decode_row(name, &mut m, b, opts.batch_tokens)?);
        }
        if let Some(bb) = &opts.llama_batched_bench {
            add_llama_batched_bench(
                &mut batched,
                bb,
                m.path(),
                opts.threads,
                opts.batch_tokens,
                &opts.parallel,
            )?;
        }
        for r in rows.iter().chain(&batched) {
            print(format!(
                "{:<24} {:>10} {:>12.1} {:>12} {:>7}",
                r.model,
                r.test,
                r.tokens_per_s,
                opt(r.llama_cpp_tokens_per_s, 1),
                opt(r.ratio(), 2)
            ));
        }
        for r in &batched {
            print(format!(
                "{name}: {} aggregate / single-stream tg128 = {:.2}x",
                r.test,
                r.tokens_per_s / single
            ));
        }
        if opts.judge_answers > 0 {
            let (text, exp) = judge_speed(&m, opts.judge_answers)?;
            print(format!(
                "{name}: judgments/s as judge: text rubric {text:.3}, expected score {exp:.3} \
                 ({:.1}x)",
                exp / text
            ));
        }
    }
    if let Some(path) = &opts.grid {
        let mut cfg = ExperimentConfig::load(path)?;
        if opts.grid_limit.is_some() {
            cfg.limit = opts.grid_limit;
        }
        if let Some(m) = opts.grid_max_tokens {
            cfg.max_tokens = m;
        }
        let tmp = std::env::temp_dir().join(format!("llm-judge-bench-{}", std::process::id()));
        let seq = grid_seconds(&cfg, 1, &tmp.join("sequential"))?;
        let bat = grid_seconds(&cfg, cfg.batch.max(2), &tmp.join("batched"))?;
        let _ = std::fs::remove_dir_all(&tmp);
        print(format!(
            "grid {} ({} prompts, {} tokens max): sequential {seq:.1} s, batched (batch {}) \
             {bat:.1} s, {:.2}x",
            cfg.name,
            cfg.limit
                .map(|l| l.to_string())
                .unwrap_or_else(|| "all".into()),
            cfg.max_tokens,
            cfg.batch.max(2),
            seq / bat
        ));
    }
    if let Some(rss) = peak_rss_bytes() {
        print(format!("peak RSS: {:.0} MB", rss as f64 / 1e6));
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
