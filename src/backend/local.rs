//! The local candle backend.

use super::Backend;
use crate::engine::Generation;
use crate::error::{Error, Result};
use crate::model::{KvCache, Message, Model};
use crate::sampling::SamplingParams;

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
        }
    }

    /// Sets how many sequences [`Backend::chat_batch`] decodes together (1 = one at a time).
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Log-probabilities of the next token after `ids`, reusing the cached prompt: only the
    /// tokens after the longest prefix shared with the previous query run through the model.
    /// Judge prompts share their system prompt, rubric and question across answers, and an
    /// answer's criteria share everything but the last line, so most tokens are reused.
    fn logprobs_after(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() || ids.len() >= self.model.context_length() {
            return Err(Error::ContextOverflow {
                prompt: ids.len(),
                context: self.model.context_length(),
            });
        }
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
        let mut cache = self.model.transformer().new_cache();
        let logits = self.model.transformer().forward(ids, &mut cache, false)?;
        let lp: Vec<f32> = candle_nn::ops::log_softmax(&logits.squeeze(0)?, 0)?.to_vec1()?;
        self.prefix = Some((ids.to_vec(), cache, lp.clone()));
        Ok(lp)
    }

    /// The wrapped model.
    pub fn model(&mut self) -> &mut Model {
        &mut self.model
    }
}

impl Backend for LocalBackend {
    fn identity(&self) -> Result<String> {
        Ok(format!("local:{}", self.model.sha256()?))
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn chat(&mut self, messages: &[Message], params: &SamplingParams) -> Result<Generation> {
        self.model.generate(messages, params)
    }

    fn chat_batch(
        &mut self,
        requests: &[(Vec<Message>, SamplingParams)],
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        self.model
            .generate_chat_batch(requests, self.max_batch, on_done)
    }

    fn next_token_distribution(
        &mut self,
        messages: &[Message],
        assistant_prefix: &str,
        candidates: &[String],
    ) -> Result<Option<(Vec<f64>, f64)>> {
        let prompt = self.model.template().render(messages, true)? + assistant_prefix;
        let tok = self.model.tokenizer();
        let base = tok.encode_prompt(&prompt)?;
        let mut ids = Vec::with_capacity(candidates.len());
        for c in candidates {
            let with = tok.encode_prompt(&format!("{prompt}{c}"))?;
            if with.len() != base.len() + 1 || with[..base.len()] != base[..] {
                return Err(Error::Tokenizer(format!(
                    "score `{c}` is not a single token after the judge prompt prefix \
                     `{assistant_prefix}`; expected-score judging needs one token per score"
                )));
            }
            ids.push(with[base.len()]);
        }
        let lp = self.logprobs_after(&base)?;
        let raw: Vec<f64> = ids.iter().map(|&i| (lp[i as usize] as f64).exp()).collect();
        super::renormalise(raw).map(Some).ok_or_else(|| {
            Error::Tokenizer("the score tokens have zero probability after the judge prompt".into())
        })
    }
}
