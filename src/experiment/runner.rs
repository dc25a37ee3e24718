//! Runs a [`Plan`]: generation, judging, the judge sanity check, then tables.

use super::config::{ModelSpec, Plan};
use super::output::RunOutput;
use super::progress::Progress;
use super::sanity;
use crate::backend::{Backend, LocalBackend, OpenAiBackend};
use crate::error::Result;
use crate::judge::{Judge, Mode, Verdict};
use crate::model::fingerprint::{cached_sha256, sha256_str};
use crate::model::{Message, Model, ModelSource};
use crate::records::{JudgmentRecord, ResponseRecord};
use crate::store::Store;
use crate::table;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// A seed derived from the base seed and coordinates, independent of run order.
pub(crate) fn derive_seed(base: u64, parts: &[&str]) -> u64 {
    let h = sha256_str(&format!("{base}\0{}", parts.join("\0")));
    u64::from_str_radix(&h[..16], 16).unwrap_or(base)
}

fn key_of(v: &serde_json::Value) -> String {
    sha256_str(&v.to_string())[..32].to_string()
}

/// Loads models on first use and keeps them for the rest of the run.
#[derive(Default)]
pub(crate) struct Models {
    loaded: HashMap<String, Model>,
}

impl Models {
    pub(crate) fn get(&mut self, src: &ModelSource) -> Result<Model> {
        let k = src.to_string();
        if let Some(m) = self.loaded.get(&k) {
            return Ok(m.clone());
        }
        let m = Model::load(src)?;
        self.loaded.insert(k, m.clone());
        Ok(m)
    }
}

/// Runs the plan into `dir`, resuming from what is already stored there.
pub fn run(plan: &Plan, dir: &Path, progress: &mut dyn Progress) -> Result<RunOutput> {
    let store = Store::open(dir)?;
    let mut models = Models::default();
    let mut warnings = Vec::new();
    let responses = generate(plan, &store, &mut models, progress)?;
    let failed = responses.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        warnings.push(format!(
            "{failed} answers failed (see the `error` column); run again to retry them"
        ));
    }

    let mut judgments = Vec::new();
    let mut sanity_summary = None;
    if let (Some(jc), Some(spec)) = (&plan.config.judge, &plan.judge) {
        let same = |s: &ModelSpec| match (s, spec) {
            (ModelSpec::Local(a), ModelSpec::Local(b)) => a == b,
            (ModelSpec::Remote(a), ModelSpec::Remote(b)) => a.model == b.model,
            _ => false,
        };
        if plan.models.iter().any(|(_, s)| same(s)) {
            let w = format!(
                "warning: the judge {spec} is also one of the compared models; \
                 expect self-preference bias"
            );
            progress.note(&w);
            warnings.push(w);
        }
        let backend = backend_for(spec, &mut models, 1)?;
        let mut judge = Judge::new(backend, jc.clone())?;
        let (j, failed) = judge_all(plan, &store, &mut judge, &responses, progress)?;
        judgments = j;
        if failed > 0 {
            let w = format!("{failed} judge calls failed after retries; run again to retry them");
            progress.note(&w);
            warnings.push(w);
        }
        if jc.sanity_check {
            let s = sanity::run(plan, &store, &mut judge, progress)?;
            if let Some(s) = &s {
                progress.note(&s.describe());
                if s.flagged {
                    warnings.push(s.describe());
                }
            }
            sanity_summary = s;
        }
    }
    table::write_run(
        &store,
        plan,
        &responses,
        &judgments,
        sanity_summary.as_ref(),
        &warnings,
    )
}

fn model_id(spec: &ModelSpec) -> Result<String> {
    match spec {
        ModelSpec::Local(src) => cached_sha256(&src.resolve()?),
        ModelSpec::Remote(e) => Ok(format!("openai:{}:{}", e.base_urls[0], e.model)),
    }
}

fn backend_for(spec: &ModelSpec, models: &mut Models, batch: usize) -> Result<Box<dyn Backend>> {
    Ok(match spec {
        ModelSpec::Local(src) => {
            Box::new(LocalBackend::new(models.get(src)?).with_max_batch(batch))
        }
        ModelSpec::Remote(e) => Box::new(OpenAiBackend::new(e.clone())?),
    })
}

/// One answer still to generate.
struct Task {
    slot: usize,
    rec: ResponseRecord,
    messages: Vec<Message>,
    params: crate::sampling::SamplingParams,
}

fn complete(rec: &mut ResponseRecord, result: Result<crate::engine::Generation>) {
    match result {
        Ok(g) => {
            rec.text = Some(g.text);
            rec.prompt_tokens = g.prompt_tokens as u64;
            rec.completion_tokens = g.completion_tokens as u64;
            rec.finish_reason = g.finish_reason.to_string();
            rec.prompt_s = g.timing.prompt_s;
            rec.decode_s = g.timing.decode_s;
            rec.prompt_tok_per_s = g.timing.prompt_tok_per_s;
            rec.decode_tok_per_s = g.timing.decode_tok_per_s;
        }
        Err(e) => rec.error = Some(e.to_string()),
    }
}

fn generate(
    plan: &Plan,
    store: &Store,
    models: &mut Models,
    progress: &mut dyn Progress,
) -> Result<Vec<ResponseRecord>> {
    // Failed answers (error set) are tried again; finished ones are reused.
    let existing: HashMap<String, ResponseRecord> = store
        .load::<ResponseRecord>("responses")?
        .into_iter()
        .filter(|r| r.error.is_none())
        .map(|r| (r.key.clone(), r))
        .collect();
    let c = &plan.config;
    let total = plan.models.len() * plan.settings.len() * plan.prompts.len() * c.samples as usize;
    progress.start("generate", total);
    let mut out: Vec<Option<ResponseRecord>> = vec![None; total];
    let mut slot = 0;
    for (mname, src) in &plan.models {
        let mid = model_id(src)?;
        let mut tasks = Vec::new();
        for (sname, base_params) in &plan.settings {
            for p in &plan.prompts {
                for sample in 0..c.samples {
                    let seed = derive_seed(c.seed, &[mname, sname, &p.id, &sample.to_string()]);
                    let params = base_params.clone().with_seed(seed);
                    let key = key_of(&serde_json::json!({
                        "model": mid, "params": params, "system": c.system, "prompt": p.prompt,
                    }));
                    slot += 1;
                    if let Some(r) = existing.get(&key) {
                        out[slot - 1] = Some(r.clone());
                        progress.step("cached");
                        continue;
                    }
                    let mut messages = Vec::new();
                    if let Some(s) = &c.system {
                        messages.push(Message::system(s.clone()));
                    }
                    messages.push(Message::user(p.prompt.clone()));
                    let rec = ResponseRecord {
                        key,
                        model: mname.clone(),
                        model_source: src.to_string(),
                        model_id: mid.clone(),
                        setting: sname.clone(),
                        temperature: params.temperature,
                        top_p: params.top_p,
                        min_p: params.min_p,
                        top_k: params.top_k as u64,
                        repetition_penalty: params.repetition_penalty,
                        seed,
                        max_tokens: params.max_new_tokens as u64,
                        prompt_id: p.id.clone(),
                        category: p.category.clone(),
                        sample,
                        prompt: p.prompt.clone(),
                        text: None,
                        error: None,
                        prompt_tokens: 0,
                        completion_tokens: 0,
                        finish_reason: "error".into(),
                        prompt_s: 0.0,
                        decode_s: 0.0,
                        prompt_tok_per_s: 0.0,
                        decode_tok_per_s: 0.0,
                    };
                    tasks.push(Task {
                        slot: slot - 1,
                        rec,
                        messages,
                        params,
                    });
                }
            }
        }
        if tasks.is_empty() {
            continue;
        }
        let mut done = |t: Task, progress: &mut dyn Progress| -> Result<()> {
            if let Some(e) = &t.rec.error {
                progress.note(&format!(
                    "{mname}/{}/{}: {e}",
                    t.rec.setting, t.rec.prompt_id
                ));
            }
            store.append("responses", std::slice::from_ref(&t.rec))?;
            progress.step(&format!("{mname} {} {}", t.rec.setting, t.rec.prompt_id));
            out[t.slot] = Some(t.rec);
            Ok(())
        };
        match src {
            ModelSpec::Remote(e) if e.in_flight * e.base_urls.len() > 1 => {
                run_in_flight(e, tasks, &mut |t| done(t, progress))?;
            }
            _ => {
                let mut backend = backend_for(src, models, c.batch)?;
                let requests: Vec<_> = tasks
                    .iter()
                    .map(|t| (t.messages.clone(), t.params.clone()))
                    .collect();
                let mut tasks: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
                backend.chat_batch(&requests, &mut |i, r| {
                    let Some(mut t) = tasks[i].take() else {
                        return Ok(());
                    };
                    complete(&mut t.rec, r);
                    done(t, progress)
                })?;
            }
        }
    }
    progress.finish();
    Ok(out.into_iter().flatten().collect())
}

/// Runs tasks against an endpoint with `in_flight` requests per base URL at once; `done`
/// receives each finished task on this thread (which writes the store), in completion order.
fn run_in_flight(
    e: &crate::backend::EndpointConfig,
    tasks: Vec<Task>,
    done: &mut dyn FnMut(Task) -> Result<()>,
) -> Result<()> {
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(tasks));
    let limiter = crate::backend::RateLimiter::new(e.requests_per_s);
    let (tx, rx) = std::sync::mpsc::channel::<Task>();
    std::thread::scope(|scope| -> Result<()> {
        for url in &e.base_urls {
            for _ in 0..e.in_flight.max(1) {
                let mut cfg = e.clone();
                cfg.base_urls = vec![url.clone()];
                let mut backend = OpenAiBackend::new(cfg)?.with_limiter(limiter.clone());
                let (queue, tx) = (&queue, tx.clone());
                scope.spawn(move || loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some(mut t) = next else { break };
                    let r = backend.chat(&t.messages, &t.params);
                    complete(&mut t.rec, r);
                    if tx.send(t).is_err() {
                        break;
                    }
                });
            }
        }
        drop(tx);
        for t in rx {
            done(t)?;
        }
        Ok(())
    })
}

struct Ctx {
    judge_name: String,
    judge_id: String,
}

impl Ctx {
    /// One row per criterion plus a `total` row (null unless every criterion parsed).
    #[allow(clippy::too_many_arguments)]
    fn score_rows(
        &self,
        call: &str,
        mode: Mode,
        template: &str,
        r: &ResponseRecord,
        criteria: &[String],
        scores: &[Option<u32>],
        raw: &str,
        attempts: u32,
    ) -> Vec<JudgmentRecord> {
        let scores: Vec<Option<f64>> = scores.iter().map(|s| s.map(f64::from)).collect();
        let named = criteria
            .iter()
            .map(|c| c.as_str())
            .zip(scores.iter().copied());
        named
            .chain(std::iter::once(("total", total(&scores))))
            .map(|(c, s)| self.row(call, mode, template, r, c, s, raw, s.is_some(), attempts))
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        call: &str,
        mode: Mode,
        template: &str,
        r: &ResponseRecord,
        criterion: &str,
        score: Option<f64>,
        raw: &str,
        parse_ok: bool,
        attempts: u32,
    ) -> JudgmentRecord {
        JudgmentRecord {
            key: format!("{call}:{}:{criterion}", r.key),
            call: call.to_string(),
            judge: self.judge_name.clone(),
            judge_id: self.judge_id.clone(),
            mode: mode.to_string(),
            template: template.to_string(),
            response_key: r.key.clone(),
            other_key: None,
            model: r.model.clone(),
            setting: r.setting.clone(),
            other_model: None,
            other_setting: None,
            prompt_id: r.prompt_id.clone(),
            sample: r.sample,
            criterion: criterion.to_string(),
            score,
            expected_score: None,
            probs: None,
            position: None,
            order_seed: None,
            consistent: None,
            raw: raw.to_string(),
            parse_ok,
            attempts,
        }
    }
}

fn total(scores: &[Option<f64>]) -> Option<f64> {
    scores.iter().copied().sum::<Option<f64>>()
}

fn judge_all(
    plan: &Plan,
    store: &Store,
    judge: &mut Judge,
    responses: &[ResponseRecord],
    progress: &mut dyn Progress,
) -> Result<(Vec<JudgmentRecord>, usize)> {
    let stored: Vec<JudgmentRecord> = store.load("judgments")?;
    let mut rows_per_call: HashMap<String, usize> = HashMap::new();
    for r in &stored {
        *rows_per_call.entry(r.call.clone()).or_default() += 1;
    }
    let ctx = Ctx {
        judge_name: judge.name(),
        judge_id: judge.identity()?,
    };
    let cfg = judge.config().clone();
    let ncrit = cfg.criteria.len();
    let answered: Vec<&ResponseRecord> = responses.iter().filter(|r| r.text.is_some()).collect();
    let mut out: Vec<JudgmentRecord> = Vec::new();
    let mut calls: HashSet<String> = HashSet::new();
    // A failed judge call (after the backend's retries) is reported and skipped, not stored,
    // so the rest of the grid goes on and a rerun tries it again.
    let mut failed = 0usize;
    macro_rules! try_call {
        ($call:expr, $label:expr) => {
            match $call {
                Ok(v) => v,
                Err(err) => {
                    failed += 1;
                    progress.note(&format!("judge call failed ({}): {err}", $label));
                    progress.step("failed");
                    continue;
                }
            }
        };
    }
    let seed = plan.config.seed;
    for &mode in &cfg.modes {
        let template = judge.template(mode);
        let call_key = |keys: &[&str], extra: u64| {
            key_of(&serde_json::json!({
                "judge": ctx.judge_id, "template": template.fingerprint(), "mode": mode,
                "criteria": cfg.criteria, "scale": cfg.scale, "temperature": cfg.temperature,
                "max_tokens": cfg.max_tokens, "responses": keys, "extra": extra,
            }))
        };
        // Groups of answers per (prompt, sample) in plan order, for listwise and pairwise.
        let mut groups: Vec<((String, u32), Vec<&ResponseRecord>)> = Vec::new();
        for r in &answered {
            let k = (r.prompt_id.clone(), r.sample);
            match groups.iter_mut().find(|(g, _)| *g == k) {
                Some((_, v)) => v.push(r),
                None => groups.push((k, vec![r])),
            }
        }
        match mode {
            Mode::Rubric | Mode::Expected => {
                progress.start(&format!("judge {mode}"), answered.len());
                for r in &answered {
                    let call = call_key(&[&r.key], 0);
                    calls.insert(call.clone());
                    if rows_per_call.get(&call) == Some(&(ncrit + 1)) {
                        progress.step("cached");
                        continue;
                    }
                    let text = r.text.as_deref().unwrap_or("");
                    let mut rows = Vec::new();
                    if mode == Mode::Rubric {
                        let v = try_call!(
                            judge.rubric(&r.prompt, text, derive_seed(seed, &["rubric", &r.key])),
                            r.prompt_id
                        );
                        let raw = v.raw.join("\n---\n");
                        let attempts = v.raw.len() as u32;
                        rows = ctx.score_rows(
                            &call,
                            mode,
                            &template.name,
                            r,
                            &cfg.criteria,
                            &v.value,
                            &raw,
                            attempts,
                        );
                    } else {
                        let Some(es) = try_call!(judge.expected(&r.prompt, text), r.prompt_id)
                        else {
                            progress.note("the judge backend gives no token probabilities; expected mode skipped");
                            break;
                        };
                        for (c, e) in cfg.criteria.iter().zip(&es) {
                            let mut row = ctx.row(
                                &call,
                                mode,
                                &template.name,
                                r,
                                c,
                                Some(e.argmax as f64),
                                "",
                                true,
                                1,
                            );
                            row.expected_score = Some(e.expected);
                            row.probs = Some(e.probs.clone());
                            rows.push(row);
                        }
                        let mut row = ctx.row(
                            &call,
                            mode,
                            &template.name,
                            r,
                            "total",
                            Some(es.iter().map(|e| e.argmax as f64).sum()),
                            "",
                            true,
                            1,
                        );
                        row.expected_score = Some(es.iter().map(|e| e.expected).sum());
                        rows.push(row);
                    }
                    store.append("judgments", &rows)?;
                    progress.step(&format!("{} {} {}", r.model, r.setting, r.prompt_id));
                }
                progress.finish();
            }
            Mode::Listwise => {
                progress.start("judge listwise", groups.len());
                for ((pid, sample), answers) in &groups {
                    let order_seed = derive_seed(seed, &["listwise", pid, &sample.to_string()]);
                    let mut order: Vec<usize> = (0..answers.len()).collect();
                    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(order_seed));
                    let shown: Vec<&ResponseRecord> = order.iter().map(|&i| answers[i]).collect();
                    let keys: Vec<&str> = shown.iter().map(|r| r.key.as_str()).collect();
                    let call = call_key(&keys, order_seed);
                    calls.insert(call.clone());
                    if rows_per_call.get(&call) == Some(&(shown.len() * (ncrit + 1))) {
                        progress.step("cached");
                        continue;
                    }
                    let texts: Vec<&str> = shown
                        .iter()
                        .map(|r| r.text.as_deref().unwrap_or(""))
                        .collect();
                    let v = try_call!(
                        judge.listwise(
                            &shown[0].prompt,
                            &texts,
                            derive_seed(seed, &["listwise-judge", &call]),
                        ),
                        pid
                    );
                    let raw = v.raw.join("\n---\n");
                    let attempts = v.raw.len() as u32;
                    let mut rows = Vec::new();
                    for (pos, (r, scores)) in shown.iter().zip(&v.value).enumerate() {
                        for mut row in ctx.score_rows(
                            &call,
                            mode,
                            &template.name,
                            r,
                            &cfg.criteria,
                            scores,
                            &raw,
                            attempts,
                        ) {
                            row.position = Some(pos as u32 + 1);
                            row.order_seed = Some(order_seed);
                            rows.push(row);
                        }
                    }
                    store.append("judgments", &rows)?;
                    progress.step(pid);
                }
                progress.finish();
            }
            Mode::Pairwise => {
                let pairs: usize = groups
                    .iter()
                    .map(|(_, a)| a.len() * a.len().saturating_sub(1) / 2)
                    .sum();
                progress.start("judge pairwise", pairs);
                for ((pid, _), answers) in &groups {
                    for i in 0..answers.len() {
                        for j in i + 1..answers.len() {
                            let (a, b) = (answers[i], answers[j]);
                            let call = call_key(&[&a.key, &b.key], 0);
                            calls.insert(call.clone());
                            if rows_per_call.get(&call) == Some(&1) {
                                progress.step("cached");
                                continue;
                            }
                            let (ta, tb) = (
                                a.text.as_deref().unwrap_or(""),
                                b.text.as_deref().unwrap_or(""),
                            );
                            let s = derive_seed(seed, &["pairwise", &call]);
                            let (ab, ba) = try_call!(
                                judge.pairwise(&a.prompt, ta, tb, s).and_then(|ab| {
                                    judge.pairwise(&a.prompt, tb, ta, s + 1).map(|ba| (ab, ba))
                                }),
                                pid
                            );
                            // Score for answer a: from (a, b) A means a; from (b, a) B means a.
                            let first = ab.value.map(|v| match v {
                                Verdict::A => 1.0,
                                Verdict::B => 0.0,
                                Verdict::Tie => 0.5,
                            });
                            let second = ba.value.map(|v| match v {
                                Verdict::A => 0.0,
                                Verdict::B => 1.0,
                                Verdict::Tie => 0.5,
                            });
                            let (score, consistent) = match (first, second) {
                                (Some(x), Some(y)) if x == y => (Some(x), Some(true)),
                                (Some(_), Some(_)) => (Some(0.5), Some(false)),
                                _ => (None, None),
                            };
                            let raw = format!(
                                "[A={} B={}]\n{}\n[A={} B={}]\n{}",
                                a.model,
                                b.model,
                                ab.raw.join("\n---\n"),
                                b.model,
                                a.model,
                                ba.raw.join("\n---\n")
                            );
                            let mut row = ctx.row(
                                &call,
                                mode,
                                &template.name,
                                a,
                                "overall",
                                score,
                                &raw,
                                ab.parse_ok && ba.parse_ok,
                                (ab.raw.len() + ba.raw.len()) as u32,
                            );
                            row.other_key = Some(b.key.clone());
                            row.other_model = Some(b.model.clone());
                            row.other_setting = Some(b.setting.clone());
                            row.consistent = consistent;
                            store.append("judgments", std::slice::from_ref(&row))?;
                            progress.step(pid);
                        }
                    }
                }
                progress.finish();
            }
        }
    }
    // Everything judged for these responses, in a stable order, once per key.
    let all: Vec<JudgmentRecord> = store.load("judgments")?;
    let mut seen = HashSet::new();
    for r in all {
        if calls.contains(&r.call) && seen.insert(r.key.clone()) {
            out.push(r);
        }
    }
    Ok((out, failed))
}
