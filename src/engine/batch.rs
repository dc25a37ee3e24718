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

use super::{Generation, PrefixScorer};

/// One sequence to generate in a batch: prompt token ids and its sampling values.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRequest {
    /// Prompt token ids (BOS included where the model wants one).
    pub prompt_ids: Vec<u32>,
    /// Sampling values, seed and stop conditions of this sequence.
    pub params: SamplingParams,
}

/// Receives each new piece of text of a sequence, with the sequence's tag.
pub type TextSink<'a, T> = dyn FnMut(&T, &str) + 'a;

/// A sequence decoding in a [`Batch`], tagged by its owner.
struct Active<T> {
    tag: T,
    seq: Sequence,
    cache: KvCache,
    next: u32,
    started: Instant,
}

/// Sequences decoding together, added and finished at any step: what
/// [`Model::generate_batch`] runs on a fixed list of requests, and what `llm-judge serve`
/// runs on requests as they arrive. Each sequence is tagged (`T`) by whoever added it.
pub struct Batch<T> {
    active: Vec<Active<T>>,
    /// When kept, the caches of finished sequences with the ids they hold.
    kept: Option<Vec<(Vec<u32>, KvCache)>>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self {
            active: Vec::new(),
            kept: None,
        }
    }
}

impl<T> Batch<T> {
    /// Sequences decoding.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// True with nothing decoding.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// The tags of the sequences decoding.
    pub fn tags(&self) -> impl Iterator<Item = &T> {
        self.active.iter().map(|a| &a.tag)
    }

    /// A batch that keeps each finished sequence's cache (see [`Batch::take_kept`]).
    fn keeping_caches() -> Self {
        Self {
            active: Vec::new(),
            kept: Some(Vec::new()),
        }
    }

    /// The caches of the sequences finished since the last call, each with the token ids
    /// it holds (the prompt and the reply, but for a token that ended it, which never ran).
    fn take_kept(&mut self) -> Vec<(Vec<u32>, KvCache)> {
        self.kept.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Drops the sequences whose tag `cancel` says are no longer wanted (e.g. the client went
    /// away); their caches are freed at once.
    pub fn cancel(&mut self, cancel: impl Fn(&T) -> bool) {
        self.active.retain(|a| !cancel(&a.tag));
    }
}

impl Model {
    /// Prefills `r` on its own (exactly as single generation does) and samples its first
    /// token; the sequence joins `batch`, or, when it already ended, its generation is
    /// returned. `top_logprobs` alternatives are kept per token; `on_text` receives the
    /// first piece of text.
    pub fn batch_add<T>(
        &mut self,
        batch: &mut Batch<T>,
        tag: T,
        r: &BatchRequest,
        top_logprobs: usize,
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Option<(T, Generation)>> {
        self.batch_add_from(batch, tag, r, top_logprobs, on_text, None)
    }

    /// [`Model::batch_add`], continuing the longest prefix of the prompt that `cached`
    /// holds (the same bits as a fresh prefill: a prompt split anywhere runs the same).
    fn batch_add_from<T>(
        &mut self,
        batch: &mut Batch<T>,
        tag: T,
        r: &BatchRequest,
        top_logprobs: usize,
        on_text: Option<&mut dyn FnMut(&str)>,
        cached: Option<&mut PrefixScorer>,
    ) -> Result<Option<(T, Generation)>> {
        let mut seq = Sequence::new(
            self.tokenizer(),
            self.context_length(),
            &r.prompt_ids,
            &r.params,
            top_logprobs,
        )?;
        let t0 = Instant::now();
        let (cache, logits, reused) = match cached {
            Some(scorer) => scorer.prefill(self, &r.prompt_ids)?,
            None => {
                let (cache, logits) = self.prefill(&r.prompt_ids)?;
                (cache, logits, 0)
            }
        };
        seq.prompt_reused = reused;
        seq.prompt_s = t0.elapsed().as_secs_f64();
        let started = Instant::now();
        match seq.step(self.tokenizer(), &logits, on_text)? {
            Some(next) => {
                batch.active.push(Active {
                    tag,
                    seq,
                    cache,
                    next,
                    started,
                });
                Ok(None)
            }
            None => Ok(Some((tag, seq.finish(self.tokenizer(), None)?))),
        }
    }

    /// One decoding step of every sequence in `batch`. `on_text(tag, piece)`, when given,
    /// receives the new text of each sequence as it becomes final (streaming). Returns the
    /// sequences that finished in this step (or failed), which leave the batch.
    pub fn batch_step<T>(
        &mut self,
        batch: &mut Batch<T>,
        mut on_text: Option<&mut TextSink<'_, T>>,
    ) -> Result<Vec<(T, Result<Generation>)>> {
        if batch.active.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<u32> = batch.active.iter().map(|a| a.next).collect();
        let logits = {
            let mut caches: Vec<&mut KvCache> =
                batch.active.iter_mut().map(|a| &mut a.cache).collect();
            self.transformer().forward_batch(&tokens, &mut caches)?
        };
        let logits: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut done = Vec::new();
        let mut still = Vec::with_capacity(batch.active.len());
        for (mut a, l) in std::mem::take(&mut batch.active).into_iter().zip(&logits) {
            let tag = &a.tag;
            let mut text = on_text.as_mut().map(|f| move |piece: &str| f(tag, piece));
            let step = a.seq.step(
                self.tokenizer(),
                l,
                text.as_mut().map(|t| t as &mut dyn FnMut(&str)),
            );
            match step {
                Ok(Some(t)) => {
                    a.next = t;
                    still.push(a);
                }
                Ok(None) => {
                    a.seq.decode_s = a.started.elapsed().as_secs_f64();
                    let held = batch
                        .kept
                        .is_some()
                        .then(|| a.seq.history()[..a.cache.len()].to_vec());
                    let tag = &a.tag;
                    let mut text = on_text.as_mut().map(|f| move |piece: &str| f(tag, piece));
                    let g = a.seq.finish(
                        self.tokenizer(),
                        text.as_mut().map(|t| t as &mut dyn FnMut(&str)),
                    );
                    done.push((a.tag, g));
                    if let (Some(kept), Some(ids)) = (batch.kept.as_mut(), held) {
                        kept.push((ids, a.cache));
                    }
                }
                Err(e) => done.push((a.tag, Err(e))),
            }
        }
        batch.active = still;
        Ok(done)
    }

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
        self.generate_batch_from(requests, max_batch, None, on_done)
    }

    /// [`Model::generate_batch`], each prompt continuing the longest prefix `cached` holds
    /// (a re-ask continues the transcript it extends), and each finished sequence's cache
    /// handed to `cached` for the next prompts. The replies are the same as without it.
    pub fn generate_batch_from(
        &mut self,
        requests: &[BatchRequest],
        max_batch: usize,
        mut cached: Option<&mut PrefixScorer>,
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        let max_batch = max_batch.max(1);
        let mut waiting: VecDeque<usize> = (0..requests.len()).collect();
        let mut batch: Batch<usize> = match cached {
            Some(_) => Batch::keeping_caches(),
            None => Batch::default(),
        };
        loop {
            while batch.len() < max_batch {
                let Some(i) = waiting.pop_front() else { break };
                let from = cached.as_deref_mut();
                match self.batch_add_from(&mut batch, i, &requests[i], 0, None, from) {
                    Ok(None) => {}
                    Ok(Some((i, g))) => on_done(i, Ok(g))?,
                    Err(e) => on_done(i, Err(e))?,
                }
            }
            if batch.is_empty() {
                return Ok(());
            }
            for (i, r) in self.batch_step(&mut batch, None)? {
                on_done(i, r)?;
            }
            if let Some(scorer) = cached.as_deref_mut() {
                for (ids, cache) in batch.take_kept() {
                    scorer.keep_generated(self, ids, cache);
                }
            }
        }
    }

    /// [`Model::generate_batch`] over inputs: each is prepared as [`Model::generate`]
    /// prepares it (chat template or raw text, the fallback's stop string) and the replies
    /// are generated together. An input that cannot be prepared reports its error alone.
    /// With `cached`, prompts continue the caches it holds ([`Model::generate_batch_from`]).
    pub fn generate_inputs_batch(
        &mut self,
        requests: &[(Input, SamplingParams)],
        max_batch: usize,
        cached: Option<&mut PrefixScorer>,
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
        self.generate_batch_from(&batch, max_batch, cached, &mut |i, r| {
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
