//! Before a run: what it will ask of each model, in calls and tokens, and at an endpoint's
//! `price` what it will cost (`run --dry-run`, [`Plan::estimate`]).
//!
//! Nothing is loaded, so tokens are estimated from characters, at 4 a token (English prose
//! under the usual BPE vocabularies), and every answer is taken at its cap: completion
//! tokens are an upper bound, prompt tokens a rough figure. A rerun into the same folder
//! reuses stored calls and costs less; the run's own `usage` records what it really read.

use super::config::{ModelSpec, Plan, PlannedModel};
use crate::backend::{Price, Usage};
use crate::judge::spec::Shows;

/// Characters per token assumed by the estimate.
pub const CHARS_PER_TOKEN: usize = 4;

/// What one stage is expected to ask of its model.
#[derive(Clone, Debug, PartialEq)]
pub struct StageEstimate {
    /// The stage, named as in the run's `usage`.
    pub stage: String,
    /// The model.
    pub model: String,
    /// Calls (a pairwise call counts its two orders).
    pub calls: u64,
    /// Prompt tokens, estimated.
    pub prompt_tokens: u64,
    /// Completion tokens at most.
    pub completion_tokens: u64,
    /// At the endpoint's price; null for a local model or without a price.
    pub cost: Option<f64>,
}

fn tokens(text: &str) -> u64 {
    text.chars().count().div_ceil(CHARS_PER_TOKEN) as u64
}

fn price_of(spec: &ModelSpec) -> Option<Price> {
    match spec {
        ModelSpec::Remote(e) => e.price,
        ModelSpec::Local(_) => None,
    }
}

impl Plan {
    /// Calls and tokens per stage: each model's answers, each judge mode, and the sanity
    /// check (with its position probe) where it runs.
    pub fn estimate(&self) -> Vec<StageEstimate> {
        let c = &self.config;
        let samples = c.samples as u64;
        let settings = self.settings.len() as u64;
        let system = c.system.as_deref().map_or(0, tokens);
        // A chat template's own tokens, roughly.
        const FRAME: u64 = 16;
        let prompts: u64 = self
            .prompts
            .iter()
            .map(|p| tokens(&p.prompt) + system + FRAME)
            .sum();
        let mut out = Vec::new();
        let stage = |name: String,
                     model: &str,
                     calls: u64,
                     prompt_tokens: u64,
                     completion: u64,
                     price: Option<Price>| {
            let cost = price.map(|p| {
                p.cost(Usage {
                    prompt_tokens,
                    completion_tokens: completion,
                })
            });
            StageEstimate {
                stage: name,
                model: model.to_string(),
                calls,
                prompt_tokens,
                completion_tokens: completion,
                cost,
            }
        };
        for m in &self.models {
            let PlannedModel { name, spec, .. } = m;
            let calls = settings * self.prompts.len() as u64 * samples;
            out.push(stage(
                format!("generate {name}"),
                name,
                calls,
                prompts * settings * samples,
                calls * c.max_tokens as u64,
                price_of(spec),
            ));
        }
        // A panel: each judge's stages, as its own plan estimates them.
        for (_, one) in &self.panel {
            out.extend(
                one.estimate()
                    .into_iter()
                    .filter(|s| !s.stage.starts_with("generate")),
            );
        }
        let (Some(j), Some(spec)) = (&c.judge, &self.judge) else {
            return out;
        };
        let price = price_of(spec);
        let cells = (self.models.len() * self.settings.len()) as u64;
        let n_prompts = self.prompts.len() as u64;
        let answer = c.max_tokens as u64;
        let pairs = self.compared_pairs() as u64;
        let refs: Vec<u64> = self
            .prompts
            .iter()
            .filter_map(|p| p.reference.as_deref().map(tokens))
            .collect();
        let ref_tokens: u64 = refs.iter().sum();
        let n_refs = refs.len() as u64;
        for &mode in &j.modes {
            let template = self.templates.get(&mode).map_or(0, |t| {
                tokens(&t.prompt) + t.system.as_deref().map_or(0, tokens)
            });
            // Probability modes read one position per score; text modes write a verdict, as
            // many times as each is asked (`repeats`).
            let written = if mode.spec().samples {
                j.max_tokens as u64
            } else {
                0
            };
            let asks = u64::from(j.repeats_of(mode));
            let per_prompt = prompts / n_prompts.max(1);
            let (calls, shown) = match mode.spec().shows {
                Shows::OneAnswer => (cells * n_prompts * samples * asks, 1),
                Shows::AllAnswers => (n_prompts * samples * asks, cells),
                Shows::TwoAnswers => (pairs * n_prompts * samples * 2 * asks, 2),
            };
            out.push(stage(
                format!("judge {mode}"),
                &j.model,
                calls,
                calls * (template + per_prompt + shown * answer),
                calls * written,
                price,
            ));
            if j.sanity_check && n_refs > 0 {
                // The reference and three bad answers of about its length per prompt; the
                // position probe shows the reference against itself.
                let (calls, read) = match mode.spec().shows {
                    Shows::OneAnswer => (
                        4 * n_refs,
                        4 * n_refs * (template + per_prompt) + 4 * ref_tokens,
                    ),
                    Shows::AllAnswers => (
                        2 * n_refs,
                        2 * n_refs * (template + per_prompt) + 8 * ref_tokens,
                    ),
                    Shows::TwoAnswers => (
                        8 * n_refs,
                        8 * n_refs * (template + per_prompt) + 16 * ref_tokens,
                    ),
                };
                out.push(stage(
                    format!("sanity {mode}"),
                    &j.model,
                    calls,
                    read,
                    calls * written,
                    price,
                ));
            }
        }
        out
    }

    /// The estimate as lines, with its total.
    pub fn estimate_lines(&self) -> Vec<String> {
        let e = self.estimate();
        let money = |c: Option<f64>| {
            c.map(|c| format!(", cost about {c:.4}"))
                .unwrap_or_default()
        };
        let mut v: Vec<String> = e
            .iter()
            .map(|s| {
                format!(
                    "estimate, {} ({}): {} calls, about {} prompt tokens, at most {} completion \
                     tokens{}",
                    s.stage,
                    s.model,
                    s.calls,
                    s.prompt_tokens,
                    s.completion_tokens,
                    money(s.cost)
                )
            })
            .collect();
        let costs: Vec<f64> = e.iter().filter_map(|s| s.cost).collect();
        let partial = if !costs.is_empty() && costs.len() < e.len() {
            " (priced stages only)"
        } else {
            ""
        };
        v.push(format!(
            "estimate, total: {} calls, about {} prompt tokens, at most {} completion \
             tokens{}{partial} ({CHARS_PER_TOKEN} characters a token, every answer at its \
             cap; a rerun reuses stored calls)",
            e.iter().map(|s| s.calls).sum::<u64>(),
            e.iter().map(|s| s.prompt_tokens).sum::<u64>(),
            e.iter().map(|s| s.completion_tokens).sum::<u64>(),
            money((!costs.is_empty()).then(|| costs.iter().sum()))
        ));
        v
    }
}
