//! The records an experiment produces: one per generated answer ([`ResponseRecord`]) and one
//! per judged score ([`JudgmentRecord`]), with typed fields. They are plain serde structs,
//! stored as JSON lines by [`crate::store`] and turned into DataFrames by [`crate::table`].

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The criterion of the row that sums an answer's criterion scores.
pub const TOTAL: &str = "total";
/// The criterion of a pairwise verdict row (the whole comparison, not one criterion).
pub const OVERALL: &str = "overall";
/// The summary criterion of pairwise modes: the share of comparisons a cell won.
pub const WIN_RATE: &str = "win_rate";

/// A grading mode: each is one unit in [`crate::judge`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each answer alone, each criterion scored 1..=scale from the judge's text.
    #[default]
    Rubric,
    /// All answers to a prompt in one judge prompt (the write-up's GPT-4 form).
    Listwise,
    /// Two answers, asked in both orders; a text verdict.
    Pairwise,
    /// Expected score `Σ k·p(k)` from the judge's token probabilities at each score.
    Expected,
    /// The judge's probability of preferring A, B (or a tie) at the verdict position, in
    /// both orders: a preference even from judges too small to write a parseable verdict.
    PairwiseExpected,
    /// A toy mode, only in tests (`judge/length.rs`): the answer's length as its score.
    #[cfg(test)]
    Length,
}

impl Mode {
    /// Every mode, in a fixed order.
    pub const ALL: [Mode; 5] = [
        Mode::Rubric,
        Mode::Listwise,
        Mode::Pairwise,
        Mode::Expected,
        Mode::PairwiseExpected,
    ];

    /// The name used in files, tables and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Rubric => "rubric",
            Mode::Listwise => "listwise",
            Mode::Pairwise => "pairwise",
            Mode::Expected => "expected",
            Mode::PairwiseExpected => "pairwise_expected",
            #[cfg(test)]
            Mode::Length => "length",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.as_str()).collect();
                Error::config(
                    "judge.modes",
                    format!("unknown mode `{s}` ({})", names.join(", ")),
                )
            })
    }
}

/// How an answer's generation ended, as its record stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The model ended its turn (an end-of-sequence token, or the endpoint said `stop`).
    #[default]
    Stop,
    /// A stop string appeared; the text ends before it.
    StopString,
    /// The token limit or the context window was reached.
    Length,
    /// Generation failed (see the record's `error`).
    Error,
}

impl From<crate::engine::FinishReason> for Finish {
    fn from(f: crate::engine::FinishReason) -> Self {
        use crate::engine::FinishReason as F;
        match f {
            F::Stop => Finish::Stop,
            F::StopString => Finish::StopString,
            F::Length => Finish::Length,
        }
    }
}

impl std::fmt::Display for Finish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Finish::Stop => "stop",
            Finish::StopString => "stop_string",
            Finish::Length => "length",
            Finish::Error => "error",
        })
    }
}

/// A reason to doubt a judgment row, as its record stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The judge's probability mass on the score or verdict tokens was low (see `mass`).
    LowMass,
    /// The judge's stated total differs from the sum of its criterion scores; the stated
    /// total is kept.
    TotalMismatch,
    /// The judge's reply gave two different scores for the same answer.
    Conflict,
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flag::LowMass => "low_mass",
            Flag::TotalMismatch => "total_mismatch",
            Flag::Conflict => "conflict",
        })
    }
}

/// One generated answer (or a failed attempt, with `error` set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    /// Content hash of everything that determines the answer.
    pub key: String,
    /// Model name in the experiment.
    pub model: String,
    /// Model source as given (URLs without credentials).
    pub model_source: String,
    /// What produced the answer: `local:<file sha256>` for a local model, or
    /// `openai:<base URL>:<model>` for an endpoint.
    pub model_id: String,
    /// `chat` (the model's chat template) or `raw` (the bare prompt as a text completion).
    #[serde(default)]
    pub prompt_format: crate::model::PromptFormat,
    /// Context window the answer ran in (prompt plus answer), when capped.
    #[serde(default)]
    pub context: Option<u64>,
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
    pub finish_reason: Finish,
    /// Prefill seconds.
    pub prompt_s: f64,
    /// Decode seconds.
    pub decode_s: f64,
    /// Prompt tokens per second.
    pub prompt_tok_per_s: f64,
    /// Decode tokens per second.
    pub decode_tok_per_s: f64,
}

impl ResponseRecord {
    /// The cell the answer belongs to: `model/setting`.
    pub fn cell(&self) -> String {
        format!("{}/{}", self.model, self.setting)
    }
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
    /// Judge identity (`local:<file sha256>` or `openai:<base URL>:<model>`).
    pub judge_id: String,
    /// The grading mode.
    pub mode: Mode,
    /// Judge template name.
    pub template: String,
    /// The judged response (answer A for pairwise modes).
    pub response_key: String,
    /// Answer B for pairwise modes.
    pub other_key: Option<String>,
    /// Model of the judged response.
    pub model: String,
    /// Setting of the judged response.
    pub setting: String,
    /// Model of answer B (pairwise modes).
    pub other_model: Option<String>,
    /// Setting of answer B (pairwise modes).
    pub other_setting: Option<String>,
    /// Prompt id.
    pub prompt_id: String,
    /// Sample index.
    pub sample: u32,
    /// Which ask of the same judgment this row is (0-based): `judge.repeats` asks a sampled
    /// verdict several times, each with its own seed, for the judge's test-retest. Always 0
    /// for the probability modes, whose verdicts are read, not sampled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeat: u32,
    /// Criterion name, [`TOTAL`], or [`OVERALL`] (pairwise modes).
    pub criterion: String,
    /// The score; null when there is none (unparseable verdict, failed call). Pairwise:
    /// 1 when A is preferred, 0 when B is, 0.5 for a tie; a disagreement between the two
    /// orders counts as a tie. Pairwise expected: the probability of preferring A, averaged
    /// over both orders. Expected: the argmax score.
    pub score: Option<f64>,
    /// Expected score `Σ k·p(k)` (expected mode).
    pub expected_score: Option<f64>,
    /// Expected mode on a remote judge whose top-20 log-probabilities left out some score
    /// tokens: the lowest and highest the expected score could be, were the missing
    /// tokens as likely as the list allows ([`crate::backend::LabelDistribution::expectation_bounds`]).
    /// `None` when every score token was seen (always, for a local judge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_low: Option<f64>,
    /// The highest, as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_high: Option<f64>,
    /// Score tokens missing from the judge's top-20 log-probabilities (summed over the
    /// criteria on a total row); `None` when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_missing: Option<u32>,
    /// p(1..=scale) (expected mode); pairwise expected: p(A), p(B)[, p(tie)] with this row's
    /// answer shown first, then the same with it shown second. Renormalised over the labels.
    /// Pairwise (text): the same layout with each order's verdict as a 1 among zeros (A, B,
    /// tie), when both orders parsed.
    pub probs: Option<Vec<f64>>,
    /// Probability mass the verdict tokens held before renormalising (lowest over the
    /// criteria or orders of the row); low mass means the judge wanted to write something
    /// else.
    #[serde(default)]
    pub mass: Option<f64>,
    /// 1-based position shown to the judge (listwise).
    pub position: Option<u32>,
    /// Seed of the listwise order.
    pub order_seed: Option<u64>,
    /// Pairwise modes: whether both orders gave the same verdict.
    pub consistent: Option<bool>,
    /// A reason to doubt the row: `low_mass` (see `mass`), `total_mismatch` (the judge's
    /// stated total differs from the sum of its criterion scores; the stated total is kept)
    /// or `conflict`.
    #[serde(default)]
    pub flag: Option<Flag>,
    /// Why the score is null when a call could not score this answer (e.g. the prompt did
    /// not fit the judge's context); `None` for an unparseable verdict (see `parse_ok`).
    #[serde(default)]
    pub error: Option<String>,
    /// The judge's raw replies.
    pub raw: String,
    /// Whether the verdict parsed.
    pub parse_ok: bool,
    /// Attempts used (1 + re-asks).
    pub attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JudgmentRecord {
    /// Whether the row is a preference between two answers (a pairwise mode's `overall`
    /// row: the row's answer over `other_key`, 0 to 1) rather than a score of one answer.
    pub fn is_preference(&self) -> bool {
        self.criterion == OVERALL && self.other_key.is_some()
    }

    /// The value a row contributes to means: the expected score when there is one.
    pub fn value(&self) -> Option<f64> {
        self.expected_score.or(self.score)
    }

    /// The cell of the judged answer: `model/setting`.
    pub fn cell(&self) -> String {
        format!("{}/{}", self.model, self.setting)
    }

    /// The cell of answer B (pairwise modes).
    pub fn other_cell(&self) -> Option<String> {
        Some(format!(
            "{}/{}",
            self.other_model.as_ref()?,
            self.other_setting.as_ref()?
        ))
    }
}

/// One finished judge call: all the rows it produced, stored as one line so that a call is
/// either stored whole or not at all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The call's key (content hash of judge, template, settings and answers).
    pub key: String,
    /// The rows of the call.
    pub rows: Vec<JudgmentRecord>,
}

/// What one stage of a run read, wrote and took: tokens as the backend counted them
/// ([`crate::backend::Usage`]), wall time, and money where the endpoint has a `price`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageUsage {
    /// The stage (`generate smollm2-135m`, `judge expected`, `sanity listwise`, …).
    pub stage: String,
    /// The model that did the work.
    pub model: String,
    /// Calls made in this run.
    pub calls: u64,
    /// Calls reused from the results folder (nothing read or paid).
    pub reused: u64,
    /// Prompt tokens read (a local model: positions run, cached prefixes not counted).
    pub prompt_tokens: u64,
    /// Completion tokens written.
    pub completion_tokens: u64,
    /// Wall time of the stage's calls.
    pub seconds: f64,
    /// Cost at the endpoint's `price`; null without one (a local model, or no price given).
    pub cost: Option<f64>,
    /// What earlier runs into the same results folder spent on this stage (and model), all
    /// of them together: a rerun that reuses their calls keeps what making them took.
    /// `None` for a folder's first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier: Option<Spent>,
}

/// Calls, tokens, time and cost spent on a stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// Calls made.
    pub calls: u64,
    /// Prompt tokens read.
    pub prompt_tokens: u64,
    /// Completion tokens written.
    pub completion_tokens: u64,
    /// Wall time.
    pub seconds: f64,
    /// Cost; null where no call was priced.
    pub cost: Option<f64>,
}

impl std::ops::Add for Spent {
    type Output = Spent;
    fn add(self, o: Spent) -> Spent {
        Spent {
            calls: self.calls + o.calls,
            prompt_tokens: self.prompt_tokens + o.prompt_tokens,
            completion_tokens: self.completion_tokens + o.completion_tokens,
            seconds: self.seconds + o.seconds,
            cost: match (self.cost, o.cost) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
            },
        }
    }
}

impl StageUsage {
    /// What this run spent on the stage.
    pub fn spent(&self) -> Spent {
        Spent {
            calls: self.calls,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            seconds: self.seconds,
            cost: self.cost,
        }
    }

    /// What every run into the folder spent on the stage: this one and the earlier ones.
    pub fn all(&self) -> Spent {
        self.spent() + self.earlier.unwrap_or_default()
    }

    /// Adds what `before` (the folder's previous run's record of the same stage and model)
    /// and the runs before it spent, as `earlier`.
    pub fn after(mut self, before: &StageUsage) -> Self {
        self.earlier = Some(before.all());
        self
    }
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
impl Keyed for CallRecord {
    fn key(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_by_name() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
        }
        let e = "listwize".parse::<Mode>().unwrap_err().to_string();
        assert!(
            e.contains("listwize") && e.contains("pairwise_expected"),
            "{e}"
        );
    }
}
