//! The judge sanity check: does the judge score a known-good answer above deliberately bad
//! ones on the same prompt? Bad answers are made from the reference answers: another
//! prompt's reference (off topic), the first sixth of the words (truncated), and the words
//! shuffled (gibberish). A judge that prefers the good answer in fewer than 80 % of the
//! comparisons is flagged in the summary and the report.

use super::config::Plan;
use super::progress::Progress;
use super::runner::derive_seed;
use crate::error::Result;
use crate::judge::Judge;
use crate::model::fingerprint::sha256_str;
use crate::records::SanityRecord;
use crate::store::Store;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Pass rate below which a judge is flagged.
pub const PASS_THRESHOLD: f64 = 0.8;

/// The outcome of the sanity check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SanitySummary {
    /// `expected` (token probabilities) or `rubric` (parsed text).
    pub method: String,
    /// Comparisons made.
    pub comparisons: usize,
    /// Comparisons where the good answer scored strictly higher.
    pub passed: usize,
    /// `passed / comparisons`.
    pub pass_rate: f64,
    /// Mean total score of the good answers.
    pub mean_good: f64,
    /// Mean total score of the bad answers.
    pub mean_bad: f64,
    /// Pass rate per kind of bad answer.
    pub by_kind: Vec<(String, f64)>,
    /// True when the pass rate is below [`PASS_THRESHOLD`].
    pub flagged: bool,
}

impl SanitySummary {
    /// One sentence for logs and reports.
    pub fn describe(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, r)| format!("{k} {:.0}%", r * 100.0))
            .collect();
        format!(
            "judge sanity check ({}): the good answer scored higher in {}/{} comparisons ({:.0}%; {}), \
             mean total {:.2} good vs {:.2} bad{}",
            self.method,
            self.passed,
            self.comparisons,
            self.pass_rate * 100.0,
            kinds.join(", "),
            self.mean_good,
            self.mean_bad,
            if self.flagged {
                " -- FLAGGED: this judge barely tells good answers from bad ones; do not trust its scores"
            } else {
                ""
            }
        )
    }
}

fn bad_answers(refs: &[(&str, &str)], i: usize, seed: u64) -> Vec<(&'static str, String)> {
    let (_, good) = refs[i];
    let mut out = Vec::new();
    if refs.len() > 1 {
        out.push(("off_topic", refs[(i + 1) % refs.len()].1.to_string()));
    }
    let words: Vec<&str> = good.split_whitespace().collect();
    let keep = (words.len() / 6).max(3).min(words.len());
    out.push(("truncated", words[..keep].join(" ")));
    let mut shuffled = words.clone();
    shuffled.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    out.push(("gibberish", shuffled.join(" ")));
    out
}

/// Runs the check on the plan's prompts that have a reference answer.
pub fn run(
    plan: &Plan,
    store: &Store,
    judge: &mut Judge,
    progress: &mut dyn Progress,
) -> Result<Option<SanitySummary>> {
    let refs: Vec<(&str, &str)> = plan
        .prompts
        .iter()
        .filter_map(|p| p.reference.as_deref().map(|r| (p.id.as_str(), r)))
        .collect();
    if refs.is_empty() {
        progress.note("judge sanity check skipped: no prompt has a reference answer");
        return Ok(None);
    }
    let prompt_of: HashMap<&str, &str> = plan
        .prompts
        .iter()
        .map(|p| (p.id.as_str(), p.prompt.as_str()))
        .collect();
    let stored: HashMap<String, SanityRecord> = store
        .load::<SanityRecord>("sanity")?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let judge_id = judge.identity()?;
    let template = judge.template(crate::judge::Mode::Rubric).fingerprint();
    let mut good_cache: HashMap<String, Option<f64>> = HashMap::new();
    let mut method = String::new();
    let mut records = Vec::new();
    let total = refs.len() * if refs.len() > 1 { 3 } else { 2 };
    progress.start("judge sanity check", total);
    for (i, (pid, good)) in refs.iter().enumerate() {
        let question = prompt_of[pid];
        for (kind, bad) in bad_answers(&refs, i, derive_seed(plan.config.seed, &["sanity", pid])) {
            let key = sha256_str(
                &serde_json::json!({
                    "judge": judge_id, "template": template, "prompt": question,
                    "good": good, "bad": bad, "criteria": judge.config().criteria,
                })
                .to_string(),
            )[..32]
                .to_string();
            if let Some(r) = stored.get(&key) {
                records.push(r.clone());
                progress.step("cached");
                continue;
            }
            let mut score = |text: &str| -> Result<Option<f64>> {
                if let Some(es) = judge.expected(question, text)? {
                    method = "expected".into();
                    return Ok(Some(es.iter().map(|e| e.expected).sum()));
                }
                method = "rubric".into();
                let v = judge.rubric(question, text, 0)?;
                Ok(v.value.iter().map(|s| s.map(f64::from)).sum())
            };
            let g = match good_cache.get(*pid) {
                Some(g) => *g,
                None => {
                    let g = score(good)?;
                    good_cache.insert(pid.to_string(), g);
                    g
                }
            };
            let b = score(&bad)?;
            let rec = SanityRecord {
                key,
                judge_id: judge_id.clone(),
                prompt_id: pid.to_string(),
                kind: kind.into(),
                good: g,
                bad: b,
                passed: matches!((g, b), (Some(g), Some(b)) if g > b),
            };
            store.append("sanity", std::slice::from_ref(&rec))?;
            records.push(rec);
            progress.step(&format!("{pid} {kind}"));
        }
    }
    progress.finish();
    if method.is_empty() {
        method = "cached".into();
    }
    let n = records.len();
    let passed = records.iter().filter(|r| r.passed).count();
    let mean = |f: &dyn Fn(&SanityRecord) -> Option<f64>| {
        let v: Vec<f64> = records.iter().filter_map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let mut by_kind = Vec::new();
    for kind in ["off_topic", "truncated", "gibberish"] {
        let k: Vec<&SanityRecord> = records.iter().filter(|r| r.kind == kind).collect();
        if !k.is_empty() {
            let rate = k.iter().filter(|r| r.passed).count() as f64 / k.len() as f64;
            by_kind.push((kind.to_string(), rate));
        }
    }
    let pass_rate = passed as f64 / n.max(1) as f64;
    Ok(Some(SanitySummary {
        method,
        comparisons: n,
        passed,
        pass_rate,
        mean_good: mean(&|r| r.good),
        mean_bad: mean(&|r| r.bad),
        by_kind,
        flagged: pass_rate < PASS_THRESHOLD,
    }))
}
