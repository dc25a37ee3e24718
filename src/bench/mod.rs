//! Throughput benchmarks of the engine, with optional llama.cpp reference figures measured in
//! the same run on the same file and thread count ([`mod@reference`]), reported as ratios.
//!
//! Tests follow llama-bench's names: `ppN` is one forward pass over N prompt tokens into an
//! empty cache; `tgN` is N single-token decoding steps; `tgN@bB` is the aggregate speed of B
//! sequences decoding N tokens each together, as llama-batched-bench's S_TG. Each figure is
//! measured in rounds that alternate ours and llama.cpp's (A B A B ...), and the table gives
//! the medians, the median of the per-round ratios and their min-max, so one noisy moment on a
//! shared machine moves a figure by one round at most. [`run`] adds judgments per second (text
//! verdict vs expected score), the wall time of an experiment grid (sequential vs batched),
//! `tg128+busy` and `tg128+busy-nice` (decoding while another process, of the same or of the
//! lowest priority, keeps one core busy), `serve@cN` (aggregate tokens/s of N concurrent
//! clients of `serve`, next to `llama-server -np N`, [`serve_load`]), the machine's streaming
//! read speed with each model's decoding bound, and the peak memory of `generate`. [`run`]
//! returns everything as one [`BenchReport`], which the CLI also writes as JSON.

pub mod device_check;
pub mod reference;
pub mod serve_load;

pub use reference::{add_llama_batched_bench, add_llama_bench, llama_bench};

use crate::error::{Error, Result};
use crate::experiment::ExperimentConfig;
use crate::model::Model;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// One measured figure: ours and llama.cpp's, measured in alternating rounds (ours, then
/// llama.cpp's, then ours again, ...), so that both see the same state of a shared machine.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Model name.
    pub model: String,
    /// `pp128`, `pp512`, `tg128`, ...
    pub test: String,
    /// Our tokens per second: the median over the rounds.
    pub tokens_per_s: f64,
    /// llama.cpp's tokens per second (the median over the rounds), when measured.
    pub llama_cpp_tokens_per_s: Option<f64>,
    /// Our figure in each round.
    pub runs: Vec<f64>,
    /// llama.cpp's figure in each round (`None` where it gave none), when measured.
    pub llama_cpp_runs: Vec<Option<f64>>,
}

impl BenchRow {
    /// A figure with no rounds yet.
    pub fn new(model: &str, test: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            test: test.into(),
            tokens_per_s: f64::NAN,
            llama_cpp_tokens_per_s: None,
            runs: Vec::new(),
            llama_cpp_runs: Vec::new(),
        }
    }

    /// Adds one round of ours.
    pub fn push(&mut self, tokens_per_s: f64) {
        self.runs.push(tokens_per_s);
        self.tokens_per_s = median(&self.runs);
    }

    /// Adds one round of llama.cpp's.
    pub fn push_reference(&mut self, tokens_per_s: f64) {
        self.llama_cpp_runs.push(Some(tokens_per_s));
        let found: Vec<f64> = self.llama_cpp_runs.iter().flatten().copied().collect();
        self.llama_cpp_tokens_per_s = Some(median(&found));
    }

    /// Marks a round in which llama.cpp gave no figure for this test, so that later rounds
    /// still pair with ours by round.
    pub fn pad_reference(&mut self) {
        while self.llama_cpp_runs.len() < self.runs.len() {
            self.llama_cpp_runs.push(None);
        }
    }

    /// Our speed over llama.cpp's in each round where both were measured.
    pub fn round_ratios(&self) -> Vec<f64> {
        self.runs
            .iter()
            .zip(&self.llama_cpp_runs)
            .filter_map(|(a, b)| b.map(|b| a / b))
            .collect()
    }

    /// The median of the per-round ratios.
    pub fn ratio(&self) -> Option<f64> {
        let r = self.round_ratios();
        (!r.is_empty()).then(|| median(&r))
    }

    /// A loaded figure over this one, the median over rounds of the same round's pair: ours,
    /// and llama.cpp's where both were measured.
    pub fn loaded_share(&self, loaded: &BenchRow) -> (Option<f64>, Option<f64>) {
        let share = |a: &[Option<f64>], b: &[Option<f64>]| {
            let r: Vec<f64> = b
                .iter()
                .zip(a)
                .filter_map(|(l, u)| Some((*l)? / (*u)?))
                .collect();
            (!r.is_empty()).then(|| median(&r))
        };
        let some = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        (
            share(&some(&self.runs), &some(&loaded.runs)),
            share(&self.llama_cpp_runs, &loaded.llama_cpp_runs),
        )
    }

    /// The lowest and highest per-round ratio.
    pub fn ratio_range(&self) -> Option<(f64, f64)> {
        let r = self.round_ratios();
        let lo = r.iter().copied().reduce(f64::min)?;
        let hi = r.iter().copied().reduce(f64::max)?;
        Some((lo, hi))
    }
}

/// The median of some figures (the mean of the middle two for an even count); NaN for none.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Token ids for a benchmark prompt of `n` tokens (ordinary text, repeated).
fn bench_tokens(model: &Model, n: usize) -> Result<Vec<u32>> {
    let text = "The quick brown fox jumps over the lazy dog while the committee reviews \
                the quarterly report on renewable energy, water use and public transport. ";
    let unit = model.tokenizer().encode(text, false)?;
    Ok(unit.iter().copied().cycle().take(n).collect())
}

/// Prompt tokens per second of one forward pass over `n` tokens into an empty cache, after
/// one untimed pass when `warm_up`.
fn prompt_speed(model: &mut Model, n: usize, warm_up: bool) -> Result<f64> {
    let ids = bench_tokens(model, n)?;
    let mut speed = f64::NAN;
    for timed in [!warm_up, true] {
        let mut cache = model.transformer().new_cache();
        let t = Instant::now();
        // A GPU runs asynchronously: wait for it before reading the clock.
        model
            .transformer()
            .forward(&ids, &mut cache, false)?
            .device()
            .synchronize()?;
        if timed {
            speed = n as f64 / t.elapsed().as_secs_f64();
            break;
        }
    }
    Ok(speed)
}

/// Single-stream decoding: the forward passes only, as llama-bench times them (choosing the
/// next token, greedily here, is left out of the clock); one untimed run first when
/// `warm_up`.
fn decode_speed(model: &mut Model, n: usize, warm_up: bool) -> Result<f64> {
    let start = bench_tokens(model, 1)?;
    let mut speed = f64::NAN;
    for timed in [!warm_up, true] {
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
        if timed {
            speed = n as f64 / elapsed;
            break;
        }
    }
    Ok(speed)
}

/// Measures one round of pp128, pp512 and tg128 for one model into `rows` (created on the
/// first round, which also warms each test up). Returns what the kernels' pool did during
/// tg128.
pub fn bench_model_round(
    name: &str,
    model: &mut Model,
    rows: &mut Vec<BenchRow>,
) -> Result<crate::model::parallel::PoolStats> {
    let first = rows.is_empty();
    let ours = rows.len() == 3 && rows[2].test == "tg128";
    if !first && !ours {
        return Err(crate::error::Error::config(
            "bench",
            "bench_model_round continues only the rows it made (pp128, pp512, tg128)",
        ));
    }
    if first {
        for t in ["pp128", "pp512", "tg128"] {
            rows.push(BenchRow::new(name, t));
        }
    }
    rows[0].push(prompt_speed(model, 128, first)?);
    rows[1].push(prompt_speed(model, 512, first)?);
    let before = crate::model::parallel::PoolStats::now();
    rows[2].push(decode_speed(model, 128, first)?);
    Ok(crate::model::parallel::PoolStats::now().since(&before))
}

/// Aggregate decoding speed of `n_seqs` sequences decoding `n` tokens each together
/// ([`crate::model::Transformer::forward_batch`]), after a short prompt of a different length
/// per sequence. Test name `tg{n}@b{n_seqs}`, as llama-batched-bench's S_TG, which like this
/// figure times the forward passes and not the choice of the next tokens. Returns tokens/s.
pub fn batch_decode_speed(model: &mut Model, n_seqs: usize, n: usize) -> Result<f64> {
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
    Ok((n * n_seqs) as f64 / elapsed)
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
    /// Rounds per figure (at least one): ours, then llama.cpp's, alternating.
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
    /// Measure tg128 again while a lowest-priority process (`nice -n 19`) keeps one core
    /// busy.
    pub busy_nice: bool,
    /// Measure the machine's streaming read speed at the start and end, and each model's
    /// decoding bound from it.
    pub stream_read: bool,
    /// Measure the peak resident memory of `llm-judge generate` on each model, in a child
    /// process.
    pub memory: bool,
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

impl BenchOptions {
    /// Checks every option before anything is measured: at least one round, one thread,
    /// one token and one sequence per batched figure; every model name resolves (a path to
    /// a GGUF file or a checkpoint folder exists); every llama.cpp binary given as a path,
    /// and the grid's experiment, exist. So a mistake in the last of three models costs a
    /// second, not the minutes the first two take.
    pub fn validate(&self) -> Result<()> {
        let at_least_one = |field: &str, v: usize| {
            if v == 0 {
                Err(Error::config(
                    format!("bench: {field}"),
                    "must be at least 1",
                ))
            } else {
                Ok(())
            }
        };
        at_least_one("--reps", self.reps)?;
        at_least_one("--batch-tokens", self.batch_tokens)?;
        at_least_one("--threads", self.threads)?;
        for &b in &self.parallel {
            at_least_one("--parallel", b)?;
        }
        if self.models.is_empty() {
            return Err(Error::config("bench: --model", "no model to measure"));
        }
        for name in &self.models {
            // A GGUF file or a checkpoint folder.
            if let crate::model::ModelSource::Path(p) = name.parse()? {
                if !p.exists() {
                    return Err(Error::ModelNotFound(p));
                }
            }
        }
        for (flag, path) in [
            ("--llama-bench", &self.llama_bench),
            ("--llama-batched-bench", &self.llama_batched_bench),
            ("--llama-server", &self.llama_server),
        ] {
            // A bare name is looked up on the PATH when it runs.
            if let Some(p) = path.as_ref().filter(|p| p.components().count() > 1) {
                if !p.is_file() {
                    return Err(Error::config(
                        format!("bench: {flag}"),
                        format!("{}: no such file", p.display()),
                    ));
                }
            }
        }
        if let Some(path) = &self.grid {
            ExperimentConfig::load(path)?;
        }
        Ok(())
    }
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
    /// Peak resident memory of the bench process, in MB (with `--stream-read`, its 512 MiB
    /// buffer included).
    pub peak_rss_mb: Option<f64>,
    /// The streaming read speed in GB/s, at the start and at the end of the run.
    pub stream_read_gbps: Vec<f64>,
    /// Each model's decoding speed against the streaming-read bound.
    pub bounds: Vec<DecodeBound>,
    /// Peak memory of `generate` per model.
    pub memory: Vec<MemoryFigure>,
    /// Decoding's prefetch distance after each model's rounds (its busy ones included), and
    /// batched decoding's after its batched rounds.
    pub prefetch: Vec<PrefetchFigure>,
    /// How much of each model's weights lay on huge pages (see [`crate::model::pages`]).
    pub huge_pages: Vec<HugePagesFigure>,
}

/// One model's weights on huge pages, as loaded for the run.
#[derive(Clone, Debug, Serialize)]
pub struct HugePagesFigure {
    /// Model name.
    pub model: String,
    /// What the load did.
    #[serde(flatten)]
    pub pages: crate::model::pages::HugePages,
}

impl HugePagesFigure {
    /// One line for the run's output.
    pub fn describe(&self) -> String {
        let mb = |b: usize| b as f64 / 1e6;
        let mut line = format!(
            "{:.0} of {:.0} MB of weights on 2 MiB pages",
            mb(self.pages.on_huge_pages),
            mb(self.pages.weights)
        );
        if let Some(why) = &self.pages.refused {
            line.push_str(&format!(" ({why})"));
        }
        line
    }
}

/// The software prefetch of decoding, or of batched decoding, as it stood after a model's
/// rounds (see [`crate::model::prefetch`]).
#[derive(Clone, Debug, Serialize)]
pub struct PrefetchFigure {
    /// Model name.
    pub model: String,
    /// Which calls the distance serves: "decoding" (one sequence) or "batched decoding"
    /// (two to sixteen).
    pub calls: String,
    /// Whether the distance was measured (`true`) or fixed by `LLM_JUDGE_PREFETCH`.
    pub measured: bool,
    /// The distance in bytes (0: none); `None` while no exploration has ended.
    pub distance: Option<usize>,
    /// The distances tried, in bytes.
    pub tried: Vec<usize>,
    /// Their cost in the last exploration, relative to the kept one's (empty where not
    /// measured).
    pub relative_cost: Vec<f64>,
    /// Which exploration of the process chose the distance (0: none has ended, or fixed).
    pub exploration: u64,
}

impl PrefetchFigure {
    fn new(model: &str, calls: crate::model::prefetch::Calls) -> Self {
        use crate::model::prefetch::Policy;
        let (policy, choice) = crate::model::prefetch::current(calls);
        let measured = policy == Policy::Measure;
        Self {
            model: model.to_string(),
            calls: calls.describe().to_string(),
            measured,
            distance: match policy {
                Policy::Fixed(d) => Some(d),
                Policy::Measure => choice.map(|c| c.distance),
            },
            tried: if measured {
                crate::model::prefetch::DISTANCES.to_vec()
            } else {
                Vec::new()
            },
            relative_cost: choice.map(|c| c.relative.to_vec()).unwrap_or_default(),
            exploration: choice.map(|c| c.exploration).unwrap_or(0),
        }
    }

    /// One line for the bench's output.
    fn describe(&self) -> String {
        let kib = |d: usize| match d {
            0 => "none".to_string(),
            d if d % 1024 == 0 => format!("{} KiB", d / 1024),
            d => format!("{d} bytes"),
        };
        match (self.measured, self.distance) {
            // A fixed policy always has its distance.
            (false, d) => format!(
                "{}'s prefetch distance fixed by LLM_JUDGE_PREFETCH: {}",
                self.calls,
                d.map(kib).unwrap_or_default()
            ),
            (true, None) => format!(
                "{}'s prefetch distance: no exploration has ended yet",
                self.calls
            ),
            (true, Some(d)) => format!(
                "{}'s prefetch distance, measured (exploration {} of this process): {} \
                 (cost relative to it: {})",
                self.calls,
                self.exploration,
                kib(d),
                self.tried
                    .iter()
                    .zip(&self.relative_cost)
                    .map(|(&t, c)| format!("{} {c:.3}", kib(t)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Single-stream decoding against the bound the machine's memory sets: every weight read
/// once per token, at the streaming-read speed.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeBound {
    /// Model name.
    pub model: String,
    /// Bytes of weights read per decoded token (every tensor but a token-embedding table
    /// that a separate output matrix leaves to one row per token).
    pub bytes_per_token: u64,
    /// The streaming read speed over those bytes.
    pub bound_tokens_per_s: f64,
    /// Our tg128 over the bound.
    pub tg128_fraction: f64,
    /// llama.cpp's tg128 over the bound, when measured.
    pub llama_cpp_tg128_fraction: Option<f64>,
}

/// The peak resident memory of `llm-judge generate` on one model.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryFigure {
    /// Model name.
    pub model: String,
    /// The model file's size (none for a checkpoint folder).
    pub file_bytes: Option<u64>,
    /// The child process's peak resident memory, as it reports it (its own `VmHWM`).
    pub generate_peak_rss_bytes: u64,
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
    /// Starts the busy loop, at the lowest priority (`nice -n 19`) when `nice`.
    pub fn start(nice: bool) -> Result<Self> {
        let mut cmd = std::process::Command::new(if nice { "nice" } else { "sh" });
        if nice {
            cmd.args(["-n", "19", "sh"]);
        }
        // The loop ends with its parent, also when the bench is killed.
        cmd.args(["-c", "while kill -0 $PPID 2>/dev/null; do :; done"])
            .spawn()
            .map(BusyCore)
            .map_err(|e| {
                crate::error::Error::invalid("bench --busy/--busy-nice: starting the busy loop", e)
            })
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
    opts.validate()?;
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
        stream_read_gbps: Vec::new(),
        bounds: Vec::new(),
        memory: Vec::new(),
        prefetch: Vec::new(),
        huge_pages: Vec::new(),
    };
    print(format!("{}, {} threads", report.cpu, opts.threads));
    // The machine's figure: a quiet run reads as fast at the end as at the start.
    let read_gbps = opts.stream_read.then(|| stream_read_gbps(opts.threads));
    if let Some(bw) = read_gbps {
        print(format!(
            "streaming read, {} threads: {bw:.1} GB/s",
            opts.threads
        ));
        report.stream_read_gbps.push(bw);
    }
    print(format!(
        "ratios are medians over {} rounds, ours and llama.cpp's alternating; min-max over the \
         rounds",
        opts.reps
    ));
    print(format!(
        "{:<24} {:>15} {:>12} {:>12} {:>7} {:>11}",
        "model", "test", "ours tok/s", "llama.cpp", "ratio", "min-max"
    ));
    for name in &opts.models {
        let mut m = Model::load_with(
            &name.parse()?,
            &crate::model::LoadOptions::on(opts.device.unwrap_or_default())?,
        )?;
        let pages = HugePagesFigure {
            model: name.clone(),
            pages: m.transformer().huge_pages().clone(),
        };
        // Only our CPU kernels' matrices are offered (none on a GPU).
        if pages.pages.weights > 0 {
            print(format!("{name}: {}", pages.describe()));
            report.huge_pages.push(pages);
        }
        let rounds = opts.reps;
        // The loads tg128 is measured under: another process busy on one core, at the same
        // priority (`false`) or the lowest (`true`).
        let loads: Vec<bool> = [(opts.busy, false), (opts.busy_nice, true)]
            .into_iter()
            .filter_map(|(on, nice)| on.then_some(nice))
            .collect();
        let mut loaded: Vec<BenchRow> = loads
            .iter()
            .map(|&nice| {
                BenchRow::new(
                    name,
                    if nice {
                        "tg128+busy-nice"
                    } else {
                        "tg128+busy"
                    },
                )
            })
            .collect();
        let mut pool = vec![crate::model::parallel::PoolStats::default(); loads.len()];
        // Rounds alternate ours and llama.cpp's, so a noisy stretch of a shared machine
        // lands on both sides of each ratio; a loaded figure is measured in the same round
        // as the unloaded one it is set against.
        let mut rows = Vec::new();
        let mut unloaded = crate::model::parallel::PoolStats::default();
        for _ in 0..rounds {
            unloaded.add(&bench_model_round(name, &mut m, &mut rows)?);
            for ((&nice, row), stats) in loads.iter().zip(&mut loaded).zip(&mut pool) {
                let _busy = BusyCore::start(nice)?;
                // Each load starts from a pool that has not seen the previous load, and
                // warms up under it (as llama-bench does).
                crate::model::parallel::forget_straggles();
                let before = crate::model::parallel::PoolStats::now();
                row.push(decode_speed(&mut m, 128, true)?);
                stats.add(&crate::model::parallel::PoolStats::now().since(&before));
            }
            if let Some(lb) = &opts.llama_bench {
                add_llama_bench(&mut rows, lb, m.path(), opts.threads)?;
                rows.iter_mut().for_each(BenchRow::pad_reference);
                for (&nice, row) in loads.iter().zip(&mut loaded) {
                    let _busy = BusyCore::start(nice)?;
                    let found =
                        llama_bench(lb, m.path(), opts.threads, 1, &["-p", "0", "-n", "128"])?;
                    if let Some(f) = found.iter().find(|(t, _)| t == "tg128") {
                        row.push_reference(f.1);
                    }
                    row.pad_reference();
                }
            }
        }
        if !loads.is_empty() {
            print(format!("{name}: tg128 alone: {}", unloaded.describe()));
        }
        if let Some(alone) = rows.iter().find(|r| r.test == "tg128") {
            for (row, stats) in loaded.iter().zip(&pool) {
                let (ours, theirs) = alone.loaded_share(row);
                print(format!(
                    "{name}: {} over tg128 in the same round: {} (llama.cpp {}); {}",
                    row.test,
                    opt(ours, 2),
                    opt(theirs, 2),
                    stats.describe()
                ));
            }
        }
        let figure = PrefetchFigure::new(name, crate::model::prefetch::Calls::Decode);
        print(format!("{name}: {}", figure.describe()));
        report.prefetch.push(figure);
        let single = rows.last().map(|r| r.tokens_per_s).unwrap_or(f64::NAN);
        let mut batched: Vec<BenchRow> = opts
            .parallel
            .iter()
            .map(|b| BenchRow::new(name, format!("tg{}@b{b}", opts.batch_tokens)))
            .collect();
        if !opts.parallel.is_empty() {
            for _ in 0..rounds {
                for (row, &b) in batched.iter_mut().zip(&opts.parallel) {
                    row.push(batch_decode_speed(&mut m, b, opts.batch_tokens)?);
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
                    batched.iter_mut().for_each(BenchRow::pad_reference);
                }
            }
        }
        let batch_rows = 2..=crate::model::prefetch::BATCH_ROWS;
        if opts.parallel.iter().any(|b| batch_rows.contains(b)) {
            let figure = PrefetchFigure::new(name, crate::model::prefetch::Calls::Batch);
            print(format!("{name}: {}", figure.describe()));
            report.prefetch.push(figure);
        }
        rows.extend(batched);
        rows.extend(loaded);
        if let Some(bw) = read_gbps {
            if let Some(bytes) = bytes_per_token(m.path()) {
                let bound = bw * 1e9 / bytes as f64;
                let frac = single / bound;
                print(format!(
                    "{name}: decoding reads {:.0} MB per token, so the streaming read bounds tg128 \
                     at {bound:.1} tok/s; ours reaches {:.0} % of it{}",
                    bytes as f64 / 1e6,
                    frac * 100.0,
                    rows.iter()
                        .find(|r| r.test == "tg128")
                        .and_then(|r| r.llama_cpp_tokens_per_s)
                        .map(|l| format!(", llama.cpp {:.0} %", l / bound * 100.0))
                        .unwrap_or_default()
                ));
                report.bounds.push(DecodeBound {
                    model: name.clone(),
                    bytes_per_token: bytes,
                    bound_tokens_per_s: bound,
                    tg128_fraction: frac,
                    llama_cpp_tg128_fraction: rows
                        .iter()
                        .find(|r| r.test == "tg128")
                        .and_then(|r| r.llama_cpp_tokens_per_s)
                        .map(|l| l / bound),
                });
            }
        }
        if opts.memory {
            let file = std::fs::metadata(m.path()).map(|md| md.len()).ok();
            let peak = generate_peak_rss(name, opts.threads, opts.device)?;
            print(format!(
                "{name}: peak RSS of `generate`: {:.0} MB, the file {} MB{}",
                peak as f64 / 1e6,
                opt(file.map(|f| f as f64 / 1e6), 0),
                file.map(|f| format!(", so {:+.0} MB beyond it", (peak as f64 - f as f64) / 1e6))
                    .unwrap_or_default()
            ));
            report.memory.push(MemoryFigure {
                model: name.clone(),
                file_bytes: file,
                generate_peak_rss_bytes: peak,
            });
        }
        if opts.serve_clients > 0 {
            let n = opts.serve_clients;
            let base = serve_load::start_ours(&m, name, n)?;
            // One round each: the servers are started once.
            let mut row = BenchRow::new(name, format!("serve@c{n}"));
            row.push(serve_load::load(&base, n, opts.batch_tokens)?);
            if let Some(ls) = &opts.llama_server {
                let server = serve_load::start_llama_server(ls, m.path(), opts.threads, n, 512)?;
                row.push_reference(serve_load::load(&server.base, n, opts.batch_tokens)?);
            }
            rows.push(row);
        }
        for r in &rows {
            print(format!(
                "{:<24} {:>15} {:>12.1} {:>12} {:>7} {:>11}",
                r.model,
                r.test,
                r.tokens_per_s,
                opt(r.llama_cpp_tokens_per_s, 1),
                opt(r.ratio(), 2),
                r.ratio_range()
                    .map(|(lo, hi)| format!("{lo:.2}-{hi:.2}"))
                    .unwrap_or_else(|| "-".into())
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
    if opts.stream_read {
        let bw = stream_read_gbps(opts.threads);
        print(format!(
            "streaming read at the end: {bw:.1} GB/s (at the start {})",
            opt(report.stream_read_gbps.first().copied(), 1)
        ));
        report.stream_read_gbps.push(bw);
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

/// The machine's streaming read speed in GB/s: `threads` threads each summing their share of
/// a 512 MiB buffer, the best of five passes.
pub fn stream_read_gbps(threads: usize) -> f64 {
    const BYTES: usize = 512 << 20;
    let words: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let threads = threads.max(1);
    let share = words.len().div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = words
                .chunks(share)
                .map(|part| {
                    s.spawn(move || {
                        // Eight lanes, so the adds vectorise and never wait on each other.
                        let mut acc = [0u64; 8];
                        for c in part.chunks_exact(8) {
                            for (a, w) in acc.iter_mut().zip(c) {
                                *a = a.wrapping_add(*w);
                            }
                        }
                        acc.iter().fold(0u64, |x, y| x.wrapping_add(*y))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        best = best.max(BYTES as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Bytes of weights a decoding step reads from a GGUF file: every tensor, except the token
/// embeddings when a separate `output.weight` does the output (one embedding row is read
/// per token). `None` for a file that is not GGUF.
pub fn bytes_per_token(path: &Path) -> Option<u64> {
    let f = crate::model::gguf::GgufFile::open(path).ok()?;
    let infos = &f.content().tensor_infos;
    let untied = infos.contains_key("output.weight");
    Some(
        infos
            .iter()
            .filter(|(name, _)| !(untied && name.as_str() == "token_embd.weight"))
            .map(|(_, i)| {
                (i.shape.elem_count() / i.ggml_dtype.block_size() * i.ggml_dtype.type_size()) as u64
            })
            .sum(),
    )
}

/// Peak resident memory, in bytes, of `llm-judge generate` on `model` (32 tokens of a short
/// prompt) in a child process of this binary, as the child reports it (`peak_rss_bytes` of
/// `generate --json`: its own `VmHWM`, which a fork's copy of this process's memory does not
/// inflate, as it does the `ru_maxrss` of a child), on `device` where given.
pub fn generate_peak_rss(
    model: &str,
    threads: usize,
    device: Option<crate::model::DeviceChoice>,
) -> Result<u64> {
    let exe = std::env::current_exe()
        .map_err(|e| crate::error::Error::invalid("bench --memory: this binary's path", e))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["--threads", &threads.to_string()]);
    if let Some(d) = device {
        cmd.args(["--device", &d.to_string()]);
    }
    let out = cmd
        .args(["generate", "--model", model])
        .args([
            "--prompt",
            "Name three uses of a paperclip.",
            "--max-tokens",
            "32",
        ])
        .arg("--json")
        .output()
        .map_err(|e| crate::error::Error::io(&exe, e))?;
    let failed = |why: String| {
        crate::error::Error::config(
            "bench --memory",
            format!("`llm-judge generate --model {model}`: {why}"),
        )
    };
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| failed(format!("unreadable JSON: {e}")))?;
    v["peak_rss_bytes"]
        .as_u64()
        .ok_or_else(|| failed("no `peak_rss_bytes` in its JSON (not Linux?)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> BenchOptions {
        BenchOptions {
            models: vec!["smollm2-135m-instruct".into(), "gemma3-270m".into()],
            reps: 3,
            threads: 2,
            llama_bench: None,
            llama_batched_bench: None,
            llama_server: None,
            parallel: vec![1, 8],
            batch_tokens: 64,
            judge_answers: 0,
            busy: false,
            busy_nice: false,
            stream_read: false,
            memory: false,
            serve_clients: 0,
            serve_abuse: false,
            grid: None,
            grid_limit: None,
            grid_max_tokens: None,
            device: None,
        }
    }

    #[test]
    fn options_are_checked_before_anything_is_measured() {
        assert!(options().validate().is_ok());
        let fails = |o: BenchOptions, needle: &str| {
            let e = o.validate().expect_err(needle).to_string();
            assert!(e.contains(needle), "{e}");
        };
        fails(
            BenchOptions {
                reps: 0,
                ..options()
            },
            "--reps: must be at least 1",
        );
        fails(
            BenchOptions {
                batch_tokens: 0,
                ..options()
            },
            "--batch-tokens: must be at least 1",
        );
        fails(
            BenchOptions {
                parallel: vec![1, 0],
                ..options()
            },
            "--parallel: must be at least 1",
        );
        fails(
            BenchOptions {
                models: Vec::new(),
                ..options()
            },
            "no model to measure",
        );
        // The last model's mistake is found before the first is loaded.
        let mut o = options();
        o.models.push("no-such-model".into());
        fails(o, "no-such-model");
        let mut o = options();
        o.models.push("/nowhere/model.gguf".into());
        fails(o, "/nowhere/model.gguf");
        // A checkpoint folder is a model; a bare binary name is found on the PATH later.
        let mut o = options();
        o.models.push(env!("CARGO_MANIFEST_DIR").to_string());
        o.llama_bench = Some("llama-bench".into());
        assert!(o.validate().is_ok());
        fails(
            BenchOptions {
                llama_bench: Some("/nowhere/llama-bench".into()),
                ..options()
            },
            "--llama-bench: /nowhere/llama-bench: no such file",
        );
        fails(
            BenchOptions {
                grid: Some("/nowhere/experiment.toml".into()),
                ..options()
            },
            "/nowhere/experiment.toml",
        );
    }

    #[test]
    fn a_round_without_a_reference_figure_keeps_later_rounds_paired() {
        let mut alone = BenchRow::new("m", "tg128");
        let mut loaded = BenchRow::new("m", "tg128+busy");
        // Round 1: both sides; round 2: llama.cpp gave no figure; round 3: both.
        for (ours, theirs, ours_l, theirs_l) in [
            (100.0, Some(50.0), 90.0, Some(40.0)),
            (80.0, None, 40.0, None),
            (120.0, Some(40.0), 60.0, Some(30.0)),
        ] {
            alone.push(ours);
            loaded.push(ours_l);
            if let Some(t) = theirs {
                alone.push_reference(t);
            }
            if let Some(t) = theirs_l {
                loaded.push_reference(t);
            }
            alone.pad_reference();
            loaded.pad_reference();
        }
        assert_eq!(alone.round_ratios(), vec![2.0, 3.0]);
        assert_eq!(alone.ratio(), Some(2.5));
        assert_eq!(alone.ratio_range(), Some((2.0, 3.0)));
        assert_eq!(alone.tokens_per_s, 100.0);
        assert_eq!(alone.llama_cpp_tokens_per_s, Some(45.0));
        let (ours, theirs) = alone.loaded_share(&loaded);
        // Ours: 0.9, 0.5, 0.5; llama.cpp: 0.8 and 0.75 (round 2 left out).
        assert_eq!(ours, Some(0.5));
        assert_eq!(theirs, Some(0.775));
    }

    #[test]
    fn medians_of_odd_even_and_empty_lists() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
