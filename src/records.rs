//! The records an experiment produces: one per generated answer, one per judged score.
//! They are plain serde structs, stored as JSON lines and turned into DataFrames by
//! [`crate::table`].

use serde::{Deserialize, Serialize};

/// One generated answer (or a failed attempt, with `error` set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    /// Content hash of everything that determines the answer.
    pub key: String,
    /// Model name in the experiment.
    pub model: String,
    /// Model source as given.
    pub model_source: String,
    /// Model identity (file sha256).
    pub model_id: String,
    /// Sampling setting name.
    pub setting: String,
    /// Temperature.
    pub temperature: f64,
    /// top_p.
    pub top_p: f64,
    /// min_p.
    pub min_p: f64,
    /// top_k.
    pub top_k: u64,
    /// Repetition penalty.
    pub repetition_penalty: f64,
    /// Sampler seed.
    pub seed: u64,
    /// Token limit.
    pub max_tokens: u64,
    /// Prompt id.
    pub prompt_id: String,
    /// Prompt category.
    pub category: String,
    /// Sample index (0-based).
    pub sample: u32,
    /// The user prompt.
    pub prompt: String,
    /// The answer; `None` when generation failed.
    pub text: Option<String>,
    /// Why generation failed.
    pub error: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// `stop`, `stop_string`, `length` or `error`.
    pub finish_reason: String,
    /// Prefill seconds.
    pub prompt_s: f64,
    /// Decode seconds.
    pub decode_s: f64,
    /// Prompt tokens per second.
    pub prompt_tok_per_s: f64,
    /// Decode tokens per second.
    pub decode_tok_per_s: f64,
}

/// One score from the judge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgmentRecord {
    /// Unique row key: the judge call's key plus the answer and criterion.
    pub key: String,
    /// Key of the judge call that produced the row (shared by the rows of one call).
    pub call: String,
    /// Judge name.
    pub judge: String,
    /// Judge identity (model file sha256 or endpoint and model).
    pub judge_id: String,
    /// `rubric`, `listwise`, `pairwise` or `expected`.
    pub mode: String,
    /// Judge template name.
    pub template: String,
    /// The judged response (answer A for pairwise).
    pub response_key: String,
    /// Answer B for pairwise.
    pub other_key: Option<String>,
    /// Model of the judged response.
    pub model: String,
    /// Setting of the judged response.
    pub setting: String,
    /// Model of answer B (pairwise).
    pub other_model: Option<String>,
    /// Setting of answer B (pairwise).
    pub other_setting: Option<String>,
    /// Prompt id.
    pub prompt_id: String,
    /// Sample index.
    pub sample: u32,
    /// Criterion name, `total`, or `overall` (pairwise).
    pub criterion: String,
    /// The score; null when the verdict could not be parsed. Pairwise: 1 A wins, 0 B wins,
    /// 0.5 tie (a disagreement between the two orders counts as a tie).
    pub score: Option<f64>,
    /// Expected score `sum k p(k)` (expected mode).
    pub expected_score: Option<f64>,
    /// p(1..=scale) (expected mode).
    pub probs: Option<Vec<f64>>,
    /// 1-based position shown to the judge (listwise).
    pub position: Option<u32>,
    /// Shuffle seed of the listwise order.
    pub order_seed: Option<u64>,
    /// Pairwise: whether both orders agreed.
    pub consistent: Option<bool>,
    /// The judge's raw replies.
    pub raw: String,
    /// Whether the verdict parsed.
    pub parse_ok: bool,
    /// Attempts used (1 + re-asks).
    pub attempts: u32,
}

/// One comparison of the judge sanity check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SanityRecord {
    /// Content hash.
    pub key: String,
    /// Judge identity.
    pub judge_id: String,
    /// Prompt id.
    pub prompt_id: String,
    /// `off_topic`, `truncated` or `gibberish`.
    pub kind: String,
    /// Total score of the reference answer.
    pub good: Option<f64>,
    /// Total score of the bad answer.
    pub bad: Option<f64>,
    /// Whether the good answer scored strictly higher.
    pub passed: bool,
}

/// Records with a unique key, for de-duplication on load.
pub trait Keyed {
    /// The record's unique key.
    fn key(&self) -> &str;
}

impl Keyed for ResponseRecord {
    fn key(&self) -> &str {
        &self.key
    }
}
impl Keyed for JudgmentRecord {
    fn key(&self) -> &str {
        &self.key
    }
}
impl Keyed for SanityRecord {
    fn key(&self) -> &str {
        &self.key
    }
}
