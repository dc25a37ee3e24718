//! Throughput benchmarks of the engine, with optional llama.cpp reference figures measured in
//! the same run on the same file and thread count ([`mod@reference`]), reported as ratios.
//!
//! Tests follow llama-bench's names: `ppN` is one forward pass over N prompt tokens into an
//! empty cache; `tgN` is N single-token decoding steps (the mean of `reps` runs after one
//! warm-up); `tgN@bB` is the aggregate speed of B sequences decoding N tokens each together,
//! as llama-batched-bench's S_TG. [`run`] adds judgments per second (text verdict vs expected
//! score), the wall time of an experiment grid (sequential vs batched), `tg128+busy` (decoding
//! while another process keeps one core busy), and `serve@cN` (aggregate tokens/s of N
//! concurrent clients of `serve`, next to `llama-server -np N`, [`serve_load`]). [`run`]
//! returns everything as one [`BenchReport`], which the CLI also writes as JSON.

pub mod device_check;
pub mod reference;
pub mod serve_load;

pub use reference::{add_llama_batched_bench, add_llama_bench, llama_bench};

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
        // A GPU runs asynchronously: wait for it before reading the clock.
        model
            .transformer()
            .forward(&ids, &mut cache, false)?
            .device()
            .synchronize()?;
        if r > 0 {
            total += t.elapsed().as_secs_f64();
        }
    }
    Ok(n as f64 * reps as f64 / total)
}

/// Single-stream decoding: the forward passes only, as llama-bench times them (choosing the
/// next token, greedily here, is left out of the clock).
fn decode_speed(model: &mut Model, n: usize, reps: usize) -> Result<f64> {
    let start = bench_tokens(model, 1)?;
    let mut total = 0.0;
    for r in 0..=reps {
        let mut cache = model.transformer().new_cache();
        let mut tok = start[0];
        let mut elapsed = 0.0;
        for _ in 0..n {
            let t = Instant::now();
            let logits = model.transformer().forward(&[tok], &mut cache, false)?;
            logits.device().synchronize()?;
            elapsed += t.elapsed().as_secs_f64();
            tok = crate::sampling::argmax(&logits.squeeze(0)?.to_vec1::<f32>()?);
        }
        if r > 0 {
            total += elapsed;
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
/// per sequence. Test name `tg{n}@b{n_seqs}`, as llama-batched-bench's S_TG, which like this
/// figure times the forward passes and not the choice of the next tokens.
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
    // The forward passes only, as llama-batched-bench times them.
    let mut elapsed = 0.0;
    for _ in 0..n {
        let mut refs: Vec<&mut crate::model::KvCache> = caches.iter_mut().collect();
        let t = Instant::now();
        let logits = model.transformer().forward_batch(&next, &mut refs)?;
        logits.device().synchronize()?;
        elapsed += t.elapsed().as_secs_f64();
        for (b, tok) in next.iter_mut().enumerate() {
            let row: Vec<f32> = logits.get(b)?.to_vec1()?;
            *tok = crate::sampling::argmax(&row);
        }
    }
    Ok(BenchRow {
        model: name.into(),
        test: format!("tg{n}@b{n_seqs}"),
        tokens_per_s: (n * n_seqs) as f64 / elapsed,
        llama_cpp_tokens_per_s: None,
    })
}

/// Judgments per second of one judge on fixed answers, through the same calls a run makes
/// (batched): a generated rubric verdict (text) against expected scores read from token
/// probabilities (no text generated), the latter also with a batch of one (the same caches,
/// one query per forward pass). Returns `(text, expected, expected with a batch of one)`.
pub fn judge_speed(model: &Model, answers: usize) -> Result<(f64, f64, f64)> {
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
    let rate = |mode: Mode, batch: usize| -> Result<f64> {
        let cfg = JudgeConfig::new(model.source().to_string()).with_modes(&[mode]);
        let judge = Judge::new(cfg, "bench".into(), "bench".into(), Default::default(), 0);
        let mut backend = LocalBackend::new(model.clone()).with_max_batch(batch);
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
    let batch = crate::backend::DEFAULT_MAX_BATCH;
    Ok((
        rate(Mode::Rubric, batch)?,
        rate(Mode::Expected, batch)?,
        rate(Mode::Expected, 1)?,
    ))
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
    /// `llama-server` binary for the serving reference figure.
    pub llama_server: Option<std::path::PathBuf>,
    /// Sequence counts for aggregate decoding.
    pub parallel: Vec<usize>,
    /// Tokens decoded per sequence in the batched test.
    pub batch_tokens: usize,
    /// Answers judged per judge-speed figure.
    pub judge_answers: usize,
    /// Measure tg128 again while another process keeps one core busy.
    pub busy: bool,
    /// Concurrent clients of the serving test (0 skips it).
    pub serve_clients: usize,
    /// Time small requests to `serve` while idle sockets, keyless clients and large
    /// bodies abuse it ([`serve_load::abuse`]), on the first model.
    pub serve_abuse: bool,
    /// Experiment whose generation grid is timed sequential vs batched.
    pub grid: Option<std::path::PathBuf>,
    /// Prompts of the grid (its first N).
    pub grid_limit: Option<usize>,
    /// Answer token limit of the grid.
    pub grid_max_tokens: Option<usize>,
    /// Where our models run (default `auto`; the grid's default is its experiment's
    /// `device`). llama.cpp's figures are its own build's.
    pub device: Option<crate::model::DeviceChoice>,
}

/// Judgments per second of one model as a judge.
#[derive(Clone, Debug, Serialize)]
pub struct JudgeSpeed {
    /// Model name.
    pub model: String,
    /// Generated rubric verdicts per second.
    pub text_per_s: f64,
    /// Expected scores (token probabilities) per second, answers batched behind the shared
    /// judge prefix.
    pub expected_per_s: f64,
    /// Expected scores per second with a batch of one (one query per forward pass).
    pub expected_batch1_per_s: f64,
}

/// Wall time of an experiment's generation grid.
#[derive(Clone, Debug, Serialize)]
pub struct GridTiming {
    /// Experiment name.
    pub experiment: String,
    /// Prompts (`None`: all).
    pub prompts: Option<usize>,
    /// Answer token limit.
    pub max_tokens: usize,
    /// Seconds, one answer at a time.
    pub sequential_s: f64,
    /// Seconds, `batch` answers decoded together.
    pub batched_s: f64,
    /// Answers decoded together.
    pub batch: usize,
}

/// Everything one `bench` run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The CPU (`model name` of /proc/cpuinfo).
    pub cpu: String,
    /// Threads used by both engines.
    pub threads: usize,
    /// Speed figures, with llama.cpp's where measured.
    pub rows: Vec<BenchRow>,
    /// Judge speed per model.
    pub judge: Vec<JudgeSpeed>,
    /// The grid timing, when asked for.
    pub grid: Option<GridTiming>,
    /// Small-request latency of `serve` under abuse, when asked for.
    pub serve_abuse: Option<serve_load::AbuseFigure>,
    /// Peak resident memory of the bench process, in MB.
    pub peak_rss_mb: Option<f64>,
}

/// The CPU's model name, or `unknown`.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Another process that keeps one core busy (a shell loop) while it lives.
pub struct BusyCore(std::process::Child);

impl BusyCore {
    /// Starts the busy loop.
    pub fn start() -> Result<Self> {
        std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .map(BusyCore)
            .map_err(|e| crate::error::Error::invalid("bench --busy: starting the busy loop", e))
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs every measurement, prints one line per figure through `print`, and returns them all.
pub fn run(opts: &BenchOptions, print: &mut dyn FnMut(String)) -> Result<BenchReport> {
    let opt = |v: Option<f64>, p: usize| {
        v.map(|x| format!("{x:.*}", p))
            .unwrap_or_else(|| "-".into())
    };
    let mut report = BenchReport {
        cpu: cpu_name(),
        threads: opts.threads,
        rows: Vec::new(),
        judge: Vec::new(),
        grid: None,
        serve_abuse: None,
        peak_rss_mb: None,
    };
    print(format!("{}, {} threads", report.cpu, opts.threads));
    print(format!(
        "{:<24} {:>10} {:>12} {:>12} {:>7}",
        "model", "test", "ours tok/s", "llama.cpp", "ratio"
    ));
    for name in &opts.models {
        let mut m = Model::load_with(
            &name.parse()?,
            &crate::model::LoadOptions::on(opts.device.unwrap_or_default())?,
        )?;
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
        rows.extend(batched);
        if opts.busy {
            let _busy = BusyCore::start()?;
            let mut row = BenchRow {
                model: name.clone(),
                test: "tg128+busy".into(),
                tokens_per_s: decode_speed(&mut m, 128, opts.reps.max(1))?,
                llama_cpp_tokens_per_s: None,
            };
            if let Some(lb) = &opts.llama_bench {
                let found = llama_bench(
                    lb,
                    m.path(),
                    opts.threads,
                    opts.reps,
                    &["-p", "0", "-n", "128"],
                )?;
                row.llama_cpp_tokens_per_s = found.iter().find(|(t, _)| t == "tg128").map(|f| f.1);
            }
            rows.push(row);
            print(format!(
                "{name}: tg128+busy: the kernels have run on one thread {} times after a \
                 descheduled worker",
                crate::model::parallel::straggles()
            ));
        }
        if opts.serve_clients > 0 {
            let n = opts.serve_clients;
            let base = serve_load::start_ours(&m, name, n)?;
            let mut row = BenchRow {
                model: name.clone(),
                test: format!("serve@c{n}"),
                tokens_per_s: serve_load::load(&base, n, opts.batch_tokens)?,
                llama_cpp_tokens_per_s: None,
            };
            if let Some(ls) = &opts.llama_server {
                let server = serve_load::start_llama_server(ls, m.path(), opts.threads, n, 512)?;
                row.llama_cpp_tokens_per_s =
                    Some(serve_load::load(&server.base, n, opts.batch_tokens)?);
            }
            rows.push(row);
        }
        for r in &rows {
            print(format!(
                "{:<24} {:>10} {:>12.1} {:>12} {:>7}",
                r.model,
                r.test,
                r.tokens_per_s,
                opt(r.llama_cpp_tokens_per_s, 1),
                opt(r.ratio(), 2)
            ));
        }
        for r in rows.iter().filter(|r| r.test.contains("@b")) {
            print(format!(
                "{name}: {} aggregate / single-stream tg128 = {:.2}x",
                r.test,
                r.tokens_per_s / single
            ));
        }
        report.rows.extend(rows);
        if opts.serve_abuse && report.serve_abuse.is_none() {
            let a = serve_load::abuse(&m, name)?;
            print(format!(
                "{name}: serve, small requests ({} each): alone p50 {:.0} ms, p99 {:.0} ms; \
                 under abuse ({}) p50 {:.0} ms, p99 {:.0} ms ({} large bodies answered); \
                 resident memory {} MB before the abuse, {} MB 2 s after it",
                a.requests,
                a.alone_p50_ms,
                a.alone_p99_ms,
                a.abuse,
                a.abused_p50_ms,
                a.abused_p99_ms,
                a.big_bodies_answered,
                opt(a.rss_before_mb, 0),
                opt(a.rss_after_mb, 0)
            ));
            report.serve_abuse = Some(a);
        }
        if opts.judge_answers > 0 {
            let (text, exp, single) = judge_speed(&m, opts.judge_answers)?;
            print(format!(
                "{name}: judgments/s as judge: text rubric {text:.3}, expected score {exp:.3} \
                 ({:.1}x text; with a batch of one {single:.3}, so batching gives {:.2}x)",
                exp / text,
                exp / single
            ));
            report.judge.push(JudgeSpeed {
                model: name.clone(),
                text_per_s: text,
                expected_per_s: exp,
                expected_batch1_per_s: single,
            });
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
        // The grid's results are thrown away, so the device may as well be the experiment's.
        if opts.device.is_some() {
            cfg.device = opts.device;
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
        report.grid = Some(GridTiming {
            experiment: cfg.name.clone(),
            prompts: cfg.limit,
            max_tokens: cfg.max_tokens,
            sequential_s: seq,
            batched_s: bat,
            batch: cfg.batch.max(2),
        });
    }
    report.peak_rss_mb = peak_rss_bytes().map(|b| b as f64 / 1e6);
    if let Some(mb) = report.peak_rss_mb {
        print(format!("peak RSS: {mb:.0} MB"));
    }
    Ok(report)
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
