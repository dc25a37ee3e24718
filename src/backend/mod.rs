//! Backends answer chat requests. Generation and judging both go through [`Backend`], so a
//! local candle model and a remote endpoint are interchangeable.

mod local;
pub mod openai;
pub mod openai_types;

pub use local::{LocalBackend, DEFAULT_MAX_BATCH};
pub use openai::{EndpointConfig, OpenAiBackend, RateLimiter};

use crate::engine::Generation;
use crate::error::Result;
use crate::model::Message;
use crate::sampling::SamplingParams;

/// Something that answers chat messages.
pub trait Backend: Send {
    /// A stable identity for record keys: what produced the text (e.g. a model file hash).
    fn identity(&self) -> Result<String>;

    /// A short human-readable name.
    fn name(&self) -> String;

    /// Generates the assistant's reply to `messages`.
    fn chat(&mut self, messages: &[Message], params: &SamplingParams) -> Result<Generation>;

    /// Generates replies to several conversations, calling `on_done(index, result)` as each
    /// finishes. Backends that can decode several sequences at once (the local one) override
    /// this; the default answers them one by one. Each reply is the same as from
    /// [`Backend::chat`].
    fn chat_batch(
        &mut self,
        requests: &[(Vec<Message>, SamplingParams)],
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        for (i, (messages, params)) in requests.iter().enumerate() {
            let r = self.chat(messages, params);
            on_done(i, r)?;
        }
        Ok(())
    }

    /// The probability of each of `candidates` (single tokens) being the next token after the
    /// chat prompt followed by `assistant_prefix`, renormalised over the candidates, plus the
    /// probability mass the candidates held before renormalising. `None` when the backend
    /// cannot read token probabilities.
    fn next_token_distribution(
        &mut self,
        messages: &[Message],
        assistant_prefix: &str,
        candidates: &[String],
    ) -> Result<Option<(Vec<f64>, f64)>>;
}

/// Renormalises candidate probabilities; `None` when they hold no mass at all.
pub(crate) fn renormalise(raw: Vec<f64>) -> Option<(Vec<f64>, f64)> {
    let mass: f64 = raw.iter().sum();
    (mass > 0.0).then(|| (raw.iter().map(|p| p / mass).collect(), mass))
}
