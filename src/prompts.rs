//! Prompt sets: JSONL files with one `{"id", "category", "prompt", "reference"?}` per line.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// One instruction to answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// Unique id within the set.
    pub id: String,
    /// Free-form category (e.g. `cooking`).
    #[serde(default)]
    pub category: String,
    /// The user's instruction.
    pub prompt: String,
    /// A known-good answer, used by the judge sanity check.
    #[serde(default)]
    pub reference: Option<String>,
}

/// Reads a prompt set. Errors name the file and line.
pub fn load_prompts(path: &Path) -> Result<Vec<Prompt>> {
    let text = crate::store::read_input(path)?;
    parse_prompts(&text, &path.display().to_string())
}

/// Parses JSONL prompt text; `origin` names the source in errors.
pub fn parse_prompts(text: &str, origin: &str) -> Result<Vec<Prompt>> {
    // A UTF-8 byte-order mark (as some editors write) is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let loc = format!("{origin}:{}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let p: Prompt = serde_json::from_str(line).map_err(|e| Error::invalid(&loc, e))?;
        if p.id.trim().is_empty() {
            return Err(Error::config(&loc, "`id` is empty"));
        }
        if p.id.trim() != p.id {
            // `"a"` and `"a "` would be two prompts that read as one in every table.
            return Err(Error::config(
                &loc,
                format!("`id` {:?} has leading or trailing spaces", p.id),
            ));
        }
        if p.prompt.trim().is_empty() {
            return Err(Error::config(&loc, "`prompt` is empty"));
        }
        if !seen.insert(p.id.clone()) {
            return Err(Error::config(&loc, format!("duplicate id `{}`", p.id)));
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err(Error::config(origin, "no prompts in file"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writeup_prompts_are_verbatim() {
        let want = [
            "Describe step-by-step how to set up a tent in a windy environment.",
            "Explain how to bake a chocolate cake without using eggs.",
            "Provide instructions for troubleshooting a laptop that won\u{2019}t turn on.",
            "Teach a beginner how to solve a Rubik\u{2019}s Cube in simple steps.",
            "Give detailed instructions for building a birdhouse using basic tools.",
            "Design a beginner-friendly 15-minute workout routine that requires no equipment.",
            "Explain how to properly season and cook a medium-rare steak.",
            "Write a step-by-step guide for setting up a local Git repository and pushing code to GitHub.",
            "Provide instructions for administering first aid to someone with a sprained ankle.",
            "Outline a simple plan for a beginner to learn Spanish in 30 days.",
        ];
        let got = parse_prompts(include_str!("../data/prompts/writeup.jsonl"), "writeup").unwrap();
        let prompts: Vec<&str> = got.iter().map(|p| p.prompt.as_str()).collect();
        assert_eq!(prompts, want);
        // Every reference is long enough for the sanity check to truncate and shuffle.
        assert!(got
            .iter()
            .all(|p| p.reference.as_deref().unwrap().split_whitespace().count() >= 40));
    }

    #[test]
    fn bad_lines_are_located() {
        let ok = "{\"id\":\"a\",\"prompt\":\"x\"}\n\n{\"id\":\"b\",\"category\":\"c\",\"prompt\":\"y\",\"reference\":\"z\"}\n";
        assert_eq!(parse_prompts(ok, "p.jsonl").unwrap().len(), 2);
        let cases = [
            ("{\"id\":\"a\",\"prompt\":\"x\"}\n{not json}\n", "p.jsonl:2"),
            ("{\"id\":\"a\"}\n", "p.jsonl:1"),
            ("{\"id\":\"a\",\"prompt\":\"x\",\"extra\":1}\n", "p.jsonl:1"),
            (
                "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\",\"prompt\":\"y\"}\n",
                "p.jsonl:2",
            ),
            ("{\"id\":\"a\",\"prompt\":\"  \"}\n", "p.jsonl:1"),
            (
                "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a \",\"prompt\":\"y\"}\n",
                "p.jsonl:2",
            ),
        ];
        for (text, loc) in cases {
            let e = parse_prompts(text, "p.jsonl").unwrap_err().to_string();
            assert!(e.starts_with(loc), "{e}");
        }
    }
}
