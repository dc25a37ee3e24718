//! The `llm-judge` command line. Thin: `cli.rs` parses, one function here per command
//! prints; the library does the work.
//!
//! Exit codes: 0 when everything was computed; 3 when a run finished with failures that
//! running it again may fix (network, rate limits, server errors); 4 when it finished with
//! failures that need a change (configuration, a server without a needed feature); 1 for an
//! error that stopped the command.

mod cli;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command};
use llm_judge::experiment::{ExperimentConfig, Progress};
use llm_judge::model::{DeviceChoice, LoadOptions};
use llm_judge::records::{TOTAL, WIN_RATE};
use llm_judge::{Input, Model, ModelSource, PromptFormat, RunOutput};
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
        .filter(|r| r.criterion == TOTAL || r.criterion == WIN_RATE)
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
    for l in run.usage_lines() {
        println!("{l}");
    }
    println!("results written to {}", run.dir.display());
    if run.failures().is_empty() {
        return ExitCode::SUCCESS;
    }
    let transient = run.failures().iter().all(|f| f.transient);
    eprintln!(
        "finished with {} failure(s); {}",
        run.failures().len(),
        if transient {
            "run the same command again to retry them"
        } else {
            "running again will not fix all of them (see above)"
        }
    );
    ExitCode::from(if transient { 3 } else { 4 })
}

/// What every command may use: the global `--threads` (resolved) and `--device`.
struct Globals {
    threads: usize,
    device: Option<DeviceChoice>,
}

impl Globals {
    /// Loads a model onto `--device` (default `auto`).
    fn load(&self, name: &str) -> Result<Model> {
        let source: ModelSource = name.parse()?;
        self.load_source(&source)
    }

    fn load_source(&self, source: &ModelSource) -> Result<Model> {
        let opts = LoadOptions::on(self.device.unwrap_or_default())?;
        Model::load_with(source, &opts).with_context(|| format!("loading model `{source}`"))
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and the context around it, each cause once: the library's errors already name
/// their own cause (`path: No such file or directory`), so the chain stops at the first one.
fn describe(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(cause.to_string());
        if cause.downcast_ref::<llm_judge::Error>().is_some() {
            break;
        }
    }
    parts.join(": ")
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let g = Globals {
        threads: set_threads(cli.threads)?,
        device: cli.device,
    };
    match cli.command {
        Command::FetchModels(a) => fetch_models(a),
        Command::Generate(a) => generate(&g, a),
        Command::CheckDevice(a) => check_device(&g, a),
        Command::Tokenize(a) => tokenize(&g, a),
        Command::Run(a) => run(&g, a),
        Command::Duel(a) => duel(&g, a),
        Command::Judge(a) => judge(&g, a),
        Command::Bench(a) => bench(&g, a),
        Command::Report(a) => report(a),
        Command::Diff(a) => diff(a),
        Command::Panel(a) => panel(a),
        Command::Serve(a) => serve(&g, a),
        Command::Info(a) => info(a),
    }
}

/// Resolves `--threads` (default: the cores this process may use) and sets it for the
/// kernels, before any thread exists.
fn set_threads(asked: Option<usize>) -> Result<usize> {
    let threads = match asked {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // candle reads RAYON_NUM_THREADS on every CPU matmul and, unset, recounts the cores from
    // /proc/cpuinfo each time. Set it once here, before any thread exists.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() || asked.is_some() {
        // SAFETY: the process is still single-threaded: nothing has spawned a thread yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    if asked.is_some() {
        llm_judge::engine::set_threads(threads)?;
    }
    Ok(threads)
}

fn fetch_models(a: cli::FetchModelsArgs) -> Result<ExitCode> {
    let paths = llm_judge::model::bundled::fetch(a.only.as_deref(), &mut |l| eprintln!("{l}"))?;
    for p in paths {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(g: &Globals, args: cli::GenerateArgs) -> Result<ExitCode> {
    let params = args.params()?;
    let source: ModelSource = match &args.adapter {
        None => args.model.parse()?,
        Some(a) => ModelSource::adapted(args.model.parse()?, a.parse()?)?,
    };
    let mut model = g.load_source(&source)?.with_context_limit(args.context);
    let format = if args.raw {
        PromptFormat::Raw
    } else {
        PromptFormat::Chat
    };
    let input = Input::new(format, args.system.as_deref(), &args.prompt);
    let out = model.generate(&input, &params)?;
    let peak = llm_judge::bench::peak_rss_bytes();
    if args.json {
        let mut v = serde_json::to_value(&out)?;
        if let (Some(o), Some(p)) = (v.as_object_mut(), peak) {
            o.insert("peak_rss_bytes".into(), p.into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", out.text);
    if out.template == llm_judge::model::TemplateKind::PlainFallback {
        eprintln!(
            "note: {} has no chat template; the plain-text fallback format was used",
            args.model
        );
    }
    eprintln!(
        "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, finish: {}, device: {}{}]",
        out.prompt_tokens,
        out.timing.prompt_tok_per_s,
        out.completion_tokens,
        out.timing.decode_tok_per_s,
        out.finish_reason,
        llm_judge::model::device::describe(model.device()),
        peak.map(|b| format!(", peak memory {:.0} MB", b as f64 / 1e6))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn check_device(g: &Globals, a: cli::CheckDeviceArgs) -> Result<ExitCode> {
    let device = g.device.unwrap_or(DeviceChoice::Cuda(0)).open()?;
    let source: ModelSource = a.model.parse()?;
    let check = llm_judge::bench::device_check::check_device(&source, &device, a.tokens)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&check)?);
    } else {
        for line in check.describe() {
            println!("{line}");
        }
    }
    Ok(if check.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn tokenize(g: &Globals, a: cli::TokenizeArgs) -> Result<ExitCode> {
    let m = g.load(&a.model)?;
    let ids = m.tokenizer().encode(&a.text, a.add_bos)?;
    if a.json {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        for id in ids {
            println!("{id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run(g: &Globals, a: cli::RunArgs) -> Result<ExitCode> {
    let cfg = ExperimentConfig::load(&a.experiment)?.with_overrides(&a.overrides());
    let mut plan = cfg.plan()?;
    plan.device = g.device;
    if a.dry_run {
        print!("{}", plan.describe());
        println!("dry run: nothing was generated or downloaded");
        return Ok(ExitCode::SUCCESS);
    }
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from("results").join(&cfg.name));
    let run = llm_judge::results::run_plan(&plan, &out, &mut Bars::new())?;
    Ok(finish_run(&run))
}

fn duel(g: &Globals, a: cli::DuelArgs) -> Result<ExitCode> {
    let mut duel = llm_judge::results::duel::Duel::new(a.prompt)
        .a(a.a)
        .b(a.b)
        .judge(a.judge)
        .preset(&a.setting)?
        .max_tokens(a.max_tokens)
        .seed(a.seed);
    if let Some(d) = g.device {
        duel = duel.device(d);
    }
    let result = duel.run_with(&a.out, &mut Bars::new())?;
    println!("{result}");
    if result.failures == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "finished with {} failure(s); run the same command again to retry them (see {}/run.log)",
        result.failures,
        result.dir.display()
    );
    Ok(ExitCode::from(3))
}

fn judge(g: &Globals, a: cli::JudgeArgs) -> Result<ExitCode> {
    let prev = RunOutput::load(&a.results)?;
    let modes = a
        .modes
        .iter()
        .map(|m| m.parse())
        .collect::<llm_judge::Result<Vec<_>>>()?;
    let mut judge = llm_judge::results::rejudge_config(&prev, &a.model, &modes);
    if a.no_sanity {
        judge.sanity_check = false;
    }
    let run = prev.rejudge_on(judge, g.device, &a.out, &mut Bars::new())?;
    Ok(finish_run(&run))
}

fn bench(g: &Globals, a: cli::BenchArgs) -> Result<ExitCode> {
    let json = a.json.clone();
    let opts = a.into_options(g.threads, g.device);
    let report = llm_judge::bench::run(&opts, &mut |line| println!("{line}"))?;
    if let Some(path) = &json {
        let text = serde_json::to_vec_pretty(&report)?;
        llm_judge::store::write_atomic(path, &text)
            .with_context(|| format!("--json {}", path.display()))?;
        println!("written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn report(a: cli::ReportArgs) -> Result<ExitCode> {
    let run = RunOutput::load(&a.results)?;
    for png in run.save_charts()? {
        println!("{}", png.display());
    }
    println!("{}", run.report()?.path.display());
    Ok(ExitCode::SUCCESS)
}

fn diff(a: cli::DiffArgs) -> Result<ExitCode> {
    let (ra, rb) = (RunOutput::load(&a.a)?, RunOutput::load(&a.b)?);
    let d = ra.diff(&rb);
    print!("{d}");
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
        let html = out.join("diff.html");
        llm_judge::store::write_atomic(&html, d.to_html()?.as_bytes())?;
        llm_judge::table::save_table(&d.table()?, out, "diff")?;
        if !d.rows.is_empty() {
            d.forest().save_png(&out.join("diff.png"))?;
        }
        println!("{}", html.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn panel(a: cli::PanelArgs) -> Result<ExitCode> {
    let runs = a
        .results
        .iter()
        .map(RunOutput::load)
        .collect::<llm_judge::Result<Vec<_>>>()?;
    let others: Vec<&RunOutput> = runs[1..].iter().collect();
    let run = runs[0].panel_with_progress(&others, &a.out, &mut Bars::new())?;
    println!("{}", run.panel_table());
    println!("{}", run.panel_agreement_table());
    Ok(finish_run(&run))
}

fn serve(g: &Globals, a: cli::ServeArgs) -> Result<ExitCode> {
    let api_key = match &a.api_key_env {
        Some(var) => {
            let key = std::env::var(var)
                .with_context(|| format!("--api-key-env: variable {var} is not set"))?;
            if key.trim().is_empty() {
                // No client could ever match it: everyone would be locked out.
                anyhow::bail!("--api-key-env: variable {var} is empty");
            }
            Some(key)
        }
        None => None,
    };
    let m = g.load(&a.model)?;
    let opts = llm_judge::server::ServeOptions {
        host: a.host,
        port: a.port,
        api_key,
        model_name: a.model.clone(),
        max_body_bytes: a.max_body_bytes,
        max_tokens: a.max_tokens,
        max_connections: a.max_connections,
        read_timeout_s: a.read_timeout,
        max_batch: a.batch,
        allow_unauthenticated: a.allow_unauthenticated,
    };
    llm_judge::server::serve(m, opts, |addr| {
        use std::io::Write;
        println!("listening on http://{addr}/v1 (model {})", a.model);
        let _ = std::io::stdout().flush();
    })?;
    Ok(ExitCode::SUCCESS)
}

fn info(a: cli::InfoArgs) -> Result<ExitCode> {
    let source: ModelSource = a.model.parse()?;
    let info = &llm_judge::model::inspect(&source)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("file:           {}", info.path.display());
    if let Some(n) = &info.name {
        println!("name:           {n}");
    }
    println!("architecture:   {}", info.architecture);
    println!("quantization:   {}", info.quantization);
    println!("parameters:     {}", info.parameters);
    let context = info
        .context_length
        .map_or("unknown".into(), |c| c.to_string());
    println!("context length: {context}");
    println!("vocabulary:     {}", info.vocab_size);
    let template = if info.has_chat_template {
        "yes"
    } else {
        "no (plain-text fallback)"
    };
    println!("chat template:  {template}");
    println!("file size:      {} bytes", info.file_size);
    Ok(ExitCode::SUCCESS)
}
