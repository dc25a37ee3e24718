//! Continuous batching: many sequences decode together, one model step for all active
//! sequences, each with its own prompt length, sampling values, seed and stop conditions. A
//! finished sequence frees its slot for the next waiting one.
//!
//! Each sequence is prefilled on its own (exactly as in single generation) and then joins the
//! shared decoding steps ([`crate::model::Transformer::forward_batch`]). Its sampler, token
//! history and stop checks are its own ([`Sequence`]), so a sequence's output does not depend
//! on what else is in the batch.

use super::generate::Sequence;
use crate::error::Result;
use crate::model::{KvCache, Message, Model, TemplateSource};
use crate::sampling::SamplingParams;
use std::collections::VecDeque;
use std::time::Instant;

use super::Generation;

/// One sequence to generate in a batch: prompt token ids and its sampling values.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRequest {
    /// Prompt token ids (BOS included where the model wants one).
    pub prompt_ids: Vec<u32>,
    /// Sampling values, seed and stop conditions of this sequence.
    pub params: SamplingParams,
}

struct Active {
    index: usize,
    seq: Sequence,
    cache: KvCache,
    next: u32,
    started: Instant,
}

impl Model {
    /// Generates every request with up to `max_batch` sequences decoding together, and calls
    /// `on_done(index, result)` as each one finishes (in finishing order). A request that
    /// fails (e.g. a prompt longer than the context) reports its error and the others go on;
    /// an error returned by `on_done` stops the batch.
    pub fn generate_batch(
        &mut self,
        requests: &[BatchRequest],
        max_batch: usize,
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        let max_batch = max_batch.max(1);
        let mut waiting: VecDeque<usize> = (0..requests.len()).collect();
        let mut active: Vec<Active> = Vec::new();
        loop {
            while active.len() < max_batch {
                let Some(i) = waiting.pop_front() else { break };
                match self.start(i, &requests[i]) {
                    Ok(Ok(a)) => active.push(a),
                    Ok(Err(seq)) => on_done(i, seq.finish(self, None))?,
                    Err(e) => on_done(i, Err(e))?,
                }
            }
            if active.is_empty() {
                return Ok(());
            }
            let tokens: Vec<u32> = active.iter().map(|a| a.next).collect();
            let logits = {
                let mut caches: Vec<&mut KvCache> =
                    active.iter_mut().map(|a| &mut a.cache).collect();
                self.transformer().forward_batch(&tokens, &mut caches)?
            };
            let logits: Vec<Vec<f32>> = logits.to_vec2()?;
            let mut still = Vec::with_capacity(active.len());
            for (mut a, l) in active.into_iter().zip(&logits) {
                match a.seq.step(self, l, None) {
                    Ok(Some(t)) => {
                        a.next = t;
                        still.push(a);
                    }
                    Ok(None) => {
                        a.seq.decode_s = a.started.elapsed().as_secs_f64();
                        on_done(a.index, a.seq.finish(self, None))?;
                    }
                    Err(e) => on_done(a.index, Err(e))?,
                }
            }
            active = still;
        }
    }

    /// Prefills one request and samples its first token: `Ok(Ok(active))` when it goes on,
    /// `Ok(Err(sequence))` when it already ended.
    fn start(
        &mut self,
        index: usize,
        r: &BatchRequest,
    ) -> Result<std::result::Result<Active, Sequence>> {
        let mut seq = Sequence::new(self, &r.prompt_ids, &r.params, 0)?;
        let mut cache = self.transformer().new_cache();
        let t0 = Instant::now();
        let logits = self
            .transformer()
            .forward(&r.prompt_ids, &mut cache, false)?;
        let logits: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        seq.prompt_s = t0.elapsed().as_secs_f64();
        let started = Instant::now();
        Ok(match seq.step(self, &logits, None)? {
            Some(next) => Ok(Active {
                index,
                seq,
                cache,
                next,
                started,
            }),
            None => Err(seq),
        })
    }

    /// Chat form of [`Model::generate_batch`]: renders each conversation with the model's
    /// chat template (adding the fallback template's stop string, as [`Model::generate`]
    /// does) and generates the assistant replies together.
    pub fn generate_chat_batch(
        &mut self,
        requests: &[(Vec<Message>, SamplingParams)],
        max_batch: usize,
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        let mut prompts = Vec::with_capacity(requests.len());
        let mut batch = Vec::with_capacity(requests.len());
        let mut origin = Vec::with_capacity(requests.len());
        let kind: TemplateSource = self.template().kind();
        for (i, (messages, params)) in requests.iter().enumerate() {
            let rendered = self.template().render(messages, true).and_then(|prompt| {
                let ids = self.tokenizer().encode_prompt(&prompt)?;
                Ok((prompt, ids))
            });
            match rendered {
                Ok((prompt, prompt_ids)) => {
                    let mut params = params.clone();
                    params.stop.extend(self.template().extra_stops());
                    batch.push(BatchRequest { prompt_ids, params });
                    prompts.push(prompt);
                    origin.push(i);
                }
                Err(e) => on_done(i, Err(e))?,
            }
        }
        self.generate_batch(&batch, max_batch, &mut |i, r| {
            on_done(
                origin[i],
                r.map(|mut g| {
                    g.prompt = prompts[i].clone();
                    g.template = kind;
                    g
                }),
            )
        })
    }
}
