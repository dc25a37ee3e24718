//! The judge: prompts a judge model in one of four modes and parses its verdicts.
//!
//! - [`Mode::Rubric`]: one answer, each criterion scored 1..=scale (`Criterion: [[n]]`).
//! - [`Mode::Listwise`]: several answers in one prompt, scored per answer (the write-up's
//!   GPT-4 form); the runner shuffles the order with a recorded seed.
//! - [`Mode::Pairwise`]: A vs B, which the runner asks in both orders.
//! - [`Mode::Expected`]: the judge's next-token distribution over the score tokens at each
//!   score position (G-Eval, exact): argmax and the expectation `sum k p(k)`, no sampling.
//!
//! An unparseable verdict is re-asked up to `retries` times with a reminder of the format; if
//! it still fails, the score is null (never 0), and the raw text is kept.

pub mod parse;
pub mod template;

pub use parse::Verdict;
pub use template::JudgeTemplate;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::Message;
use crate::sampling::SamplingParams;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A grading mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each answer alone, each criterion 1..=scale.
    Rubric,
    /// All answers to a prompt in one judge prompt.
    Listwise,
    /// Two answers, both orders.
    Pairwise,
    /// Expected score from token probabilities.
    Expected,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Rubric => "rubric",
            Mode::Listwise => "listwise",
            Mode::Pairwise => "pairwise",
            Mode::Expected => "expected",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rubric" => Ok(Mode::Rubric),
            "listwise" => Ok(Mode::Listwise),
            "pairwise" => Ok(Mode::Pairwise),
            "expected" => Ok(Mode::Expected),
            other => Err(Error::config(
                "judge.modes",
                format!("unknown mode `{other}` (rubric, listwise, pairwise, expected)"),
            )),
        }
    }
}

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
fn default_max_tokens() -> usize {
    96
}
fn default_modes() -> Vec<Mode> {
    vec![Mode::Rubric]
}
fn default_true() -> bool {
    true
}

/// How to judge: the judge model, modes, criteria, scale and templates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// The judge model (bundled name, `.gguf` path or `hf://` reference).
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
    /// Judge temperature; 0 (greedy) unless set.
    #[serde(default)]
    pub temperature: f64,
    /// Most tokens in a verdict (per criterion line for listwise).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Template files per mode; the built-in `data/judge/*.toml` otherwise.
    #[serde(default)]
    pub templates: std::collections::BTreeMap<Mode, PathBuf>,
    /// Run the judge sanity check (good vs deliberately bad answers).
    #[serde(default = "default_true")]
    pub sanity_check: bool,
    /// Judge through an OpenAI-compatible endpoint instead of a local model; `model` is
    /// then only the judge's name in tables.
    #[serde(default)]
    pub endpoint: Option<crate::backend::EndpointConfig>,
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
            temperature: 0.0,
            max_tokens: default_max_tokens(),
            templates: Default::default(),
            sanity_check: true,
            endpoint: None,
        }
    }

    /// Sets the modes.
    pub fn with_modes(mut self, modes: &[Mode]) -> Self {
        self.modes = modes.to_vec();
        self
    }

    /// Turns the judge sanity check on or off.
    pub fn with_sanity_check(mut self, on: bool) -> Self {
        self.sanity_check = on;
        self
    }

    /// Checks ranges and loads each mode's template (so errors appear before any work).
    pub fn validate(&self, origin: &str) -> Result<Vec<(Mode, JudgeTemplate)>> {
        if self.criteria.is_empty() {
            return Err(Error::config(
                format!("{origin}: judge.criteria"),
                "no criteria",
            ));
        }
        if !(2..=9).contains(&self.scale) {
            return Err(Error::config(
                format!("{origin}: judge.scale"),
                format!(
                    "{} is outside 2..=9 (scores must be single digits)",
                    self.scale
                ),
            ));
        }
        if self.modes.is_empty() {
            return Err(Error::config(format!("{origin}: judge.modes"), "no modes"));
        }
        self.modes
            .iter()
            .map(|&m| {
                let t = match self.templates.get(&m) {
                    Some(p) => JudgeTemplate::load(p)?,
                    None => JudgeTemplate::builtin(m),
                };
                t.check(&format!("{origin}: judge.templates.{m}"), m)?;
                Ok((m, t))
            })
            .collect()
    }

    fn params(&self, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            max_new_tokens: self.max_tokens,
            seed,
            ..SamplingParams::neutral()
        }
    }
}

/// What a text verdict gave.
#[derive(Clone, Debug, PartialEq)]
pub struct TextVerdict<T> {
    /// Parsed scores (or verdict).
    pub value: T,
    /// The judge's raw replies, one per attempt.
    pub raw: Vec<String>,
    /// Whether the final attempt parsed completely.
    pub parse_ok: bool,
}

/// One criterion's expected score.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedScore {
    /// The most likely score.
    pub argmax: u32,
    /// `sum k p(k)` over the allowed scores.
    pub expected: f64,
    /// `p(k)` for k = 1..=scale, renormalised over the allowed tokens.
    pub probs: Vec<f64>,
    /// Probability mass the score tokens held before renormalising.
    pub mass: f64,
}

/// A judge model with its settings.
pub struct Judge {
    backend: Box<dyn Backend>,
    cfg: JudgeConfig,
    templates: Vec<(Mode, JudgeTemplate)>,
}

impl Judge {
    /// A judge over `backend`; templates are loaded and checked.
    pub fn new(backend: Box<dyn Backend>, cfg: JudgeConfig) -> Result<Self> {
        let templates = cfg.validate("judge")?;
        Ok(Self {
            backend,
            cfg,
            templates,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &JudgeConfig {
        &self.cfg
    }

    /// The judge backend's identity (for record keys).
    pub fn identity(&self) -> Result<String> {
        self.backend.identity()
    }

    /// The judge backend's name.
    pub fn name(&self) -> String {
        self.backend.name()
    }

    /// The template used for `mode`.
    pub fn template(&self, mode: Mode) -> JudgeTemplate {
        self.templates
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| JudgeTemplate::builtin(mode))
    }

    fn criteria_list(&self) -> String {
        self.cfg
            .criteria
            .iter()
            .map(|c| format!("- {c}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn rubric_format(&self) -> String {
        self.cfg
            .criteria
            .iter()
            .map(|c| format!("{c}: [[n]]"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn messages(&self, t: &JudgeTemplate, user: String) -> Vec<Message> {
        let mut m = Vec::new();
        if let Some(s) = &t.system {
            m.push(Message::system(s.clone()));
        }
        m.push(Message::user(user));
        m
    }

    fn rubric_messages(&self, question: &str, answer: &str) -> Vec<Message> {
        let t = self.template(Mode::Rubric);
        let scale = self.cfg.scale.to_string();
        let (criteria, format) = (self.criteria_list(), self.rubric_format());
        let user = t.render(&[
            ("question", question),
            ("answer", answer),
            ("scale", &scale),
            ("criteria", &criteria),
            ("format", &format),
        ]);
        self.messages(&t, user)
    }

    /// Asks until `parse` succeeds or the retries run out.
    fn ask<T>(
        &mut self,
        mut messages: Vec<Message>,
        seed: u64,
        format: &str,
        parse: impl Fn(&str) -> (T, bool),
    ) -> Result<TextVerdict<T>> {
        let mut raw = Vec::new();
        let mut attempt = 0;
        loop {
            let g = self
                .backend
                .chat(&messages, &self.cfg.params(seed + attempt as u64))?;
            let (value, ok) = parse(&g.text);
            raw.push(g.text.clone());
            if ok || attempt >= self.cfg.retries {
                return Ok(TextVerdict {
                    value,
                    raw,
                    parse_ok: ok,
                });
            }
            messages.push(Message::assistant(g.text));
            messages.push(Message::user(format!(
                "Your reply did not follow the required format. Reply again with exactly:\n{format}"
            )));
            attempt += 1;
        }
    }

    /// Rubric scores for one answer.
    pub fn rubric(
        &mut self,
        question: &str,
        answer: &str,
        seed: u64,
    ) -> Result<TextVerdict<Vec<Option<u32>>>> {
        let messages = self.rubric_messages(question, answer);
        let (criteria, scale) = (self.cfg.criteria.clone(), self.cfg.scale);
        let format = self.rubric_format();
        self.ask(messages, seed, &format, |raw| {
            let s = parse::parse_rubric(raw, &criteria, scale, &[answer]);
            let ok = s.iter().all(|x| x.is_some());
            (s, ok)
        })
    }

    /// Expected scores for one answer, or `None` if the backend has no token probabilities.
    pub fn expected(&mut self, question: &str, answer: &str) -> Result<Option<Vec<ExpectedScore>>> {
        let messages = self.rubric_messages(question, answer);
        let candidates: Vec<String> = (1..=self.cfg.scale).map(|k| k.to_string()).collect();
        let mut prefix = String::new();
        let mut out = Vec::new();
        for c in self.cfg.criteria.clone() {
            prefix.push_str(&format!("{c}: [["));
            let Some((probs, mass)) =
                self.backend
                    .next_token_distribution(&messages, &prefix, &candidates)?
            else {
                return Ok(None);
            };
            let (mut best, mut best_p) = (0usize, -1.0);
            for (i, &p) in probs.iter().enumerate() {
                if p > best_p {
                    best = i;
                    best_p = p;
                }
            }
            let expected = probs
                .iter()
                .enumerate()
                .map(|(i, p)| (i + 1) as f64 * p)
                .sum();
            let argmax = best as u32 + 1;
            prefix.push_str(&format!("{argmax}]]\n"));
            out.push(ExpectedScore {
                argmax,
                expected,
                probs,
                mass,
            });
        }
        Ok(Some(out))
    }

    /// Listwise scores: `answers` in the order shown; result `[answer][criterion]`.
    pub fn listwise(
        &mut self,
        question: &str,
        answers: &[&str],
        seed: u64,
    ) -> Result<TextVerdict<Vec<Vec<Option<u32>>>>> {
        let t = self.template(Mode::Listwise);
        let n = answers.len();
        let listing = answers
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[Answer {}]\n{}\n", i + 1, a))
            .collect::<Vec<_>>()
            .join("\n");
        let line = self
            .cfg
            .criteria
            .iter()
            .map(|c| format!("{c} [[n]]"))
            .collect::<Vec<_>>()
            .join(", ");
        let format = (1..=n)
            .map(|k| format!("Answer {k}: {line}, Total [[n]]"))
            .collect::<Vec<_>>()
            .join("\n");
        let (scale, nn, criteria_list) = (
            self.cfg.scale.to_string(),
            n.to_string(),
            self.criteria_list(),
        );
        let user = t.render(&[
            ("question", question),
            ("answers", &listing),
            ("scale", &scale),
            ("n", &nn),
            ("criteria", &criteria_list),
            ("format", &format),
        ]);
        let messages = self.messages(&t, user);
        let (criteria, sc) = (self.cfg.criteria.clone(), self.cfg.scale);
        let saved = self.cfg.max_tokens;
        self.cfg.max_tokens = saved.max(40 * n);
        let r = self.ask(messages, seed, &format, |raw| {
            let s = parse::parse_listwise(raw, n, &criteria, sc, answers);
            let ok = s.iter().all(|row| row.iter().all(|x| x.is_some()));
            (s, ok)
        });
        self.cfg.max_tokens = saved;
        r
    }

    /// One pairwise verdict with `a` shown first.
    pub fn pairwise(
        &mut self,
        question: &str,
        a: &str,
        b: &str,
        seed: u64,
    ) -> Result<TextVerdict<Option<Verdict>>> {
        let t = self.template(Mode::Pairwise);
        let criteria = self.criteria_list();
        let user = t.render(&[
            ("question", question),
            ("answer_a", a),
            ("answer_b", b),
            ("criteria", &criteria),
        ]);
        let messages = self.messages(&t, user);
        self.ask(messages, seed, "[[A]], [[B]] or [[C]]", |raw| {
            let v = parse::parse_pairwise(raw, &[a, b]);
            (v, v.is_some())
        })
    }
}
