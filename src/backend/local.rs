//! The local candle backend.

use super::Backend;
use crate::engine::Generation;
use crate::error::{Error, Result};
use crate::model::{KvCache, Message, Model};
use crate::sampling::SamplingParams;

/// A [`Model`] running in this process.
///
/// Token-probability queries keep the KV cache of the last prompt: a query whose tokens
/// extend the previous one (the next criterion of an expected-score verdict) only runs the
/// new tokens.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    model: Model,
    name: String,
    prefix: Option<(Vec<u32>, KvCache, Vec<f32>)>,
}

impl LocalBackend {
    /// Wraps a loaded model.
    pub fn new(model: Model) -> Self {
        let name = model.source().to_string();
        Self {
            model,
            name,
            prefix: None,
        }
    }

    /// Log-probabilities of the next token after `ids`, reusing the cached prefix.
    fn logprobs_after(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if let Some((cached, cache, logprobs)) = &mut self.prefix {
            if ids == cached.as_slice() {
                return Ok(logprobs.clone());
            }
            if ids.len() > cached.len() && ids.starts_with(cached) {
                let logits =
                    self.model
                        .transformer()
                        .forward(&ids[cached.len()..], cache, false)?;
                let lp: Vec<f32> =
                    candle_nn::ops::log_softmax(&logits.squeeze(0)?, 0)?.to_vec1()?;
                *cached = ids.to_vec();
                *logprobs = lp.clone();
                return Ok(lp);
            }
        }
        if ids.is_empty() || ids.len() >= self.model.context_length() {
            return Err(Error::ContextOverflow {
                prompt: ids.len(),
                context: self.model.context_length(),
            });
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
