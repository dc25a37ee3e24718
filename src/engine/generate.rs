//! Single-sequence generation on a [`Model`].

use super::constrain::{Constrained, Grammar};
use crate::error::Result;
use crate::model::{Input, KvCache, Model, TemplateKind, Tokenizer};
use crate::sampling::{Sampler, SamplingParams};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence or end-of-turn token.
    Stop,
    /// A stop string appeared; the text ends before it.
    StopString,
    /// `max_new_tokens` (or the context window) was reached.
    Length,
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FinishReason::Stop => "stop",
            FinishReason::StopString => "stop_string",
            FinishReason::Length => "length",
        })
    }
}

/// Wall-clock figures of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Seconds spent on the prompt (prefill).
    pub prompt_s: f64,
    /// Seconds spent decoding new tokens.
    pub decode_s: f64,
    /// Prompt tokens per second.
    pub prompt_tok_per_s: f64,
    /// Generated tokens per second (after the first).
    pub decode_tok_per_s: f64,
}

/// The result of one generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated text, without the end token or stop string.
    pub text: String,
    /// The prompt exactly as the model saw it (after the chat template).
    pub prompt: String,
    /// Number of prompt tokens (BOS included).
    pub prompt_tokens: usize,
    /// Number of generated tokens (end token included).
    pub completion_tokens: usize,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Log-probability of each generated token under the model's raw distribution.
    pub logprobs: Vec<f32>,
    /// Per generated token, the most likely alternatives `(id, logprob)` when asked for
    /// ([`GenerateOptions::top_logprobs`]); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    /// Timing.
    pub timing: Timing,
    /// Which prompt format was used.
    pub template: TemplateKind,
}

/// Extra outputs of a generation.
#[derive(Default)]
pub struct GenerateOptions<'a> {
    /// How many alternatives to record per generated token (0 = none).
    pub top_logprobs: usize,
    /// Called with each new piece of text as soon as it is final (streaming). Text that could
    /// still turn out to be the start of a stop string is held back until it cannot.
    pub on_text: Option<&'a mut dyn FnMut(&str)>,
}

/// The `k` most likely ids of a logits vector, with their log-probabilities.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 || logits.is_empty() {
        return Vec::new();
    }
    let log_z = crate::sampling::log_normaliser(logits);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    idx.select_nth_unstable_by(k - 1, |&a, &b| {
        logits[b as usize]
            .partial_cmp(&logits[a as usize])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx.sort_by(|&a, &b| {
        logits[b as usize]
            .partial_cmp(&logits[a as usize])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    idx.into_iter()
        .map(|i| (i, (logits[i as usize] as f64 - log_z) as f32))
        .collect()
}

impl Model {
    /// Generates the reply to `input`: a chat rendered with the model's template (with the
    /// plain fallback, `"\nUser:"` is added to the stop strings), or raw text continued as
    /// it is.
    pub fn generate(&mut self, input: &Input, params: &SamplingParams) -> Result<Generation> {
        let p = self.prepare(input)?;
        let mut params = params.clone();
        params.stop.extend(p.stops);
        let mut g = self.generate_ids(&p.ids, &params)?;
        g.prompt = p.text;
        g.template = p.kind;
        Ok(g)
    }

    /// Generates from prompt token ids.
    pub fn generate_ids(
        &mut self,
        prompt_ids: &[u32],
        params: &SamplingParams,
    ) -> Result<Generation> {
        self.generate_ids_with(prompt_ids, params, GenerateOptions::default())
    }

    /// Runs `ids` through the model on a fresh cache (the prompt must fit the context) and
    /// returns the cache with the last position's logits. Single, batched and server
    /// generation all start here.
    pub(crate) fn prefill(&mut self, ids: &[u32]) -> Result<(KvCache, Vec<f32>)> {
        self.check_fits(ids.len())?;
        let mut cache = self.transformer().new_cache();
        let logits = self.transformer().forward(ids, &mut cache, false)?;
        Ok((cache, logits.squeeze(0)?.to_vec1()?))
    }

    /// Generates from prompt token ids, with top log-probabilities and/or streaming.
    pub fn generate_ids_with(
        &mut self,
        prompt_ids: &[u32],
        params: &SamplingParams,
        mut opts: GenerateOptions<'_>,
    ) -> Result<Generation> {
        let mut seq = Sequence::new(
            self.tokenizer(),
            self.context_length(),
            prompt_ids,
            params,
            opts.top_logprobs,
        )?;
        let t0 = Instant::now();
        let (mut cache, mut logits) = self.prefill(prompt_ids)?;
        seq.prompt_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        loop {
            let on_text = opts
                .on_text
                .as_mut()
                .map(|f| &mut **f as &mut dyn FnMut(&str));
            let Some(token) = seq.step(self.tokenizer(), &logits, on_text)? else {
                break;
            };
            let next = self.transformer().forward(&[token], &mut cache, false)?;
            logits = next.squeeze(0)?.to_vec1()?;
        }
        seq.decode_s = t1.elapsed().as_secs_f64();
        let on_text = opts
            .on_text
            .as_mut()
            .map(|f| &mut **f as &mut dyn FnMut(&str));
        seq.finish(self.tokenizer(), on_text)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One sequence being generated: its sampler, the tokens so far and the stop conditions.
/// Single and batched generation share it, so both stop and decode text identically.
pub(crate) struct Sequence {
    sampler: Sampler,
    params: SamplingParams,
    stop_ids: Vec<u32>,
    longest_stop: usize,
    max_new: usize,
    top_k_logprobs: usize,
    history: Vec<u32>,
    /// The language the reply is held to, with the place reached in it.
    constraint: Option<Constrained>,
    prompt_tokens: usize,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    tops: Vec<Vec<(u32, f32)>>,
    text: String,
    checked: usize,
    emitted: usize,
    finish: FinishReason,
    /// Prefill seconds.
    pub(crate) prompt_s: f64,
    /// Prompt positions continued from a kept cache (not run, so not timed).
    pub(crate) prompt_reused: usize,
    /// Decode seconds.
    pub(crate) decode_s: f64,
}

impl Sequence {
    /// Prepares the sampler for a prompt of `prompt_ids` in a context of `context` tokens
    /// (the caller checks that the prompt fits).
    pub(crate) fn new(
        tokenizer: &Tokenizer,
        context: usize,
        prompt_ids: &[u32],
        params: &SamplingParams,
        top_logprobs: usize,
    ) -> Result<Self> {
        let mut max_new = params.max_new_tokens;
        let constraint = match &params.constraint {
            Some(c) => {
                let g = Grammar::get(c)?;
                // A verdict-only reply gets the tokens its longest form needs, so that a
                // tight cap cannot cut every ask of it short.
                max_new = max_new.max(g.tokens_needed().unwrap_or(0));
                Some(Constrained::new(g, tokenizer.token_table())?)
            }
            None => None,
        };
        Ok(Self {
            constraint,
            sampler: Sampler::new(params.clone())?,
            params: params.clone(),
            stop_ids: tokenizer.stop_ids().to_vec(),
            longest_stop: params.stop.iter().map(|s| s.len()).max().unwrap_or(0),
            max_new: max_new.min(context.saturating_sub(prompt_ids.len())),
            top_k_logprobs: top_logprobs,
            history: prompt_ids.to_vec(),
            prompt_tokens: prompt_ids.len(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            tops: Vec::new(),
            text: String::new(),
            checked: 0,
            emitted: 0,
            finish: FinishReason::Length,
            prompt_s: 0.0,
            prompt_reused: 0,
            decode_s: 0.0,
        })
    }

    /// The prompt and the tokens sampled so far.
    pub(crate) fn history(&self) -> &[u32] {
        &self.history
    }

    /// Samples the next token from `logits`; returns it when the sequence goes on (the
    /// caller runs it through the model), `None` when the sequence has ended.
    pub(crate) fn step(
        &mut self,
        tokenizer: &Tokenizer,
        logits: &[f32],
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Option<u32>> {
        if self.tokens.len() >= self.max_new {
            return Ok(None);
        }
        let s = match &mut self.constraint {
            None => self.sampler.sample(logits, &self.history)?,
            Some(c) => {
                let mut masked = logits.to_vec();
                let left = self.max_new - self.tokens.len();
                if !c.mask(&mut masked, &self.stop_ids, left) {
                    // Nothing the constraint allows can follow (a vocabulary without the
                    // bytes it needs): end here, as if out of tokens.
                    return Ok(None);
                }
                let mut s = self.sampler.sample(&masked, &self.history)?;
                // The recorded log-probability is the model's own, as unconstrained.
                s.logprob = (logits[s.token as usize] as f64
                    - crate::sampling::log_normaliser(logits)) as f32;
                c.advance(s.token);
                s
            }
        };
        if self.top_k_logprobs > 0 {
            self.tops.push(top_logprobs(logits, self.top_k_logprobs));
        }
        self.tokens.push(s.token);
        self.logprobs.push(s.logprob);
        self.history.push(s.token);
        if self.stop_ids.contains(&s.token) {
            self.finish = FinishReason::Stop;
            return Ok(None);
        }
        if self.longest_stop > 0 || on_text.is_some() {
            self.text = tokenizer.decode(&self.tokens, false)?;
            let text = &mut self.text;
            let from = floor_char_boundary(text, self.checked.saturating_sub(self.longest_stop));
            if let Some(cut) = self
                .params
                .stop
                .iter()
                .filter_map(|st| text[from..].find(st.as_str()).map(|i| from + i))
                .min()
            {
                text.truncate(cut);
                self.finish = FinishReason::StopString;
                return Ok(None);
            }
            self.checked = text.len();
            if let Some(cb) = on_text {
                // Hold back what could still start a stop string, and any incomplete
                // UTF-8 sequence (decoded as U+FFFD until its last byte arrives).
                let mut safe = floor_char_boundary(
                    text,
                    text.len()
                        .saturating_sub(self.longest_stop.saturating_sub(1)),
                );
                if text[..safe].ends_with('\u{FFFD}') {
                    safe = floor_char_boundary(text, safe - '\u{FFFD}'.len_utf8());
                }
                if safe > self.emitted {
                    cb(&text[self.emitted..safe]);
                    self.emitted = safe;
                }
            }
        }
        if self.tokens.len() >= self.max_new {
            return Ok(None);
        }
        Ok(Some(s.token))
    }

    /// The finished generation (text decoded once more unless a stop string cut it).
    pub(crate) fn finish(
        mut self,
        tokenizer: &Tokenizer,
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation> {
        if self.finish != FinishReason::StopString {
            let body = match self.finish {
                FinishReason::Stop => &self.tokens[..self.tokens.len() - 1],
                _ => &self.tokens[..],
            };
            self.text = tokenizer.decode(body, false)?;
        }
        if let Some(cb) = on_text {
            if self.text.len() > self.emitted && self.text.is_char_boundary(self.emitted) {
                cb(&self.text[self.emitted..]);
            }
        }
        let n = self.tokens.len();
        Ok(Generation {
            text: self.text,
            prompt: String::new(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: n,
            finish_reason: self.finish,
            tokens: self.tokens,
            logprobs: self.logprobs,
            top_logprobs: self.tops,
            timing: Timing {
                prompt_s: self.prompt_s,
                decode_s: self.decode_s,
                // The positions that ran: a prefix continued from a kept cache took no time.
                prompt_tok_per_s: (self.prompt_tokens - self.prompt_reused) as f64
                    / self.prompt_s.max(1e-9),
                decode_tok_per_s: n.saturating_sub(1) as f64 / self.decode_s.max(1e-9),
            },
            template: TemplateKind::Raw,
        })
    }
}
