//! Judge prompt templates: data files (TOML) with `{placeholder}`s, checked when loaded.
//!
//! ```toml
//! name = "writeup-gpt4"          # recorded with every judgment
//! mode = "listwise"              # rubric, expected, listwise, pairwise, pairwise_expected
//! verdict = "totals"             # what the judge writes (see Verdict)
//! answer_label = "Response {k}"  # listwise: how answers are named, in the prompt and verdict
//! answer_format = "{label}: {answer}"
//! answer_separator = "\n\n"
//! prompt = """Prompt: {question} ..."""
//! ```
//!
//! Placeholders: `{question}`; `{answer}` (rubric, expected), `{answers}` and `{n}`
//! (listwise), `{answer_a}` and `{answer_b}` (pairwise modes); and in every mode `{criteria}`
//! (a bulleted list), `{criteria_inline}` (`Relevance, Coherence and Completeness`), `{scale}`,
//! `{min_total}`, `{max_total}` and `{format}` (the reply format the mode parses). A
//! placeholder the template's mode needs must be there; unknown `{names}` stay as written.

use crate::error::{Error, Result};
use crate::records::Mode;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a judge's reply holds, and so how it is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictForm {
    /// One `Criterion: [[n]]` score per criterion (per answer, for listwise).
    Criteria,
    /// One total per answer (listwise), e.g. `Response 1: 10`; criterion scores written next
    /// to it are kept too.
    Totals,
    /// `[[A]]`, `[[B]]` or `[[C]]` (tie).
    Brackets,
    /// A winner in free text: `Winner: Response A`, `Response B is the winner`, `It's a draw`.
    Winner,
}

/// A judge prompt template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeTemplate {
    /// Template name, recorded with each judgment.
    pub name: String,
    /// The mode the template is written for (a pairwise template also serves
    /// `pairwise_expected`, a rubric template `expected`).
    pub mode: Mode,
    /// What the judge's reply holds.
    #[serde(default)]
    pub verdict: Option<VerdictForm>,
    /// Optional system message (chat judges only).
    #[serde(default)]
    pub system: Option<String>,
    /// The user message (or, for a raw-completion judge, the whole prompt).
    pub prompt: String,
    /// Listwise: the name of answer `{k}` (1-based), in the prompt and in the verdict.
    #[serde(default = "default_label")]
    pub answer_label: String,
    /// Listwise: how one answer is shown in `{answers}` (`{label}`, `{answer}`).
    #[serde(default = "default_answer_format")]
    pub answer_format: String,
    /// Listwise: what goes between two answers in `{answers}`.
    #[serde(default = "default_separator")]
    pub answer_separator: String,
    /// Expected: the judge's reply up to the score of `{criterion}`.
    #[serde(default = "default_score_prefix")]
    pub score_prefix: String,
    /// Expected: what follows a score before the next criterion's prefix.
    #[serde(default = "default_score_suffix")]
    pub score_suffix: String,
    /// Pairwise expected: the judge's reply up to the verdict letter.
    #[serde(default = "default_verdict_prefix")]
    pub verdict_prefix: String,
    /// Pairwise: whether the judge may declare a tie (`[[C]]`, or a draw).
    #[serde(default = "yes")]
    pub tie: bool,
    /// The prompt asks for a justification before the verdict: a constrained verdict lets
    /// free text come first (then a newline and the verdict).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub justification: bool,
}

fn default_label() -> String {
    "Answer {k}".into()
}
fn default_answer_format() -> String {
    "[{label}]\n{answer}".into()
}
fn default_separator() -> String {
    "\n\n".into()
}
fn default_score_prefix() -> String {
    "{criterion}: [[".into()
}
fn default_score_suffix() -> String {
    "]]\n".into()
}
fn default_verdict_prefix() -> String {
    "[[".into()
}
fn yes() -> bool {
    true
}

/// The templates shipped in `data/judge/`, by name.
const BUILTIN: &[(&str, &str)] = &[
    ("rubric", include_str!("../../data/judge/rubric.toml")),
    ("expected", include_str!("../../data/judge/expected.toml")),
    ("listwise", include_str!("../../data/judge/listwise.toml")),
    ("pairwise", include_str!("../../data/judge/pairwise.toml")),
    (
        "writeup-gpt4",
        include_str!("../../data/judge/writeup-gpt4.toml"),
    ),
    (
        "writeup-app",
        include_str!("../../data/judge/writeup-app.toml"),
    ),
];

impl JudgeTemplate {
    /// Reads and checks a template file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::store::read_input(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses template TOML; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let t: JudgeTemplate = toml::from_str(text).map_err(|e| Error::invalid(origin, e))?;
        t.check(origin, t.mode)?;
        Ok(t)
    }

    /// A shipped template by name (`rubric`, `expected`, `listwise`, `pairwise`,
    /// `writeup-gpt4`, `writeup-app`).
    pub fn named(name: &str) -> Option<Self> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        Self::parse(text, &format!("builtin template {name}")).ok()
    }

    /// The names of the shipped templates.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// The template a mode uses unless the experiment names another.
    pub fn builtin(mode: Mode) -> Self {
        Self::named(mode.spec().template).expect("the shipped templates are valid (tested)")
    }

    /// The verdict form, or the mode's default.
    pub fn verdict_form(&self) -> VerdictForm {
        self.verdict
            .unwrap_or_else(|| self.mode.spec().default_form())
    }

    /// Checks that the template can serve `mode`: a compatible declared mode, a verdict form
    /// that fits, and every placeholder the mode needs.
    pub fn check(&self, origin: &str, mode: Mode) -> Result<()> {
        let spec = mode.spec();
        if !spec.template_modes.contains(&self.mode) {
            return Err(Error::config(
                format!("{origin}: mode"),
                format!(
                    "judge template `{}` is written for mode {}, not {mode}",
                    self.name, self.mode
                ),
            ));
        }
        let form = self.verdict_form();
        if !spec.forms.contains(&form) {
            return Err(Error::config(
                format!("{origin}: verdict"),
                format!("verdict form {form:?} does not fit mode {mode}"),
            ));
        }
        // Free text before a verdict is safe only where the parser reads the last verdict
        // (pairwise); scores in a justification would conflict with the verdict's own.
        if self.justification && !matches!(form, VerdictForm::Brackets | VerdictForm::Winner) {
            return Err(Error::config(
                format!("{origin}: justification"),
                format!(
                    "a justification before the verdict is for pairwise verdicts (brackets, \
                     winner), not {form:?}: its scores would conflict with the verdict's"
                ),
            ));
        }
        for p in spec.placeholders {
            if !self.prompt.contains(&format!("{{{p}}}")) {
                return Err(Error::config(
                    format!("{origin}: prompt"),
                    format!(
                        "judge template `{}` lacks the placeholder {{{p}}} needed by mode {mode}",
                        self.name
                    ),
                ));
            }
        }
        (spec.check)(self, origin)
    }

    /// Fills the placeholders in one pass; text inserted for one placeholder is never scanned
    /// again, so braces inside answers are left alone. Unknown `{names}` stay as written.
    pub fn render(&self, vars: &[(&str, &str)]) -> String {
        fill(&self.prompt, vars)
    }

    /// The label of answer `k` (1-based).
    pub fn label(&self, k: usize) -> String {
        self.answer_label.replace("{k}", &k.to_string())
    }

    /// The `{answers}` block of a listwise prompt.
    pub fn answers_block(&self, answers: &[&str]) -> String {
        answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                fill(
                    &self.answer_format,
                    &[("label", &self.label(i + 1)), ("answer", a)],
                )
            })
            .collect::<Vec<_>>()
            .join(&self.answer_separator)
    }

    /// Text that identifies the template in record keys.
    pub fn fingerprint(&self) -> String {
        // `justification` changes nothing unless the judge constrains its verdicts, and the
        // call key says so then: left out, so unconstrained keys stay as they were.
        let t = Self {
            justification: false,
            ..self.clone()
        };
        serde_json::to_string(&t).unwrap_or_else(|_| self.prompt.clone())
    }

    /// The template's own instruction text, as fragments of at least 12 characters: text a
    /// judge may echo, which parsers must never read as its verdict.
    pub fn instruction_fragments(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |s: &str| {
            for line in s.lines() {
                for piece in line.split(['.', '?', '!', ';']) {
                    let p = piece.trim();
                    if p.chars().count() >= 12 {
                        out.push(p.to_string());
                    }
                }
            }
        };
        // Text between placeholders.
        let mut rest = self.prompt.as_str();
        while let Some(open) = rest.find('{') {
            add(&rest[..open]);
            match rest[open..].find('}') {
                Some(close) => rest = &rest[open + close + 1..],
                None => {
                    rest = "";
                }
            }
        }
        add(rest);
        if let Some(s) = &self.system {
            add(s);
        }
        out.sort_by_key(|f| std::cmp::Reverse(f.len()));
        out.dedup();
        out
    }
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                if let Some((_, v)) = vars.iter().find(|(k, _)| *k == name) {
                    out.push_str(v);
                } else {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// `A, B and C`.
pub fn inline_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_fill() {
        for name in JudgeTemplate::builtin_names() {
            let t = JudgeTemplate::named(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(t.name.split('-').next(), name.split('-').next(), "{name}");
        }
        for m in Mode::ALL {
            JudgeTemplate::builtin(m).check("builtin", m).unwrap();
        }
        let t = JudgeTemplate::builtin(Mode::Rubric);
        let s = t.render(&[("question", "Q?"), ("answer", "uses {braces} {question}")]);
        assert!(s.contains("uses {braces} {question}"));
        assert!(s.contains("[Question]\nQ?"));
        assert_eq!(
            inline_list(&[
                "Relevance".into(),
                "Coherence".into(),
                "Completeness".into()
            ]),
            "Relevance, Coherence and Completeness"
        );
    }

    #[test]
    fn missing_placeholder_and_wrong_form_are_named() {
        let text = "name = \"t\"\nmode = \"pairwise\"\nprompt = \"{question} {answer_a}\"\n";
        let e = JudgeTemplate::parse(text, "j.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("j.toml: prompt") && e.contains("{answer_b}"),
            "{e}"
        );
        let text = "name = \"t\"\nmode = \"rubric\"\nverdict = \"winner\"\nprompt = \"{question} {answer}\"\n";
        let e = JudgeTemplate::parse(text, "j.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("j.toml: verdict"), "{e}");
        let t = JudgeTemplate::builtin(Mode::Pairwise);
        let e = t.check("x", Mode::Rubric).unwrap_err().to_string();
        assert!(e.contains("written for mode pairwise"), "{e}");
        // The modes' own checks: a listwise label without its number, an expected template
        // with nothing to write before the score.
        let mut t = JudgeTemplate::builtin(Mode::Listwise);
        t.answer_label = "Answer".into();
        let e = t.check("x", Mode::Listwise).unwrap_err().to_string();
        assert!(e.contains("x: answer_label") && e.contains("{k}"), "{e}");
        let mut t = JudgeTemplate::builtin(Mode::Expected);
        t.score_prefix = "  ".into();
        let e = t.check("x", Mode::Expected).unwrap_err().to_string();
        assert!(e.contains("x: score_prefix"), "{e}");
        // A rubric template serves expected mode and the other way round, and so do the two
        // pairwise modes' templates; nothing else crosses.
        for (written, used, ok) in [
            (Mode::Rubric, Mode::Expected, true),
            (Mode::Expected, Mode::Rubric, true),
            (Mode::Pairwise, Mode::PairwiseExpected, true),
            (Mode::Listwise, Mode::Rubric, false),
            (Mode::Expected, Mode::Listwise, false),
        ] {
            let got = JudgeTemplate::builtin(written).check("x", used).is_ok();
            assert_eq!(got, ok, "{written} template for {used}");
        }
    }

    #[test]
    fn writeup_template_renders_the_writeups_prompt_exactly() {
        let t = JudgeTemplate::named("writeup-gpt4").unwrap();
        let block = t.answers_block(&["a1", "a2", "a3", "a4"]);
        let crit = inline_list(&[
            "Relevance".into(),
            "Coherence".into(),
            "Completeness".into(),
        ]);
        let s = t.render(&[
            ("question", "Q"),
            ("answers", &block),
            ("criteria_inline", &crit),
            ("scale", "4"),
        ]);
        assert_eq!(
            s,
            "Prompt: Q\n\nResponse 1: a1\n\nResponse 2: a2\n\nResponse 3: a3\n\nResponse 4: a4\n\n\
             Evaluation Criteria: Relevance, Coherence and Completeness\n\n\
             Please evaluate the responses based on the selected criteria. For each criterion, \
             rate the response on a scale from 1 to 4. Answer only with the total sum for each \
             response."
        );
        assert!(t.system.is_none());
        let frags = t.instruction_fragments();
        assert!(frags
            .iter()
            .any(|f| f == "Answer only with the total sum for each response"));
    }

    #[test]
    fn a_justification_is_only_for_pairwise_verdicts() {
        let mut t = JudgeTemplate::named("listwise").unwrap();
        t.justification = true;
        let e = t.check("j.toml", Mode::Listwise).unwrap_err().to_string();
        assert!(e.contains("j.toml: justification"), "{e}");
        let app = JudgeTemplate::named("writeup-app").unwrap();
        assert!(app.justification);
        app.check("app.toml", Mode::Pairwise).unwrap();
        // It changes no key unless the judge constrains (the call key says so then).
        let plain = JudgeTemplate {
            justification: false,
            ..app.clone()
        };
        assert_eq!(app.fingerprint(), plain.fingerprint());
    }
}
