//! The local candle backend.

use super::{Backend, LabelDistribution, LabelQuery};
use crate::engine::Generation;
use crate::error::{Error, Result};
use crate::model::{Input, KvCache, Model};
use crate::sampling::SamplingParams;
use std::collections::HashMap;

/// Sequences decoded together by default.
pub const DEFAULT_MAX_BATCH: usize = 8;

/// Shortest shared prompt prefix worth keeping instead of starting a fresh cache.
const MIN_REUSE: usize = 8;

/// A [`Model`] running in this process.
///
/// Token-probability queries keep the KV cache of the last prompt: a query that shares a
/// prefix with the previous one (the judge's instructions, or the same answer with the next
/// criterion) only runs the tokens after it.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    model: Model,
    name: String,
    prefix: Option<(Vec<u32>, KvCache, Vec<f32>)>,
    max_batch: usize,
    /// Per label, every token id whose text is that label once trimmed (`3`, ` 3`).
    label_ids: HashMap<String, Vec<u32>>,
}

impl LocalBackend {
    /// Wraps a loaded model.
    pub fn new(model: Model) -> Self {
        let name = model.source().to_string();
        Self {
            model,
            name,
            prefix: None,
            max_batch: DEFAULT_MAX_BATCH,
            label_ids: HashMap::new(),
        }
    }

    /// Sets how many sequences [`Backend::generate_batch`] decodes together (1 = one at a
    /// time).
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Log-probabilities of the next token after `ids`, reusing the cached prompt: only the
    /// tokens after the longest prefix shared with the previous query run through the model.
    /// Judge prompts share their system prompt, rubric and question across answers, and an
    /// answer's criteria share everything but the last line, so most tokens are reused.
    fn logprobs_after(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.model.check_fits(ids.len())?;
        if let Some((cached, cache, logprobs)) = &mut self.prefix {
            if ids == cached.as_slice() {
                return Ok(logprobs.clone());
            }
            let shared = ids
                .iter()
                .zip(cached.iter())
                .take_while(|(a, b)| a == b)
                .count();
            // At least one token must run to produce logits.
            let keep = shared.min(ids.len() - 1);
            if keep >= MIN_REUSE {
                cache.truncate(keep);
                let logits = self
                    .model
                    .transformer()
                    .forward(&ids[keep..], cache, false)?;
                let lp: Vec<f32> =
                    candle_nn::ops::log_softmax(&logits.squeeze(0)?, 0)?.to_vec1()?;
                *cached = ids.to_vec();
                *logprobs = lp.clone();
                return Ok(lp);
            }
        }
        let (cache, logits) = self.model.prefill(ids)?;
        let lp = log_softmax(&logits);
        self.prefix = Some((ids.to_vec(), cache, lp.clone()));
        Ok(lp)
    }

    /// The token ids that spell `label` once trimmed, found once per label.
    fn ids_of(&mut self, label: &str) -> Result<Vec<u32>> {
        if let Some(ids) = self.label_ids.get(label) {
            return Ok(ids.clone());
        }
        let tok = self.model.tokenizer();
        let mut ids = Vec::new();
        for id in 0..tok.vocab_size() as u32 {
            // The raw token string contains the label wherever the decoded text does
            // (`3`, `Ġ3`, `▁3`); decoding only those keeps this fast on large vocabularies.
            let candidate = tok.id_to_token(id).is_some_and(|t| t.contains(label));
            if candidate && tok.decode(&[id], false)?.trim() == label {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(Error::Tokenizer(format!(
                "no token of {} spells the label `{label}`",
                self.name
            )));
        }
        self.label_ids.insert(label.to_string(), ids.clone());
        Ok(ids)
    }
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_z = max as f64
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&l| (l as f64 - log_z) as f32).collect()
}

impl Backend for LocalBackend {
    fn identity(&self) -> Result<String> {
        Ok(format!("local:{}", self.model.sha256()?))
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn generate(&mut self, input: &Input, params: &SamplingParams) -> Result<Generation> {
        self.model.generate(input, params)
    }

    fn generate_batch(
        &mut self,
        requests: &[(Input, SamplingParams)],
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        self.model
            .generate_inputs_batch(requests, self.max_batch, on_done)
    }

    fn label_distribution(&mut self, q: &LabelQuery) -> Result<LabelDistribution> {
        let ids = self.model.prepare_continuation(&q.input, &q.prefix)?.ids;
        let lp = self.logprobs_after(&ids)?;
        let mut raw = Vec::with_capacity(q.labels.len());
        for label in &q.labels {
            let p: f64 = self
                .ids_of(label)?
                .iter()
                .filter_map(|&i| lp.get(i as usize))
                .map(|&l| (l as f64).exp())
                .sum();
            raw.push(p);
        }
        LabelDistribution::from_raw(raw)
    }
}
