//! The local candle backend.

use super::{Backend, LabelDistribution, LabelQuery};
use crate::engine::{Generation, PrefixScorer};
use crate::error::{Error, Result};
use crate::model::{Input, Model};
use crate::sampling::SamplingParams;
use std::collections::HashMap;

/// Sequences decoded together by default.
pub const DEFAULT_MAX_BATCH: usize = 8;

/// A [`Model`] running in this process.
///
/// Token-probability queries go through the engine's [`PrefixScorer`], which keeps the KV
/// caches of the last queries: a query that shares a prefix with earlier ones (the judge's
/// instructions, a question, an answer shown first, the same answer with the next
/// criterion) only runs the tokens after it.
#[derive(Debug)]
pub struct LocalBackend {
    model: Model,
    name: String,
    scorer: PrefixScorer,
    max_batch: usize,
    /// Per label, every token id whose text is that label once trimmed (`3`, ` 3`).
    label_ids: HashMap<String, Vec<u32>>,
    /// Tokens generated so far.
    generated: u64,
}

impl LocalBackend {
    /// Wraps a loaded model.
    pub fn new(model: Model) -> Self {
        let name = model.source().to_string();
        Self {
            model,
            name,
            scorer: PrefixScorer::new(),
            max_batch: DEFAULT_MAX_BATCH,
            label_ids: HashMap::new(),
            generated: 0,
        }
    }

    /// Prompt positions its probability queries and generations have run through the model
    /// so far (those served from a cached prefix not counted).
    pub fn prompt_positions_run(&self) -> usize {
        self.scorer.positions_run()
    }

    /// Sets the most memory the shared prefixes of one batch of probability queries may hold
    /// ([`crate::engine::NODE_BYTES`] by default).
    pub fn with_node_budget(mut self, bytes: usize) -> Self {
        self.scorer = std::mem::take(&mut self.scorer).with_node_budget(bytes);
        self
    }

    /// Sets how many sequences [`Backend::generate_batch`] decodes together (1 = one at a
    /// time).
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// The distribution over a query's labels from the next-token log-probabilities.
    fn distribution(&mut self, q: &LabelQuery, lp: &[f32]) -> Result<LabelDistribution> {
        for label in &q.labels {
            self.ids_of(label)?;
        }
        distribution(&self.label_ids, q, lp)
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

/// The distribution over a query's labels from the next-token log-probabilities, once every
/// label's token ids are known.
fn distribution(
    label_ids: &HashMap<String, Vec<u32>>,
    q: &LabelQuery,
    lp: &[f32],
) -> Result<LabelDistribution> {
    let mut raw = Vec::with_capacity(q.labels.len());
    for label in &q.labels {
        let ids = label_ids
            .get(label)
            .ok_or_else(|| Error::Tokenizer(format!("label `{label}` was not looked up")))?;
        let p: f64 = ids
            .iter()
            .filter_map(|&i| lp.get(i as usize))
            .map(|&l| (l as f64).exp())
            .sum();
        raw.push(p);
    }
    LabelDistribution::from_raw(raw)
}

impl Backend for LocalBackend {
    fn prompt_positions(&self) -> Option<usize> {
        Some(self.prompt_positions_run())
    }

    fn identity(&self) -> Result<String> {
        Ok(format!("local:{}", self.model.sha256()?))
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn usage(&self) -> super::Usage {
        super::Usage {
            prompt_tokens: self.prompt_positions_run() as u64,
            completion_tokens: self.generated,
        }
    }

    fn generate(&mut self, input: &Input, params: &SamplingParams) -> Result<Generation> {
        let g = self.model.generate(input, params)?;
        self.generated += g.completion_tokens as u64;
        Ok(g)
    }

    fn generate_batch(
        &mut self,
        requests: &[(Input, SamplingParams)],
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        let generated = &mut self.generated;
        self.model.generate_inputs_batch(
            requests,
            self.max_batch,
            Some(&mut self.scorer),
            &mut |i, r| {
                if let Ok(g) = &r {
                    *generated += g.completion_tokens as u64;
                }
                on_done(i, r)
            },
        )
    }

    fn label_distribution(&mut self, q: &LabelQuery) -> Result<LabelDistribution> {
        let ids = self.model.prepare_continuation(&q.input, &q.prefix)?.ids;
        let lp = self.scorer.logprobs(&mut self.model, &ids)?;
        self.distribution(q, &lp)
    }

    /// Several queries at once, through the engine's [`PrefixScorer`]: each prefix that
    /// several queries share (the judge's instructions, a question, an answer shown first)
    /// runs once, and up to `max_batch` continuations run together in one forward pass. Each
    /// distribution equals what [`Backend::label_distribution`] gives for the query alone
    /// (the kernels compute each row the same way whatever the rows beside it, and a prompt
    /// split anywhere gives the same bits; tested), so the batch changes nothing. A query
    /// that cannot be prepared or does not fit the context fails alone.
    fn label_distributions(
        &mut self,
        queries: &[LabelQuery],
        on_done: &mut dyn FnMut(usize, Result<LabelDistribution>) -> Result<()>,
    ) -> Result<()> {
        let mut ready: Vec<(usize, Vec<u32>)> = Vec::with_capacity(queries.len());
        for (i, q) in queries.iter().enumerate() {
            // The labels' token ids first, so that scoring needs only to read them.
            let labels: Result<()> = q.labels.iter().try_for_each(|l| self.ids_of(l).map(drop));
            let prepared = labels
                .and_then(|()| self.model.prepare_continuation(&q.input, &q.prefix))
                .and_then(|p| self.model.check_fits(p.ids.len()).map(|_| p.ids));
            match prepared {
                Ok(ids) => ready.push((i, ids)),
                Err(e) => on_done(i, Err(e))?,
            }
        }
        let prompts: Vec<&[u32]> = ready.iter().map(|(_, ids)| ids.as_slice()).collect();
        let label_ids = &self.label_ids;
        self.scorer
            .logprobs_many(&mut self.model, &prompts, self.max_batch, &mut |j, lp| {
                let i = ready[j].0;
                on_done(
                    i,
                    lp.and_then(|lp| distribution(label_ids, &queries[i], &lp)),
                )
            })
    }
}
