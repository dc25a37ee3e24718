//! Backends answer requests. Generation and judging both go through [`Backend`], so a local
//! candle model and a remote endpoint are interchangeable.

mod local;
pub mod openai;
pub mod openai_types;
#[cfg(test)]
pub(crate) mod scripted;

pub use local::{LocalBackend, DEFAULT_MAX_BATCH};
pub use openai::{EndpointConfig, OpenAiBackend, Price, RateLimiter};

use crate::engine::Generation;
use crate::error::{Error, Result};
use crate::model::Input;
use crate::sampling::SamplingParams;

/// The judge's next-token distribution over a few labels (scores `1`..`4`, or `A`/`B`),
/// at the position after an assistant prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelDistribution {
    /// p(label), renormalised over the labels (sums to 1).
    pub probs: Vec<f64>,
    /// Probability mass the labels held before renormalising. Every single-token spelling of
    /// a label counts (`3`, ` 3`): local and remote backends measure the same thing.
    pub mass: f64,
    /// Labels the backend could not see: a remote endpoint returns only its top 20
    /// log-probabilities, and a label outside them reads as probability 0. Always empty
    /// for a local model, which sees the whole vocabulary.
    pub missing: Vec<usize>,
    /// The most probability a label missing from the list could hold: the smallest listed
    /// probability (0 when nothing is missing).
    pub missing_at_most: f64,
}

impl LabelDistribution {
    /// Renormalises raw label probabilities. A distribution with no mass on any label is an
    /// error for this one query ([`Error::NoLabelToken`]), not for the backend.
    pub fn from_raw(raw: Vec<f64>) -> Result<Self> {
        let mass: f64 = raw.iter().sum();
        if mass > 0.0 && mass.is_finite() {
            Ok(Self {
                probs: raw.iter().map(|p| p / mass).collect(),
                mass,
                missing: Vec::new(),
                missing_at_most: 0.0,
            })
        } else {
            Err(Error::NoLabelToken(
                "none of the labels is among the judge's likely next tokens".into(),
            ))
        }
    }

    /// The index of the most likely label (the first on ties).
    pub fn argmax(&self) -> usize {
        let mut best = 0;
        for (i, p) in self.probs.iter().enumerate() {
            if *p > self.probs[best] {
                best = i;
            }
        }
        best
    }

    /// `Σ (i + 1)·p(i)`: the expected score when the labels are `1..=n`.
    pub fn expectation(&self) -> f64 {
        self.probs
            .iter()
            .enumerate()
            .map(|(i, p)| (i + 1) as f64 * p)
            .sum()
    }

    /// Marks the labels a truncated list (a remote top-20) did not show, each of which could
    /// hold up to `at_most` probability.
    pub fn with_missing(mut self, missing: Vec<usize>, at_most: f64) -> Self {
        self.missing = missing;
        self.missing_at_most = if self.missing.is_empty() {
            0.0
        } else {
            at_most.clamp(0.0, 1.0)
        };
        self
    }

    /// The range the expectation could take were the missing labels as likely as the list
    /// allows: all the mass the listed labels left (`1 − mass`) on the lowest missing
    /// label, or all on the highest. `(e, e)` when nothing is missing.
    pub fn expectation_bounds(&self) -> (f64, f64) {
        let e = self.expectation();
        let (Some(&lo), Some(&hi)) = (self.missing.iter().min(), self.missing.iter().max()) else {
            return (e, e);
        };
        // What the listed labels left, wherever it went. (A count of missing labels times the
        // least listed probability would assume one spelling per label; a label may have
        // several, ` 3` and `3`, each as likely.)
        let extra = 1.0 - self.mass;
        if extra <= 0.0 {
            return (e, e);
        }
        // The listed labels' mass and first moment, before renormalising.
        let moment = e * self.mass;
        let with = |label: usize| (moment + extra * (label + 1) as f64) / (self.mass + extra);
        (with(lo).min(e), with(hi).max(e))
    }
}

/// Tokens a backend has read and written so far: for a local model the prompt positions
/// it ran (a cached prefix not counted) and the tokens it generated; for an endpoint, the
/// `usage` its replies reported (what it bills).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, o: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_sub(o.prompt_tokens),
            completion_tokens: self.completion_tokens.saturating_sub(o.completion_tokens),
        }
    }
}

/// One distribution query: the input, the assistant's reply so far, and the labels.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelQuery {
    /// What the judge is asked.
    pub input: Input,
    /// The start of the judge's reply, up to the position of the label.
    pub prefix: String,
    /// The labels (each a short string, usually one token).
    pub labels: Vec<String>,
}

/// Something that answers requests.
pub trait Backend: Send {
    /// A stable identity for record keys: what produced the text (e.g. a model file hash).
    fn identity(&self) -> Result<String>;

    /// A short human-readable name.
    fn name(&self) -> String;

    /// Generates the reply to `input`.
    fn generate(&mut self, input: &Input, params: &SamplingParams) -> Result<Generation>;

    /// Generates replies to several inputs, calling `on_done(index, result)` as each
    /// finishes. Backends that can serve several at once override this (the local one
    /// decodes them together, a remote one keeps several requests in flight); the default
    /// answers them one by one. Each reply is the same as from [`Backend::generate`].
    fn generate_batch(
        &mut self,
        requests: &[(Input, SamplingParams)],
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        for (i, (input, params)) in requests.iter().enumerate() {
            let r = self.generate(input, params);
            on_done(i, r)?;
        }
        Ok(())
    }

    /// The next-token distribution over `query.labels` after the input and the assistant
    /// prefix. [`Error::NoLogprobs`] when the backend cannot read token probabilities at
    /// all; other errors concern this query only.
    fn label_distribution(&mut self, query: &LabelQuery) -> Result<LabelDistribution>;

    /// Prompt positions this backend has run through a local model so far (those served
    /// from a cached prefix not counted); `None` where it cannot know (a remote endpoint).
    fn prompt_positions(&self) -> Option<usize> {
        None
    }

    /// Tokens read and written so far ([`Usage`]); zero where the backend cannot count.
    fn usage(&self) -> Usage {
        Usage::default()
    }

    /// Several distribution queries, answered in order; the default asks them one by one.
    fn label_distributions(
        &mut self,
        queries: &[LabelQuery],
        on_done: &mut dyn FnMut(usize, Result<LabelDistribution>) -> Result<()>,
    ) -> Result<()> {
        for (i, q) in queries.iter().enumerate() {
            let r = self.label_distribution(q);
            on_done(i, r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_renormalise_and_refuse_zero_mass() {
        let d = LabelDistribution::from_raw(vec![0.1, 0.3, 0.0, 0.1]).unwrap();
        assert!((d.mass - 0.5).abs() < 1e-12);
        assert_eq!(d.probs, vec![0.2, 0.6, 0.0, 0.2]);
        assert_eq!(d.argmax(), 1);
        assert!((d.expectation() - (0.2 + 1.2 + 0.8)).abs() < 1e-12);
        assert!(matches!(
            LabelDistribution::from_raw(vec![0.0, 0.0]),
            Err(Error::NoLabelToken(_))
        ));
    }

    #[test]
    fn missing_labels_bound_the_expectation() {
        // Labels 2 and 3 seen (0.5 and 0.3), 1 and 4 missing: the 0.2 the list left, all on
        // 1 or all on 4.
        let d = LabelDistribution::from_raw(vec![0.0, 0.5, 0.3, 0.0])
            .unwrap()
            .with_missing(vec![0, 3], 0.05);
        let e = (2.0 * 0.5 + 3.0 * 0.3) / 0.8;
        assert!((d.expectation() - e).abs() < 1e-12);
        let (lo, hi) = d.expectation_bounds();
        assert!((lo - (1.9 + 0.2) / 1.0).abs() < 1e-12, "{lo}");
        assert!((hi - (1.9 + 0.8) / 1.0).abs() < 1e-12, "{hi}");
        // Nothing missing, or no mass left for it: no range.
        let whole = LabelDistribution::from_raw(vec![0.5, 0.5]).unwrap();
        assert_eq!(whole.expectation_bounds(), (1.5, 1.5));
        let full = LabelDistribution::from_raw(vec![0.0, 1.0])
            .unwrap()
            .with_missing(vec![0], 0.01);
        assert_eq!(full.expectation_bounds(), (2.0, 2.0));
    }
}
