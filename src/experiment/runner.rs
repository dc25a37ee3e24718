//! Runs a [`Plan`]: checks the models, generates the grid, runs each judge mode and the
//! sanity check, and stores every finished record at once. It schedules, reuses and stores;
//! what a judge call asks and how its reply is read lives in [`crate::judge`].

use super::config::{ModelSpec, Plan, PlannedModel};
use super::judging::{Failure, Judging};
use super::progress::{Logged, Progress};
use super::sanity::{self, SanitySummary};
use crate::backend::{Backend, LocalBackend, OpenAiBackend};
use crate::error::{Error, Result};
use crate::judge::{self, Judge};
use crate::keys::{derive_seed, key_of};
use crate::model::{Input, Model, ModelSource};
use crate::records::{JudgmentRecord, ResponseRecord};
use crate::sampling::SamplingParams;
use crate::store::Store;
use std::collections::HashMap;
use std::path::Path;

/// Everything a run produced, before it is written as tables.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The answers of the grid (stored earlier or now), in plan order.
    pub responses: Vec<ResponseRecord>,
    /// The judgments of this plan's judge calls, in plan order.
    pub judgments: Vec<JudgmentRecord>,
    /// The sanity check's judgments (good vs bad answers).
    pub sanity_rows: Vec<JudgmentRecord>,
    /// The sanity check's verdict per mode.
    pub sanity: Option<SanitySummary>,
    /// The judge's name and identity.
    pub judge: Option<(String, String)>,
    /// What failed; a rerun retries it.
    pub failures: Vec<Failure>,
    /// Warnings (self-preference, failures).
    pub warnings: Vec<String>,
    /// The device local models ran on (`cpu`, `cuda:0`), or `none (remote models only)`.
    pub device: String,
    /// What each stage read, wrote, took and cost.
    pub usage: Vec<crate::records::StageUsage>,
}

/// Loads models on first use, onto the run's device, and keeps them for the rest of the run.
struct Models {
    loaded: HashMap<String, Model>,
    device: candle_core::Device,
}

impl Models {
    fn get(&mut self, src: &ModelSource) -> Result<Model> {
        let k = src.to_string();
        if let Some(m) = self.loaded.get(&k) {
            return Ok(m.clone());
        }
        let opts = crate::model::LoadOptions {
            device: Some(self.device.clone()),
            ..Default::default()
        };
        let m = Model::load_with(src, &opts)?;
        self.loaded.insert(k, m.clone());
        Ok(m)
    }
}

fn model_id(spec: &ModelSpec) -> Result<String> {
    match spec {
        ModelSpec::Local(src) => Ok(format!("local:{}", crate::model::source_identity(src)?)),
        ModelSpec::Remote(e) => Ok(e.identity()),
    }
}

/// The run's device: the plan's (the CLI's `--device`), else the experiment's `device`, else
/// `auto`.
pub fn run_device(plan: &Plan) -> Result<candle_core::Device> {
    plan.device
        .or(plan.config.device)
        .unwrap_or_default()
        .open()
        .map_err(|e| Error::invalid("device", e))
}

fn backend_for(
    m: &ModelSpec,
    context: Option<usize>,
    models: &mut Models,
    batch: usize,
) -> Result<Box<dyn Backend>> {
    Ok(match m {
        ModelSpec::Local(src) => Box::new(
            LocalBackend::new(models.get(src)?.with_context_limit(context)).with_max_batch(batch),
        ),
        ModelSpec::Remote(e) => Box::new(OpenAiBackend::new(e.clone())?),
    })
}

/// Runs the plan into `dir`, resuming from what is already stored there. Progress goes to
/// `progress`, and in full to `<dir>/run.log`.
pub fn run(plan: &Plan, dir: &Path, progress: &mut dyn Progress) -> Result<Outcome> {
    let _lock = Store::open(dir)?.lock()?;
    run_locked(plan, dir, progress)
}

/// [`run`] for a caller that already holds the folder's lock (and keeps it while it writes
/// the tables).
pub(crate) fn run_locked(plan: &Plan, dir: &Path, progress: &mut dyn Progress) -> Result<Outcome> {
    let store = Store::open(dir)?;
    let mut progress = Logged::new(progress, &dir.join("run.log"));
    let progress: &mut dyn Progress = &mut progress;
    let any_local = plan
        .models
        .iter()
        .map(|m| &m.spec)
        .chain(plan.judge.as_ref())
        .any(|s| matches!(s, ModelSpec::Local(_)));
    // A run of remote models only needs no device.
    let device = if any_local {
        run_device(plan)?
    } else {
        candle_core::Device::Cpu
    };
    let mut models = Models {
        loaded: HashMap::new(),
        device: device.clone(),
    };
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let mut usage = Vec::new();

    check_models(plan, progress, &mut warnings)?;
    let responses = generate(
        plan,
        &store,
        &mut models,
        progress,
        &mut failures,
        &mut usage,
    )?;

    let mut outcome = Outcome {
        responses,
        judgments: Vec::new(),
        sanity_rows: Vec::new(),
        sanity: None,
        judge: None,
        failures: Vec::new(),
        warnings: Vec::new(),
        device: if any_local {
            crate::model::device::describe(&device)
        } else {
            "none (remote models only)".into()
        },
        usage: Vec::new(),
    };
    if let (Some(jc), Some(spec)) = (&plan.config.judge, &plan.judge) {
        if let Some(m) = plan.models.iter().find(|m| same_model(&m.spec, spec)) {
            let w = format!(
                "the judge {spec} is also the compared model `{}`: expect self-preference",
                m.name
            );
            progress.note(&format!("warning: {w}"));
            warnings.push(w);
        }
        let mut backend = backend_for(spec, None, &mut models, plan.config.batch)?;
        let judge = Judge::new(
            jc.clone(),
            match spec {
                ModelSpec::Local(_) => jc.model.clone(),
                ModelSpec::Remote(_) => backend.name(),
            },
            backend.identity()?,
            plan.templates.clone(),
            plan.config.seed,
        );
        outcome.judge = Some((judge.name.clone(), judge.id.clone()));
        let groups = judge::group_answers(&outcome.responses);
        let mut judging = Judging {
            judge: &judge,
            backend: backend.as_mut(),
            store: &store,
            progress,
            failures: &mut failures,
            usage: &mut usage,
        };
        for &mode in &jc.modes {
            let rows = judging.mode(mode, &groups, "judgments", &format!("judge {mode}"))?;
            outcome.judgments.extend(rows);
        }
        if jc.sanity_check {
            let (summary, rows) = sanity::run(plan, &mut judging)?;
            if let Some(s) = &summary {
                for line in s.describe() {
                    judging.progress.note(&line);
                }
                warnings.extend(s.warnings());
            }
            outcome.sanity = summary;
            outcome.sanity_rows = rows;
        }
    }
    report_failures(&failures, progress, &mut warnings);
    outcome.failures = failures;
    outcome.warnings = warnings;
    outcome.usage = usage;
    Ok(outcome)
}

fn same_model(a: &ModelSpec, b: &ModelSpec) -> bool {
    match (a, b) {
        (ModelSpec::Local(x), ModelSpec::Local(y)) => {
            x == y || matches!((x.local_path(), y.local_path()), (Some(p), Some(q)) if p == q)
        }
        (ModelSpec::Remote(x), ModelSpec::Remote(y)) => x.identity() == y.identity(),
        _ => false,
    }
}

/// Makes every local model file available (fetching bundled models, downloading hub files)
/// and reads its header, so that a missing or broken model fails before any generation; warns
/// of a context cap beyond what a model was trained for.
fn check_models(
    plan: &Plan,
    progress: &mut dyn Progress,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let mut sources: Vec<&ModelSource> = Vec::new();
    for m in &plan.models {
        if let ModelSpec::Local(s) = &m.spec {
            sources.push(s);
        }
    }
    if let Some(ModelSpec::Local(s)) = &plan.judge {
        sources.push(s);
    }
    sources.dedup();
    progress.start("check models", sources.len());
    let mut trained = HashMap::new();
    for s in sources {
        let cached = s.local_path().is_some();
        let info = crate::model::inspect(s).map_err(|e| match e {
            e @ (Error::Fetch(_) | Error::Hub { .. }) => e,
            e => Error::invalid(format!("model `{s}`"), e),
        })?;
        trained.insert(s.to_string(), info.context_length);
        progress.step(&s.to_string(), cached);
    }
    progress.finish();
    for m in &plan.models {
        let (Some(asked), Some(Some(n))) = (m.context, trained.get(&m.spec.to_string())) else {
            continue;
        };
        if asked > *n as usize {
            let w = format!(
                "model `{}`: context {asked} is beyond the {n} tokens it was trained for; \
                 what it writes past {n} tokens is unreliable",
                m.name
            );
            progress.note(&format!("warning: {w}"));
            warnings.push(w);
        }
    }
    Ok(())
}

/// One answer still to generate.
struct Task {
    slot: usize,
    rec: ResponseRecord,
    input: Input,
    params: SamplingParams,
}

fn complete(rec: &mut ResponseRecord, result: Result<crate::engine::Generation>) {
    match result {
        Ok(g) => {
            rec.text = Some(g.text);
            rec.error = None;
            rec.prompt_tokens = g.prompt_tokens as u64;
            rec.completion_tokens = g.completion_tokens as u64;
            rec.finish_reason = g.finish_reason.into();
            rec.prompt_s = g.timing.prompt_s;
            rec.decode_s = g.timing.decode_s;
            rec.prompt_tok_per_s = g.timing.prompt_tok_per_s;
            rec.decode_tok_per_s = g.timing.decode_tok_per_s;
        }
        Err(e) => rec.error = Some(e.to_string()),
    }
}

/// The record of one answer of the grid, before generation.
fn response_record(
    plan: &Plan,
    m: &PlannedModel,
    mid: &str,
    setting: &str,
    params: &SamplingParams,
    prompt: &crate::prompts::Prompt,
    sample: u32,
) -> ResponseRecord {
    let c = &plan.config;
    let key = key_of(&serde_json::json!({
        "model": mid, "params": params, "system": c.system, "prompt": prompt.prompt,
        "format": m.prompt_format, "context": m.context,
    }));
    ResponseRecord {
        key,
        model: m.name.clone(),
        model_source: m.spec.to_string(),
        model_id: mid.to_string(),
        prompt_format: m.prompt_format,
        context: m.context.map(|c| c as u64),
        setting: setting.to_string(),
        temperature: params.temperature,
        top_p: params.top_p,
        min_p: params.min_p,
        top_k: params.top_k as u64,
        repetition_penalty: params.repetition_penalty,
        seed: params.seed,
        max_tokens: params.max_new_tokens as u64,
        prompt_id: prompt.id.clone(),
        category: prompt.category.clone(),
        sample,
        prompt: prompt.prompt.clone(),
        text: None,
        error: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        finish_reason: crate::records::Finish::Error,
        prompt_s: 0.0,
        decode_s: 0.0,
        prompt_tok_per_s: 0.0,
        decode_tok_per_s: 0.0,
    }
}

fn generate(
    plan: &Plan,
    store: &Store,
    models: &mut Models,
    progress: &mut dyn Progress,
    failures: &mut Vec<Failure>,
    usage: &mut Vec<crate::records::StageUsage>,
) -> Result<Vec<ResponseRecord>> {
    // Failed answers (error set) are tried again; finished ones are reused.
    let existing: HashMap<String, ResponseRecord> = store
        .load::<ResponseRecord>("responses")?
        .into_iter()
        .filter(|r| r.error.is_none())
        .map(|r| (r.key.clone(), r))
        .collect();
    let c = &plan.config;
    progress.start("generate", plan.grid_size());
    let mut out: Vec<Option<ResponseRecord>> = vec![None; plan.grid_size()];
    let mut slot = 0;
    for m in &plan.models {
        let mid = model_id(&m.spec)?;
        let mut tasks = Vec::new();
        for (sname, base_params) in &plan.settings {
            for p in &plan.prompts {
                for sample in 0..c.samples {
                    let seed = derive_seed(c.seed, &[&m.name, sname, &p.id, &sample.to_string()]);
                    let params = base_params.clone().with_seed(seed);
                    let rec = response_record(plan, m, &mid, sname, &params, p, sample);
                    slot += 1;
                    if let Some(r) = existing.get(&rec.key) {
                        out[slot - 1] = Some(r.clone());
                        progress.step(&format!("{} {sname} {}", m.name, p.id), true);
                        continue;
                    }
                    tasks.push(Task {
                        slot: slot - 1,
                        input: Input::new(m.prompt_format, c.system.as_deref(), &p.prompt),
                        rec,
                        params,
                    });
                }
            }
        }
        let reused =
            (plan.settings.len() * plan.prompts.len() * c.samples as usize - tasks.len()) as u64;
        let price = match &m.spec {
            ModelSpec::Remote(e) => e.price,
            ModelSpec::Local(_) => None,
        };
        if tasks.is_empty() {
            usage.push(crate::records::StageUsage {
                stage: format!("generate {}", m.name),
                model: m.name.clone(),
                calls: 0,
                reused,
                prompt_tokens: 0,
                completion_tokens: 0,
                seconds: 0.0,
                cost: price.map(|_| 0.0),
                earlier: None,
            });
            continue;
        }
        let mut backend = backend_for(&m.spec, m.context, models, c.batch)?;
        let (used_before, started, calls) = (
            backend.usage(),
            std::time::Instant::now(),
            tasks.len() as u64,
        );
        let requests: Vec<_> = tasks
            .iter()
            .map(|t| (t.input.clone(), t.params.clone()))
            .collect();
        let mut tasks: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        backend.generate_batch(&requests, &mut |i, r| {
            let Some(mut t) = tasks[i].take() else {
                return Ok(());
            };
            let transient = r.as_ref().err().is_some_and(Error::is_transient);
            complete(&mut t.rec, r);
            let what = format!("{} {} {}", m.name, t.rec.setting, t.rec.prompt_id);
            if let Some(e) = &t.rec.error {
                progress.note(&format!("answer failed ({what}): {e}"));
                failures.push(Failure {
                    stage: "generate".into(),
                    what: what.clone(),
                    error: e.clone(),
                    transient,
                });
            }
            store.append("responses", std::slice::from_ref(&t.rec))?;
            progress.step(&what, false);
            out[t.slot] = Some(t.rec);
            Ok(())
        })?;
        let used = backend.usage() - used_before;
        usage.push(crate::records::StageUsage {
            stage: format!("generate {}", m.name),
            model: m.name.clone(),
            calls,
            reused,
            prompt_tokens: used.prompt_tokens,
            completion_tokens: used.completion_tokens,
            seconds: started.elapsed().as_secs_f64(),
            cost: price.map(|p| p.cost(used)),
            earlier: None,
        });
    }
    progress.finish();
    Ok(out.into_iter().flatten().collect())
}

/// Sums up the failures on the console: per stage, how many and why, and whether a rerun
/// may fix them.
fn report_failures(failures: &[Failure], progress: &mut dyn Progress, warnings: &mut Vec<String>) {
    let mut by: Vec<(&str, Vec<&Failure>)> = Vec::new();
    for f in failures {
        match by.iter_mut().find(|(s, _)| *s == f.stage) {
            Some((_, v)) => v.push(f),
            None => by.push((&f.stage, vec![f])),
        }
    }
    for (stage, fs) in by {
        let transient = fs.iter().all(|f| f.transient);
        let w = format!(
            "{stage}: {} failed (first: {}: {}); {}",
            fs.len(),
            fs[0].what,
            fs[0].error,
            if transient {
                "run again to retry them"
            } else {
                "running again will not fix this; change the configuration or the server"
            }
        );
        progress.note(&w);
        warnings.push(w);
    }
}
