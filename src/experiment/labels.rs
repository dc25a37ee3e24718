//! Human labels (`labels = "file.jsonl"` in an experiment): pairwise preferences between two
//! cells' answers to one prompt, one JSON object per line; blank lines and lines starting
//! with `#` are comments.
//!
//! ```text
//! {"prompt_id": "git-push", "a": "smollm2-135m/p1", "b": "qwen2.5-0.5b/p1", "preferred": "b"}
//! ```
//!
//! `preferred` is `a`, `b` or `tie`. `a_response` and `b_response` (optional) pin the
//! labelled answers by their `response_id`: a label whose answers are not the run's (another
//! seed, another answer length) is stale and is left out, with a count, rather than applied
//! to answers nobody read. The run reports the judge's agreement with the labels and a win
//! rate corrected for the judge's measured error ([`crate::analysis::calibration`]).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which answer a human preferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preferred {
    /// Cell A's answer.
    A,
    /// Cell B's answer.
    B,
    /// Neither.
    Tie,
}

impl Preferred {
    /// B's win: 0, 0.5 or 1.
    pub fn b_wins(self) -> f64 {
        match self {
            Preferred::A => 0.0,
            Preferred::Tie => 0.5,
            Preferred::B => 1.0,
        }
    }
}

/// One human judgment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanLabel {
    /// Prompt id.
    pub prompt_id: String,
    /// Cell A, `model/setting`.
    pub a: String,
    /// Cell B, `model/setting`.
    pub b: String,
    /// The better answer.
    pub preferred: Preferred,
    /// Cell A's answer that was read (`response_id`), when pinned.
    #[serde(default)]
    pub a_response: Option<String>,
    /// Cell B's answer that was read, when pinned.
    #[serde(default)]
    pub b_response: Option<String>,
    /// Why, in a few words.
    #[serde(default)]
    pub note: Option<String>,
}

/// Reads a label file; an error names the file and line.
pub fn load_labels(path: &Path) -> Result<Vec<HumanLabel>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut out: Vec<HumanLabel> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let l: HumanLabel =
            serde_json::from_str(line).map_err(|e| Error::config(&at, e.to_string()))?;
        for (field, cell) in [("a", &l.a), ("b", &l.b)] {
            if cell
                .split_once('/')
                .is_none_or(|(m, s)| m.is_empty() || s.is_empty())
            {
                return Err(Error::config(
                    format!("{at}: {field}"),
                    format!("`{cell}` is not `model/setting`"),
                ));
            }
        }
        if l.a == l.b {
            return Err(Error::config(&at, "a and b are the same cell"));
        }
        if out
            .iter()
            .any(|o| o.prompt_id == l.prompt_id && o.a == l.a && o.b == l.b)
        {
            return Err(Error::config(
                &at,
                format!("a second label for {} vs {} on `{}`", l.b, l.a, l.prompt_id),
            ));
        }
        out.push(l);
    }
    if out.is_empty() {
        return Err(Error::config(path.display().to_string(), "holds no label"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_with_comments_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("l.jsonl");
        let good = r#"{"prompt_id": "q", "a": "m/p1", "b": "m/p2", "preferred": "tie"}"#;
        std::fs::write(&p, format!("# written by hand\n\n{good}\n")).unwrap();
        let l = load_labels(&p).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].preferred.b_wins(), 0.5);
        for (bad, says) in [
            (
                r#"{"prompt_id": "q", "a": "m", "b": "m/p2", "preferred": "a"}"#,
                "not `model/setting`",
            ),
            (
                r#"{"prompt_id": "q", "a": "m/p1", "b": "m/p2", "preferred": "c"}"#,
                "unknown variant",
            ),
            (
                r#"{"prompt_id": "q", "a": "m/p1", "b": "m/p2", "preferred": "a", "x": 1}"#,
                "unknown field",
            ),
            (good, "a second label"),
        ] {
            std::fs::write(&p, format!("{good}\n{bad}\n")).unwrap();
            let e = load_labels(&p).unwrap_err().to_string();
            assert!(e.contains("l.jsonl:2") && e.contains(says), "{e}");
        }
        std::fs::write(&p, "# nothing\n").unwrap();
        assert!(load_labels(&p)
            .unwrap_err()
            .to_string()
            .contains("holds no label"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
