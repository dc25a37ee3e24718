//! A backend that answers from a script instead of a model, for unit tests of everything
//! around the model: each mode's rows for given verdicts, re-asks, resuming, the runner's
//! bookkeeping. It never stands in for inference in a run.

use super::{Backend, LabelDistribution, LabelQuery};
use crate::engine::{FinishReason, Generation, Timing};
use crate::error::Result;
use crate::model::{Input, TemplateKind};
use crate::sampling::SamplingParams;

type ReplyFn = dyn FnMut(&Input, &SamplingParams) -> Result<String> + Send;
type LabelsFn = dyn FnMut(&LabelQuery) -> Result<Vec<f64>> + Send;

/// Answers generations with `reply` and distribution queries with `labels` (raw label
/// probabilities, renormalised as a real backend does), and counts what it was asked.
pub(crate) struct Scripted {
    reply: Box<ReplyFn>,
    labels: Box<LabelsFn>,
    /// Generations asked for so far.
    pub(crate) generated: usize,
    /// Distribution queries asked so far.
    pub(crate) queried: usize,
}

impl Scripted {
    /// A backend whose replies and distributions come from the two functions.
    pub(crate) fn new(
        reply: impl FnMut(&Input, &SamplingParams) -> Result<String> + Send + 'static,
        labels: impl FnMut(&LabelQuery) -> Result<Vec<f64>> + Send + 'static,
    ) -> Self {
        Self {
            reply: Box::new(reply),
            labels: Box::new(labels),
            generated: 0,
            queried: 0,
        }
    }
}

/// The text of the last user message (or the whole raw prompt) of `input`.
pub(crate) fn user_text(input: &Input) -> &str {
    match input {
        Input::Chat(m) => m
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map_or("", |m| m.content.as_str()),
        Input::Raw(t) => t,
    }
}

impl Backend for Scripted {
    fn identity(&self) -> Result<String> {
        Ok("scripted".into())
    }

    fn name(&self) -> String {
        "scripted".into()
    }

    fn generate(&mut self, input: &Input, params: &SamplingParams) -> Result<Generation> {
        self.generated += 1;
        let text = (self.reply)(input, params)?;
        Ok(Generation {
            completion_tokens: text.split_whitespace().count(),
            text,
            prompt: String::new(),
            prompt_tokens: user_text(input).split_whitespace().count(),
            finish_reason: FinishReason::Stop,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            timing: Timing::default(),
            template: TemplateKind::Model,
        })
    }

    fn label_distribution(&mut self, query: &LabelQuery) -> Result<LabelDistribution> {
        self.queried += 1;
        LabelDistribution::from_raw((self.labels)(query)?)
    }
}
