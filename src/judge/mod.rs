//! The judge: one self-contained unit per grading mode, each reading top to bottom as
//! prompt, call, parse, rows.
//!
//! - [`rubric`]: one answer, each criterion scored 1..=scale from the judge's text.
//! - [`listwise`]: all answers to a prompt in one judge prompt (the write-up's GPT-4 form),
//!   in a shuffled, fixed or balanced order; per-criterion lines or one total per answer.
//! - [`pairwise`]: A vs B in both orders; `[[A]]`-style or free-text winner verdicts.
//! - [`expected`]: the judge's next-token distribution over the score tokens at each score
//!   position: argmax and `Σ k·p(k)`, no sampling.
//! - [`pairwise_expected`]: p(A), p(B) (and p(tie)) at the verdict position, in both orders.
//!
//! Each mode turns the answers it needs into [`Call`]s; the experiment runner only schedules
//! them, reuses stored ones and stores new ones ([`call::run_calls`] batches what they ask).
//! An unparseable verdict is re-asked up to `retries` times with a reminder of the format; if
//! it still fails, the score is null (never 0) and the raw text is kept.
//!
//! Each mode's file also declares its [`ModeSpec`] (template family, verdict forms,
//! placeholders, what its rows are, what passes the sanity check, its calls), and
//! [`Mode::spec`] maps each mode to it: adding a mode is its file,
//! its variant (named in `Mode::as_str`, listed in `Mode::ALL`) and that arm.

pub mod call;
pub mod expected;
pub mod grammar;
#[cfg(test)]
mod length;
pub mod listwise;
pub mod pairwise;
pub mod pairwise_expected;
pub mod parse;
pub mod rubric;
pub mod spec;
pub mod template;

pub use call::{run_calls, Asker, Call};
pub use parse::Verdict;
pub use spec::ModeSpec;
pub use template::{JudgeTemplate, VerdictForm};

use crate::backend::EndpointConfig;
use crate::error::{Error, Result};
use crate::keys::{derive_seed, key_of};
use crate::model::{Input, Message, PromptFormat};
pub use crate::records::Mode;
use crate::records::{JudgmentRecord, ResponseRecord, OVERALL, TOTAL};
use crate::sampling::{Constraint, SamplingParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn default_criteria() -> Vec<String> {
    vec![
        "Relevance".into(),
        "Coherence".into(),
        "Completeness".into(),
    ]
}
fn default_scale() -> u32 {
    4
}
fn default_retries() -> u32 {
    2
}
/// Most re-asks after an unparseable verdict: a judge that has not written the format in
/// this many tries will not.
pub const MAX_RETRIES: u32 = 10;
fn default_max_tokens() -> usize {
    96
}
fn default_modes() -> Vec<Mode> {
    vec![Mode::Rubric]
}
fn default_true() -> bool {
    true
}
fn default_low_mass() -> f64 {
    0.5
}
fn default_repeats() -> u32 {
    1
}
/// Most asks of one judgment (`repeats`).
pub const MAX_REPEATS: u32 = 20;

/// What the statistics do with a score whose tokens held less probability than `low_mass`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LowMassPolicy {
    /// Left out of means and comparisons, and counted (`n_excluded` in the summary): the
    /// judge wanted to write something other than a score there (the default).
    #[default]
    Exclude,
    /// Kept, flagged.
    Include,
}

/// How the expected mode reads a total over several criteria.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedTotal {
    /// The sum of the criteria's expectations, each read after the previous criteria's
    /// argmax scores were written into the judge's reply (the default): a criterion's
    /// distribution is conditioned on the judge's most likely earlier scores, not on all of
    /// them.
    #[default]
    Sum,
    /// The judge is asked for the total alone, and the expectation is read from its
    /// distribution over the totals themselves (`criteria`..=`criteria × scale`, e.g.
    /// `3`..`12`). A two-digit total is read as its two tokens' probabilities multiplied:
    /// p(`1`) at the total, times p(`0`..`9`) after it. No criterion rows.
    Joint,
}

/// How listwise answers are ordered in the judge prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// A seeded shuffle per prompt, the seed recorded with each row (the default).
    #[default]
    Shuffle,
    /// The experiment's order (models, then settings): the write-up's exact form.
    Fixed,
    /// A cyclic Latin square over prompts: answer `i` of prompt `p` is shown at position
    /// `(i + p) mod n`, so over any `n` consecutive prompts every answer takes every
    /// position once. For measuring position bias.
    Balanced,
}

/// How to judge: the judge model, modes, criteria, scale, sampling and templates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// The judge model (bundled name, `.gguf` path or `hf://` reference), or with an
    /// `endpoint` its name in tables.
    pub model: String,
    /// Grading modes to run.
    #[serde(default = "default_modes")]
    pub modes: Vec<Mode>,
    /// Criteria names; each is scored 1..=scale.
    #[serde(default = "default_criteria")]
    pub criteria: Vec<String>,
    /// Top of the scale.
    #[serde(default = "default_scale")]
    pub scale: u32,
    /// Re-asks after an unparseable verdict.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// `chat` (the judge model's chat template) or `raw` (the prompt as a text completion,
    /// as the write-up's app ran its judge).
    #[serde(default)]
    pub prompt_format: PromptFormat,
    /// Judge temperature; 0 (greedy) unless set.
    #[serde(default)]
    pub temperature: f64,
    /// Judge min_p (0 = off).
    #[serde(default)]
    pub min_p: f64,
    /// Judge top_p (1 = off).
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Judge top_k (0 = off).
    #[serde(default)]
    pub top_k: usize,
    /// Most tokens in a verdict (at least 40 per answer for listwise).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Listwise answer order.
    #[serde(default)]
    pub order: Order,
    /// Expected modes: rows whose score tokens held less probability mass than this are
    /// flagged `low_mass`.
    #[serde(default = "default_low_mass")]
    pub low_mass: f64,
    /// What means and comparisons do with a `low_mass` score: `exclude` (the default) or
    /// `include`.
    #[serde(default)]
    pub low_mass_policy: LowMassPolicy,
    /// Expected mode: the total as the sum of the criteria's expectations (`sum`, the
    /// default) or read at once from the judge's distribution over the totals (`joint`).
    #[serde(default)]
    pub expected_total: ExpectedTotal,
    /// How many times each sampled verdict is asked (rubric, listwise, pairwise), each
    /// with its own seed at the judge's temperature, for the judge's test-retest
    /// reliability (`judge_repeats` is accepted too). 1 unless set; refused above 1 when no
    /// listed mode samples (the probability modes read a distribution, and temperature 0
    /// is greedy: every ask would give the same verdict).
    #[serde(default = "default_repeats", alias = "judge_repeats")]
    pub repeats: u32,
    /// The mode whose headline comparisons are the run's confirmatory tests (Holm over
    /// them); the other modes' comparisons are exploratory and never a finding. The first
    /// of `modes` unless set.
    #[serde(default)]
    pub primary_mode: Option<Mode>,
    /// Templates per mode: a file (relative to the experiment file) or a shipped template's
    /// name (`writeup-gpt4`); the mode's shipped template otherwise.
    #[serde(default)]
    pub templates: BTreeMap<Mode, PathBuf>,
    /// Run the judge sanity check (good vs deliberately bad answers, in every mode).
    #[serde(default = "default_true")]
    pub sanity_check: bool,
    /// Text verdicts held to the verdict form's language, so that every reply parses (see
    /// [`grammar`]); on unless set to false. A local judge decodes them so; an endpoint
    /// judge is asked for structured output (`response_format`), and its replies are
    /// parsed from text where the endpoint refuses it.
    #[serde(default = "default_true")]
    pub constrained: bool,
    /// Judge through an OpenAI-compatible endpoint instead of a local model; `model` is
    /// then only the judge's name in tables.
    #[serde(default)]
    pub endpoint: Option<EndpointConfig>,
}

impl JudgeConfig {
    /// A rubric judge with the write-up's criteria on a 1-4 scale.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            modes: default_modes(),
            criteria: default_criteria(),
            scale: default_scale(),
            retries: default_retries(),
            prompt_format: PromptFormat::Chat,
            temperature: 0.0,
            min_p: 0.0,
            top_p: None,
            top_k: 0,
            max_tokens: default_max_tokens(),
            order: Order::Shuffle,
            low_mass: default_low_mass(),
            low_mass_policy: LowMassPolicy::Exclude,
            expected_total: ExpectedTotal::Sum,
            repeats: 1,
            primary_mode: None,
            templates: Default::default(),
            sanity_check: true,
            constrained: true,
            endpoint: None,
        }
    }

    /// Constrains a local judge's text verdicts (on by default), or not.
    pub fn with_constrained(mut self, on: bool) -> Self {
        self.constrained = on;
        self
    }

    /// Whether text verdicts are held to their form's language: a local judge decodes
    /// them so token by token; an endpoint judge is asked for structured output (a JSON
    /// schema whose one string property has the language as its `pattern`), and parsed as
    /// text where the endpoint refuses it.
    pub fn constrains(&self) -> bool {
        self.constrained
    }

    /// Sets the modes.
    pub fn with_modes(mut self, modes: &[Mode]) -> Self {
        self.modes = modes.to_vec();
        self
    }

    /// The primary mode: `primary_mode`, else the first mode listed.
    pub fn primary(&self) -> Option<Mode> {
        self.primary_mode.or_else(|| self.modes.first().copied())
    }

    /// Asks each sampled verdict `k` times (test-retest).
    pub fn with_repeats(mut self, k: u32) -> Self {
        self.repeats = k;
        self
    }

    /// Reads the expected total jointly or as a sum of criteria.
    pub fn with_expected_total(mut self, total: ExpectedTotal) -> Self {
        self.expected_total = total;
        self
    }

    /// How many times `mode`'s verdicts are asked: `repeats` for a mode whose verdict is
    /// sampled text, 1 for a probability mode.
    pub fn repeats_of(&self, mode: Mode) -> u32 {
        if mode.spec().samples {
            self.repeats.max(1)
        } else {
            1
        }
    }

    /// Turns the judge sanity check on or off.
    pub fn with_sanity_check(mut self, on: bool) -> Self {
        self.sanity_check = on;
        self
    }

    /// Sets the listwise order.
    pub fn with_order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Uses `template` (a file, or a shipped template's name) for `mode`.
    pub fn with_template(mut self, mode: Mode, template: impl Into<PathBuf>) -> Self {
        self.templates.insert(mode, template.into());
        self
    }

    /// The sampling values of judge calls (seed set per call).
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            min_p: self.min_p,
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k,
            max_new_tokens: self.max_tokens,
            ..SamplingParams::neutral()
        }
    }

    /// Checks every value and loads each mode's template; `origin` names the experiment
    /// file in errors and `base` is the folder template paths are relative to.
    pub fn validate(&self, origin: &str, base: &Path) -> Result<BTreeMap<Mode, JudgeTemplate>> {
        let at = |field: &str| format!("{origin}: judge.{field}");
        if self.criteria.is_empty() {
            return Err(Error::config(at("criteria"), "no criteria"));
        }
        for (i, c) in self.criteria.iter().enumerate() {
            if c.trim().is_empty() {
                return Err(Error::config(at(&format!("criteria[{i}]")), "is empty"));
            }
            if self.criteria[..i].contains(c) {
                return Err(Error::config(
                    at(&format!("criteria[{i}]")),
                    format!("duplicate criterion `{c}`"),
                ));
            }
            if c.eq_ignore_ascii_case(TOTAL) || c == OVERALL {
                return Err(Error::config(
                    at(&format!("criteria[{i}]")),
                    format!("`{c}` is the name of a row every judge writes (`total`, `overall`)"),
                ));
            }
            // Verdicts are matched at word boundaries, which a name that starts or ends with
            // punctuation ("Accuracy (1-4)") would never meet.
            let word = |ch: Option<char>| ch.is_some_and(|c| c.is_alphanumeric() || c == '_');
            if !word(c.chars().next()) || !word(c.chars().last()) {
                return Err(Error::config(
                    at(&format!("criteria[{i}]")),
                    format!("`{c}` must start and end with a letter or digit"),
                ));
            }
        }
        if !(2..=9).contains(&self.scale) {
            return Err(Error::config(
                at("scale"),
                format!(
                    "{} is outside 2..=9 (scores must be single digits)",
                    self.scale
                ),
            ));
        }
        if self.modes.is_empty() {
            return Err(Error::config(at("modes"), "no modes"));
        }
        for (i, m) in self.modes.iter().enumerate() {
            if self.modes[..i].contains(m) {
                return Err(Error::config(
                    at("modes"),
                    format!("mode {m} is listed twice"),
                ));
            }
        }
        if self.max_tokens == 0 {
            return Err(Error::config(at("max_tokens"), "must be at least 1"));
        }
        if self.retries > MAX_RETRIES {
            return Err(Error::config(
                at("retries"),
                format!("{} is more than {MAX_RETRIES}", self.retries),
            ));
        }
        if !(self.low_mass.is_finite() && (0.0..=1.0).contains(&self.low_mass)) {
            return Err(Error::config(at("low_mass"), "must be in [0, 1]"));
        }
        if self.repeats == 0 || self.repeats > MAX_REPEATS {
            return Err(Error::config(
                at("repeats"),
                format!("{} is outside 1..={MAX_REPEATS}", self.repeats),
            ));
        }
        if self.repeats > 1 {
            let sampled: Vec<&str> = self
                .modes
                .iter()
                .filter(|m| m.spec().samples)
                .map(|m| m.as_str())
                .collect();
            if sampled.is_empty() {
                return Err(Error::config(
                    at("repeats"),
                    format!(
                        "{} asks of each verdict, but no listed mode samples one (expected \
                         and pairwise_expected read the judge's probabilities, the same at \
                         every ask): use 1, or add rubric, listwise or pairwise",
                        self.repeats
                    ),
                ));
            }
            if self.temperature == 0.0 {
                return Err(Error::config(
                    at("repeats"),
                    format!(
                        "{} asks of each verdict at temperature 0: greedy decoding writes \
                         the same verdict every time; set judge.temperature above 0 for a \
                         test-retest, or use 1",
                        self.repeats
                    ),
                ));
            }
        }
        if self.expected_total == ExpectedTotal::Joint {
            if !self.modes.contains(&Mode::Expected) {
                return Err(Error::config(
                    at("expected_total"),
                    "is `joint`, but the expected mode, the only one it changes, is not listed",
                ));
            }
            let top = self.criteria.len() as u32 * self.scale;
            if top > 19 {
                return Err(Error::config(
                    at("expected_total"),
                    format!(
                        "`joint` reads totals of one or two digits up to 19; {} criteria on \
                         a 1-{} scale reach {top}",
                        self.criteria.len(),
                        self.scale
                    ),
                ));
            }
        }
        if let Some(p) = self.primary_mode {
            if !self.modes.contains(&p) {
                return Err(Error::config(
                    at("primary_mode"),
                    format!("{p} is not one of the judge's modes"),
                ));
            }
        }
        self.params()
            .with_seed(0)
            .validate()
            .map_err(|e| Error::invalid(format!("{origin}: judge"), e))?;
        if let Some(e) = &self.endpoint {
            e.validate(&at("endpoint"))?;
        }
        let mut out = BTreeMap::new();
        for &m in &self.modes {
            let t = match self.templates.get(&m) {
                Some(p) => {
                    let path = if p.is_relative() {
                        base.join(p)
                    } else {
                        p.clone()
                    };
                    match (path.exists(), p.to_str().and_then(JudgeTemplate::named)) {
                        (false, Some(t)) => t,
                        _ => JudgeTemplate::load(&path)
                            .map_err(|e| Error::invalid(at(&format!("templates.{m}")), e))?,
                    }
                }
                None => JudgeTemplate::builtin(m),
            };
            t.check(&at(&format!("templates.{m}")), m)?;
            out.insert(m, t);
        }
        Ok(out)
    }
}

/// A judge ready to make calls: its settings, templates and identity. It holds no backend;
/// the calls it makes go through [`run_calls`].
#[derive(Clone, Debug)]
pub struct Judge {
    /// The configuration.
    pub cfg: JudgeConfig,
    /// The judge's name in tables.
    pub name: String,
    /// The judge's identity in record keys (`local:<sha256>`, `openai:<url>:<model>`).
    pub id: String,
    /// The template of each mode.
    pub templates: BTreeMap<Mode, JudgeTemplate>,
    /// Base seed of the experiment: judge sampling seeds and listwise orders derive from it.
    pub seed: u64,
    /// Which ask of each judgment this judge makes (0 for the first; see
    /// [`JudgeConfig::repeats`]): part of every call key and row.
    pub repeat: u32,
}

/// The answers to one prompt (and sample), in the experiment's order.
#[derive(Clone, Debug)]
pub struct Group<'a> {
    /// The prompt's position in the prompt set (for balanced orders).
    pub index: usize,
    /// The answers.
    pub answers: Vec<&'a ResponseRecord>,
}

/// Groups answered responses by (prompt, sample), in first-seen order.
pub fn group_answers(responses: &[ResponseRecord]) -> Vec<Group<'_>> {
    let mut groups: Vec<((String, u32), Group)> = Vec::new();
    let mut at: std::collections::HashMap<(String, u32), usize> = Default::default();
    let mut prompts: Vec<&str> = Vec::new();
    for r in responses.iter().filter(|r| r.text.is_some()) {
        let k = (r.prompt_id.clone(), r.sample);
        match at.get(&k) {
            Some(&i) => groups[i].1.answers.push(r),
            None => {
                let index = match prompts.iter().position(|p| *p == r.prompt_id) {
                    Some(i) => i,
                    None => {
                        prompts.push(&r.prompt_id);
                        prompts.len() - 1
                    }
                };
                at.insert(k.clone(), groups.len());
                groups.push((
                    k,
                    Group {
                        index,
                        answers: vec![r],
                    },
                ));
            }
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// The reply a text verdict must be: as the prompt shows it (and a re-ask repeats it), and
/// as a language for constrained decoding ([`grammar`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplyForm {
    /// The format as the prompt shows it.
    pub shown: String,
    /// The same format as a regular expression over the whole verdict.
    pub language: String,
    /// Free text may come before the verdict (the template asks for a justification).
    pub free_text: bool,
}

/// A verdict read from text, with the replies it took.
#[derive(Clone, Debug, PartialEq)]
pub struct TextVerdict<T> {
    /// What the parser found.
    pub value: T,
    /// The judge's replies, one per attempt.
    pub raw: Vec<String>,
    /// Whether the last attempt parsed completely.
    pub parse_ok: bool,
}

impl<T> TextVerdict<T> {
    /// The replies joined for the `raw` column.
    pub fn raw_text(&self) -> String {
        self.raw.join("\n---\n")
    }
}

impl Judge {
    /// A judge with its checked templates.
    pub fn new(
        cfg: JudgeConfig,
        name: String,
        id: String,
        templates: BTreeMap<Mode, JudgeTemplate>,
        seed: u64,
    ) -> Self {
        Self {
            cfg,
            name,
            id,
            templates,
            seed,
            repeat: 0,
        }
    }

    /// The same judge making ask `repeat` of each judgment: its calls have keys (and so
    /// seeds) of their own.
    pub fn with_repeat(&self, repeat: u32) -> Self {
        Self {
            repeat,
            ..self.clone()
        }
    }

    /// The template of `mode` (the shipped one when the configuration has none).
    pub fn template(&self, mode: Mode) -> JudgeTemplate {
        self.templates
            .get(&mode)
            .cloned()
            .unwrap_or_else(|| JudgeTemplate::builtin(mode))
    }

    /// The key of a call: everything that determines its result.
    pub fn call_key(&self, mode: Mode, answers: &[&str], extra: serde_json::Value) -> String {
        let c = &self.cfg;
        let mut key = serde_json::json!({
            "judge": self.id, "template": self.template(mode).fingerprint(), "mode": mode,
            "criteria": c.criteria, "scale": c.scale, "params": self.params(0),
            "format": c.prompt_format, "retries": c.retries, "answers": answers, "extra": extra,
        });
        // Written only when not the default, so that the keys of earlier runs still match.
        if self.repeat > 0 {
            key["repeat"] = self.repeat.into();
        }
        if mode == Mode::Expected && c.expected_total == ExpectedTotal::Joint {
            key["total"] = "joint".into();
        }
        if mode.spec().samples && c.constrains() {
            key["constrained"] = true.into();
            if self.template(mode).justification {
                key["justification"] = true.into();
            }
        }
        key_of(&key)
    }

    /// The sampling values of a call with `seed`.
    pub fn params(&self, seed: u64) -> SamplingParams {
        self.cfg.params().with_seed(seed)
    }

    /// A seed for a call, from the experiment seed and the call's key.
    pub fn seed_for(&self, key: &str) -> u64 {
        derive_seed(self.seed, &["judge", key])
    }

    /// The placeholders every mode fills.
    fn common_vars(&self) -> Vec<(&'static str, String)> {
        let c = &self.cfg;
        let n = c.criteria.len() as u32;
        vec![
            (
                "criteria",
                c.criteria
                    .iter()
                    .map(|x| format!("- {x}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            ("criteria_inline", template::inline_list(&c.criteria)),
            ("scale", c.scale.to_string()),
            ("min_total", n.to_string()),
            ("max_total", (n * c.scale).to_string()),
        ]
    }

    /// The judge's input for `mode`: its template filled with the common placeholders and
    /// `vars`, as a chat (system + user) or raw text.
    pub fn input(&self, mode: Mode, vars: &[(&str, &str)]) -> Input {
        let t = self.template(mode);
        let common = self.common_vars();
        let mut all: Vec<(&str, &str)> = vars.to_vec();
        all.extend(common.iter().map(|(k, v)| (*k, v.as_str())));
        let user = t.render(&all);
        Input::new(self.cfg.prompt_format, t.system.as_deref(), &user)
    }

    /// The `Criterion: [[n]]` lines a rubric verdict consists of.
    pub fn criteria_format(&self) -> String {
        self.cfg
            .criteria
            .iter()
            .map(|c| format!("{c}: [[n]]"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Asks until `parse` accepts the reply or the retries run out, held to `form`'s
    /// language when the judge [constrains](JudgeConfig::constrains). A chat judge is
    /// reminded of the format after its reply; a raw-completion judge is asked again with
    /// the next seed.
    pub async fn ask_verdict<T>(
        &self,
        asker: &Asker,
        input: Input,
        seed: u64,
        max_tokens: usize,
        form: &ReplyForm,
        parse: impl Fn(&str) -> (T, bool),
    ) -> Result<TextVerdict<T>> {
        let format = &form.shown;
        let constraint = self.cfg.constrains().then(|| Constraint {
            regex: form.language.clone(),
            free_text: form.free_text,
        });
        let mut input = input;
        let mut raw = Vec::new();
        let mut attempt = 0u32;
        loop {
            let params = self
                .params(seed.wrapping_add(attempt as u64))
                .with_max_new_tokens(max_tokens)
                .with_constraint(constraint.clone());
            let g = asker.generate(input.clone(), params).await?;
            let (value, ok) = parse(&g.text);
            raw.push(g.text.clone());
            if ok || attempt >= self.cfg.retries {
                return Ok(TextVerdict {
                    value,
                    raw,
                    parse_ok: ok,
                });
            }
            if let Input::Chat(m) = &mut input {
                m.push(Message::assistant(g.text));
                m.push(Message::user(format!(
                    "Your reply did not follow the required format. Reply again with exactly:\n{format}"
                )));
            }
            attempt += 1;
        }
    }

    /// A row of `mode` for `answer` and `criterion`, everything else empty.
    pub fn row(
        &self,
        call: &str,
        mode: Mode,
        answer: &ResponseRecord,
        criterion: &str,
        score: Option<f64>,
    ) -> JudgmentRecord {
        JudgmentRecord {
            key: format!("{call}:{}:{criterion}", answer.key),
            call: call.to_string(),
            judge: self.name.clone(),
            judge_id: self.id.clone(),
            mode,
            template: self.template(mode).name,
            response_key: answer.key.clone(),
            other_key: None,
            model: answer.model.clone(),
            setting: answer.setting.clone(),
            other_model: None,
            other_setting: None,
            prompt_id: answer.prompt_id.clone(),
            sample: answer.sample,
            repeat: self.repeat,
            criterion: criterion.to_string(),
            score,
            expected_score: None,
            expected_low: None,
            expected_high: None,
            labels_missing: None,
            probs: None,
            mass: None,
            position: None,
            order_seed: None,
            consistent: None,
            flag: None,
            error: None,
            raw: String::new(),
            parse_ok: score.is_some(),
            attempts: 1,
        }
    }

    /// One row per criterion and a `total` row (null unless every criterion has a score).
    pub fn criteria_rows(
        &self,
        call: &str,
        mode: Mode,
        answer: &ResponseRecord,
        scores: &[Option<u32>],
    ) -> Vec<JudgmentRecord> {
        let total: Option<u32> = scores.iter().copied().sum();
        self.cfg
            .criteria
            .iter()
            .map(String::as_str)
            .zip(scores.iter().copied())
            .chain(std::iter::once((TOTAL, total)))
            .map(|(c, s)| self.row(call, mode, answer, c, s.map(f64::from)))
            .collect()
    }

    /// Null rows for an answer the call could not score, with the reason.
    pub fn failed_rows(
        &self,
        call: &str,
        mode: Mode,
        answer: &ResponseRecord,
        criteria: &[&str],
        reason: &str,
    ) -> Vec<JudgmentRecord> {
        criteria
            .iter()
            .map(|c| {
                let mut r = self.row(call, mode, answer, c, None);
                r.error = Some(reason.to_string());
                r
            })
            .collect()
    }
}

/// An error that concerns one answer only and that a rerun cannot fix: the answer gets null
/// rows with the reason. Other errors fail the call (and a rerun tries it again) or the mode.
pub fn answer_error(e: &Error) -> Option<String> {
    match e {
        Error::ContextOverflow { .. } | Error::NoLabelToken(_) => Some(e.to_string()),
        Error::Remote(r) if !r.is_transient() && matches!(r.status, Some(400 | 413 | 422)) => {
            Some(e.to_string())
        }
        _ => None,
    }
}

/// The calls of `mode` for the grouped answers (its spec's).
pub fn calls_for<'a>(
    judge: &'a Judge,
    asker: &'a Asker,
    mode: Mode,
    groups: &[Group<'a>],
) -> Vec<Call<'a>> {
    (mode.spec().calls)(judge, asker, groups)
}

impl Mode {
    /// The mode's spec: the one place a mode is mapped to what it is.
    pub fn spec(self) -> &'static ModeSpec {
        match self {
            Mode::Rubric => &rubric::SPEC,
            Mode::Listwise => &listwise::SPEC,
            Mode::Pairwise => &pairwise::SPEC,
            Mode::Expected => &expected::SPEC,
            Mode::PairwiseExpected => &pairwise_expected::SPEC,
            #[cfg(test)]
            Mode::Length => &length::SPEC,
        }
    }
}

#[cfg(test)]
mod tests;
