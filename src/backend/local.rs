//! The local candle backend.

use super::{Backend, LabelDistribution, LabelQuery};
use crate::engine::Generation;
use crate::error::{Error, Result};
use crate::model::{Input, KvCache, Model};
use crate::sampling::SamplingParams;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// Sequences decoded together by default.
pub const DEFAULT_MAX_BATCH: usize = 8;

/// Most memory the caches kept between rounds of label queries may hold.
const RETAINED_BYTES: usize = 256 << 20;

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
    /// The caches of the last batch of label queries, by prompt: the next round (the same
    /// answers' next criterion) continues each from its own answer.
    retained: Vec<(Vec<u32>, KvCache)>,
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
            retained: Vec::new(),
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
                let lp = log_softmax(&logits.squeeze(0)?)?;
                *cached = ids.to_vec();
                *logprobs = lp.clone();
                return Ok(lp);
            }
        }
        let (cache, logits) = self.model.prefill(ids)?;
        let lp = log_softmax(&Tensor::new(logits.as_slice(), &Device::Cpu)?)?;
        self.prefix = Some((ids.to_vec(), cache, lp.clone()));
        Ok(lp)
    }

    /// The distribution over a query's labels from the next-token log-probabilities.
    fn distribution(&mut self, q: &LabelQuery, lp: &[f32]) -> Result<LabelDistribution> {
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

/// Log-probabilities of one row of logits: one function for every path, so that a query
/// gives the same numbers however its prompt reached the model.
fn log_softmax(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, 0)?.to_vec1()?)
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
        self.distribution(q, &lp)
    }

    /// Several queries behind one shared prompt prefix (the judge's instructions, or an
    /// answer whose next criterion is asked): the prefix runs once, then the suffixes of up
    /// to `max_batch` queries run together in one forward pass, each on its own copy of the
    /// prefix's cache. Each distribution equals what [`Backend::label_distribution`] gives
    /// for the query alone from the same cache (the kernels compute each row the same way
    /// whatever the rows beside it; tested), so the batch size changes nothing. Falls back to
    /// one query at a time when the queries share too little or the kernels are not
    /// row-independent.
    fn label_distributions(
        &mut self,
        queries: &[LabelQuery],
        on_done: &mut dyn FnMut(usize, Result<LabelDistribution>) -> Result<()>,
    ) -> Result<()> {
        let one_by_one =
            |this: &mut Self,
             which: &[usize],
             on_done: &mut dyn FnMut(usize, Result<LabelDistribution>) -> Result<()>|
             -> Result<()> {
                for &i in which {
                    let r = this.label_distribution(&queries[i]);
                    on_done(i, r)?;
                }
                Ok(())
            };
        let all: Vec<usize> = (0..queries.len()).collect();
        // One query at a time (`max_batch` 1) takes the same path in groups of one, so that
        // a query's cache is split at the same place whatever the batch size.
        if queries.len() < 2 || !self.model.transformer().rows_independent() {
            return one_by_one(self, &all, on_done);
        }
        // Prompts; a query that cannot be prepared or does not fit fails alone.
        let mut ids: Vec<Option<Vec<u32>>> = Vec::with_capacity(queries.len());
        for (i, q) in queries.iter().enumerate() {
            let prepared = self
                .model
                .prepare_continuation(&q.input, &q.prefix)
                .and_then(|p| self.model.check_fits(p.ids.len()).map(|_| p.ids));
            match prepared {
                Ok(p) => ids.push(Some(p)),
                Err(e) => {
                    on_done(i, Err(e))?;
                    ids.push(None);
                }
            }
        }
        let ready: Vec<usize> = (0..queries.len()).filter(|&i| ids[i].is_some()).collect();
        let Some(&first) = ready.first() else {
            return Ok(());
        };
        let prompts: Vec<&[u32]> = ready.iter().filter_map(|&i| ids[i].as_deref()).collect();
        let shortest = prompts.iter().map(|p| p.len()).min().unwrap_or(0);
        let shared = prompts.iter().fold(shortest, |n, p| {
            n.min(
                p.iter()
                    .zip(prompts[0].iter())
                    .take_while(|(a, b)| a == b)
                    .count(),
            )
        });
        // At least one token of each query runs, and no suffix is longer than a prefill
        // chunk (so that it runs as it would alone).
        let keep = shared.min(shortest.saturating_sub(1));
        let chunk = self.model.transformer().prefill_chunk();
        let (batched, alone): (Vec<usize>, Vec<usize>) = ready
            .iter()
            .partition(|&&i| ids[i].as_ref().is_some_and(|p| p.len() - keep <= chunk));
        if ready.len() < 2 || keep < MIN_REUSE || batched.len() < 2 {
            self.retained.clear();
            return one_by_one(self, &ready, on_done);
        }
        // The shared prefix, cached (and reused from the previous query where it can be). A
        // model error here or in a group leaves those queries to the one-at-a-time path,
        // which reports each query's own error.
        let head = ids[first].as_deref().unwrap_or_default()[..keep].to_vec();
        let base = match self.logprobs_after(&head) {
            Ok(_) => match &self.prefix {
                Some((_, c, _)) => c.deep_copy().ok(),
                None => None,
            },
            Err(_) => None,
        };
        let Some(base) = base else {
            self.retained.clear();
            return one_by_one(self, &ready, on_done);
        };
        let retained = std::mem::take(&mut self.retained);
        for group in batched.chunks(self.max_batch) {
            // Each query continues the longest prompt it shares with the last round (its
            // answer, asked the previous criterion), else the shared prefix.
            let mut suffixes: Vec<&[u32]> = Vec::with_capacity(group.len());
            let mut starts = Vec::with_capacity(group.len());
            let mut sources = Vec::with_capacity(group.len());
            for &i in group {
                let p = ids[i].as_deref().unwrap_or_default();
                let best = retained
                    .iter()
                    .map(|(r, c)| {
                        let n = r.iter().zip(p).take_while(|(a, b)| a == b).count();
                        (n.min(p.len() - 1).min(c.len()), c)
                    })
                    .filter(|(n, _)| *n > keep && p.len() - n <= chunk)
                    .max_by_key(|(n, _)| *n);
                let (start, source) = best.unwrap_or((keep, &base));
                starts.push(start);
                sources.push(source);
                suffixes.push(&p[start..]);
            }
            let run = |this: &mut Self| -> Result<(Tensor, Vec<KvCache>)> {
                let mut caches = Vec::with_capacity(group.len());
                for (source, &start) in sources.iter().zip(&starts) {
                    let mut c = source.deep_copy()?;
                    c.truncate(start);
                    caches.push(c);
                }
                let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
                let logits = this
                    .model
                    .transformer()
                    .forward_segments(&suffixes, &mut refs)?;
                Ok((logits, caches))
            };
            let Ok((logits, caches)) = run(self) else {
                one_by_one(self, group, on_done)?;
                continue;
            };
            for (row, &i) in group.iter().enumerate() {
                let r = logits
                    .get(row)
                    .map_err(Into::into)
                    .and_then(|t| log_softmax(&t))
                    .and_then(|lp| self.distribution(&queries[i], &lp));
                on_done(i, r)?;
            }
            for (&i, cache) in group.iter().zip(caches) {
                // Bounded, so a large model does not keep gigabytes of caches between
                // rounds; the last round's caches are dropped as this one's are kept.
                let held: usize = self.retained.iter().map(|(_, c)| c.bytes()).sum();
                if held + cache.bytes() <= RETAINED_BYTES {
                    self.retained
                        .push((ids[i].clone().unwrap_or_default(), cache));
                }
            }
        }
        one_by_one(self, &alone, on_done)
    }
}
