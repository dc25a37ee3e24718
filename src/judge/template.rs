//! Judge prompt templates: data files (TOML) with `{placeholder}`s, checked when loaded.

use super::Mode;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// A judge prompt template.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeTemplate {
    /// Template name, recorded with each judgment.
    pub name: String,
    /// The mode the template is written for.
    pub mode: Mode,
    /// Optional system message.
    pub system: Option<String>,
    /// The user message with placeholders.
    pub prompt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    name: String,
    mode: Mode,
    system: Option<String>,
    prompt: String,
}

impl Mode {
    /// Placeholders a template for this mode must contain.
    pub fn required_placeholders(self) -> &'static [&'static str] {
        match self {
            Mode::Rubric | Mode::Expected => &["question", "answer"],
            Mode::Listwise => &["question", "answers"],
            Mode::Pairwise => &["question", "answer_a", "answer_b"],
        }
    }
}

const RUBRIC: &str = include_str!("../../data/judge/rubric.toml");
const LISTWISE: &str = include_str!("../../data/judge/listwise.toml");
const PAIRWISE: &str = include_str!("../../data/judge/pairwise.toml");

impl JudgeTemplate {
    /// Reads and checks a template file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses template TOML; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let f: TemplateFile =
            toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        let t = Self {
            name: f.name,
            mode: f.mode,
            system: f.system,
            prompt: f.prompt,
        };
        t.check(origin, t.mode)?;
        Ok(t)
    }

    /// Checks that the template has every placeholder `mode` needs.
    pub fn check(&self, origin: &str, mode: Mode) -> Result<()> {
        for p in mode.required_placeholders() {
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
        Ok(())
    }

    /// The template shipped in `data/judge/` for a mode.
    pub fn builtin(mode: Mode) -> Self {
        let text = match mode {
            Mode::Rubric | Mode::Expected => RUBRIC,
            Mode::Listwise => LISTWISE,
            Mode::Pairwise => PAIRWISE,
        };
        Self::parse(text, "builtin").expect("built-in templates are valid")
    }

    /// Fills the placeholders in one pass; text inserted for one placeholder is never scanned
    /// again, so braces inside answers are left alone. Unknown `{names}` stay as written.
    pub fn render(&self, vars: &[(&str, &str)]) -> String {
        fill(&self.prompt, vars)
    }

    /// Text that identifies the template in record keys.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.name,
            self.mode,
            self.system.as_deref().unwrap_or(""),
            self.prompt
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_fill() {
        for m in [Mode::Rubric, Mode::Listwise, Mode::Pairwise, Mode::Expected] {
            JudgeTemplate::builtin(m);
        }
        let t = JudgeTemplate::builtin(Mode::Rubric);
        let s = t.render(&[("question", "Q?"), ("answer", "uses {braces} {question}")]);
        assert!(s.contains("uses {braces} {question}"));
        assert!(s.contains("[Question]\nQ?"));
    }

    #[test]
    fn missing_placeholder_is_named() {
        let text = "name = \"t\"\nmode = \"pairwise\"\nprompt = \"{question} {answer_a}\"\n";
        let e = JudgeTemplate::parse(text, "j.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("j.toml: prompt"), "{e}");
        assert!(e.contains("{answer_b}"), "{e}");
    }
}
