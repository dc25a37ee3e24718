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
use crate::model::{Input, KvCache, Model};
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
                    Ok(Err(seq)) => on_done(i, seq.finish(self.tokenizer(), None))?,
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
                match a.seq.step(self.tokenizer(), l, None) {
                    Ok(Some(t)) => {
                        a.next = t;
                        still.push(a);
                    }
                    Ok(None) => {
                        a.seq.decode_s = a.started.elapsed().as_secs_f64();
                        on_done(a.index, a.seq.finish(self.tokenizer(), None))?;
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
        let mut seq = Sequence::new(
            self.tokenizer(),
            self.context_length(),
            &r.prompt_ids,
            &r.params,
            0,
        )?;
        let t0 = Instant::now();
        let (cache, logits) = self.prefill(&r.prompt_ids)?;
        seq.prompt_s = t0.elapsed().as_secs_f64();
        let started = Instant::now();
        Ok(match seq.step(self.tokenizer(), &logits, None)? {
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

    /// [`Model::generate_batch`] over inputs: each is prepared as [`Model::generate`]
    /// prepares it (chat template or raw text, the fallback's stop string) and the replies
    /// are generated together. An input that cannot be prepared reports its error alone.
    pub fn generate_inputs_batch(
        &mut self,
        requests: &[(Input, SamplingParams)],
        max_batch: usize,
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        let mut prepared = Vec::with_capacity(requests.len());
        let mut batch = Vec::with_capacity(requests.len());
        let mut origin = Vec::with_capacity(requests.len());
        for (i, (input, params)) in requests.iter().enumerate() {
            match self.prepare(input) {
                Ok(p) => {
                    let mut params = params.clone();
                    params.stop.extend(p.stops.iter().cloned());
                    batch.push(BatchRequest {
                        prompt_ids: p.ids.clone(),
                        params,
                    });
                    prepared.push(p);
                    origin.push(i);
                }
                Err(e) => on_done(i, Err(e))?,
            }
        }
        self.generate_batch(&batch, max_batch, &mut |i, r| {
            on_done(
                origin[i],
                r.map(|mut g| {
                    g.prompt = prepared[i].text.clone();
                    g.template = prepared[i].kind;
                    g
                }),
            )
        })
    }
}
