//! Single-sequence generation on a [`Model`].

use crate::error::{Error, Result};
use crate::model::{Message, Model, TemplateSource};
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
    pub template: TemplateSource,
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
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_z = max as f64
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
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
    /// Renders `messages` with the model's chat template and generates the assistant reply.
    /// With the plain fallback template, `"\nUser:"` is added to the stop strings.
    pub fn generate(
        &mut self,
        messages: &[Message],
        params: &SamplingParams,
    ) -> Result<Generation> {
        let prompt = self.template().render(messages, true)?;
        let mut params = params.clone();
        params.stop.extend(self.template().extra_stops());
        let kind = self.template().kind();
        self.generate_text(&prompt, &params, kind)
    }

    /// Continues raw `prompt` text with no chat template.
    pub fn complete(&mut self, prompt: &str, params: &SamplingParams) -> Result<Generation> {
        self.generate_text(prompt, params, TemplateSource::PlainFallback)
    }

    fn generate_text(
        &mut self,
        prompt: &str,
        params: &SamplingParams,
        template: TemplateSource,
    ) -> Result<Generation> {
        let ids = self.tokenizer().encode_prompt(prompt)?;
        let mut g = self.generate_ids(&ids, params)?;
        g.prompt = prompt.to_string();
        g.template = template;
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

    /// Generates from prompt token ids, with top log-probabilities and/or streaming.
    pub fn generate_ids_with(
        &mut self,
        prompt_ids: &[u32],
        params: &SamplingParams,
        mut opts: GenerateOptions<'_>,
    ) -> Result<Generation> {
        let mut sampler = Sampler::new(params.clone())?;
        let ctx = self.context_length();
        if prompt_ids.is_empty() || prompt_ids.len() >= ctx {
            return Err(Error::ContextOverflow {
                prompt: prompt_ids.len(),
                context: ctx,
            });
        }
        let max_new = params.max_new_tokens.min(ctx - prompt_ids.len());
        let stop_ids = self.tokenizer().stop_ids().to_vec();
        let longest_stop = params.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut history = prompt_ids.to_vec();
        let mut cache = self.transformer().new_cache();

        let t0 = Instant::now();
        let logits = self.transformer().forward(prompt_ids, &mut cache, false)?;
        let mut logits: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        let prompt_s = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut tokens = Vec::new();
        let mut logprobs = Vec::new();
        let mut tops = Vec::new();
        let mut emitted = 0usize;
        let mut finish = FinishReason::Length;
        let mut text = String::new();
        let mut checked = 0usize;
        for step in 0..max_new {
            let s = sampler.sample(&logits, &history)?;
            if opts.top_logprobs > 0 {
                tops.push(top_logprobs(&logits, opts.top_logprobs));
            }
            tokens.push(s.token);
            logprobs.push(s.logprob);
            history.push(s.token);
            if stop_ids.contains(&s.token) {
                finish = FinishReason::Stop;
                break;
            }
            if longest_stop > 0 || opts.on_text.is_some() {
                text = self.tokenizer().decode(&tokens, false)?;
                let from = floor_char_boundary(&text, checked.saturating_sub(longest_stop));
                if let Some(cut) = params
                    .stop
                    .iter()
                    .filter_map(|st| text[from..].find(st.as_str()).map(|i| from + i))
                    .min()
                {
                    text.truncate(cut);
                    finish = FinishReason::StopString;
                    break;
                }
                checked = text.len();
                if let Some(cb) = opts.on_text.as_mut() {
                    // Hold back what could still start a stop string, and any incomplete
                    // UTF-8 sequence (decoded as U+FFFD until its last byte arrives).
                    let mut safe = floor_char_boundary(
                        &text,
                        text.len().saturating_sub(longest_stop.saturating_sub(1)),
                    );
                    if text[..safe].ends_with('\u{FFFD}') {
                        safe = floor_char_boundary(&text, safe - '\u{FFFD}'.len_utf8());
                    }
                    if safe > emitted {
                        cb(&text[emitted..safe]);
                        emitted = safe;
                    }
                }
            }
            if step + 1 == max_new {
                break;
            }
            let next = self.transformer().forward(&[s.token], &mut cache, false)?;
            logits = next.squeeze(0)?.to_vec1()?;
        }
        let decode_s = t1.elapsed().as_secs_f64();
        if finish != FinishReason::StopString {
            let body = match finish {
                FinishReason::Stop => &tokens[..tokens.len() - 1],
                _ => &tokens[..],
            };
            text = self.tokenizer().decode(body, false)?;
        }
        if let Some(cb) = opts.on_text.as_mut() {
            if text.len() > emitted && text.is_char_boundary(emitted) {
                cb(&text[emitted..]);
            }
        }
        let n = tokens.len();
        Ok(Generation {
            text,
            prompt: String::new(),
            prompt_tokens: prompt_ids.len(),
            completion_tokens: n,
            finish_reason: finish,
            tokens,
            logprobs,
            top_logprobs: tops,
            timing: Timing {
                prompt_s,
                decode_s,
                prompt_tok_per_s: prompt_ids.len() as f64 / prompt_s.max(1e-9),
                decode_tok_per_s: n.saturating_sub(1) as f64 / decode_s.max(1e-9),
            },
            template: TemplateSource::PlainFallback,
        })
    }

    /// Log-probabilities of the next token after `prompt_ids`, over the whole vocabulary.
    /// One forward pass, no sampling: the basis of expected-score judging.
    pub fn next_token_logprobs(&mut self, prompt_ids: &[u32]) -> Result<Vec<f32>> {
        let ctx = self.context_length();
        if prompt_ids.is_empty() || prompt_ids.len() >= ctx {
            return Err(Error::ContextOverflow {
                prompt: prompt_ids.len(),
                context: ctx,
            });
        }
        let mut cache = self.transformer().new_cache();
        let logits = self.transformer().forward(prompt_ids, &mut cache, false)?;
        let l = candle_nn::ops::log_softmax(&logits.squeeze(0)?, 0)?;
        Ok(l.to_vec1()?)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
