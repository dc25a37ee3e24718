//! The one error type of the library.
//!
//! Every variant carries what a user needs to fix the problem: the file, the field or the
//! line, and the value that was rejected. The binary adds context with `anyhow`; the library
//! never panics on bad input.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in llm-judge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model file does not exist.
    #[error("model file not found: {0}")]
    ModelNotFound(PathBuf),
    /// A file is not a GGUF file, or is damaged.
    #[error("{path}: not a valid GGUF file: {reason}")]
    InvalidGguf {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A GGUF metadata key is missing or has the wrong type.
    #[error("{path}: GGUF metadata `{key}`: {reason}")]
    GgufMetadata {
        /// The file involved.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Hugging Face checkpoint folder is incomplete or describes something unsupported.
    #[error("{path}: Hugging Face checkpoint: {reason}")]
    InvalidCheckpoint {
        /// The folder or file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A LoRA adapter is malformed or does not fit its base model.
    #[error("{path}: LoRA adapter: {reason}")]
    InvalidAdapter {
        /// The adapter folder or file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The requested device cannot be used.
    #[error("device `{name}`: {reason}")]
    Device {
        /// The device as asked for (`cuda:1`).
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The model's architecture is not implemented.
    #[error("{path}: unsupported architecture `{arch}` (supported: llama, qwen2, gemma3)")]
    UnsupportedArchitecture {
        /// The file involved.
        path: PathBuf,
        /// The architecture named in `general.architecture`.
        arch: String,
    },
    /// A model name is neither a path, a hub reference nor a bundled model.
    #[error("unknown model `{name}`: {hint}")]
    UnknownModel {
        /// The name given.
        name: String,
        /// What would be accepted.
        hint: String,
    },
    /// A sampling value is out of range.
    #[error("invalid sampling value `{field}` = {value}: {reason}")]
    InvalidSampling {
        /// The field name.
        field: &'static str,
        /// The rejected value, as text.
        value: String,
        /// The accepted range.
        reason: String,
    },
    /// An unknown sampling preset name.
    #[error("unknown sampling preset `{0}` (known: p1, p2, greedy, neutral)")]
    UnknownPreset(String),
    /// The tokenizer could not be built or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be rendered.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// The prompt does not fit the model's context window.
    #[error("prompt has {prompt} tokens, which leaves no room in the context of {context} tokens")]
    ContextOverflow {
        /// Prompt length in tokens.
        prompt: usize,
        /// Model context length.
        context: usize,
    },
    /// A tensor operation failed inside candle.
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    /// Downloading from the Hugging Face hub failed.
    #[error("hub download of {repo}/{file}: {reason}")]
    Hub {
        /// Repository id.
        repo: String,
        /// File within the repository.
        file: String,
        /// What went wrong.
        reason: String,
    },
    /// Fetching the bundled models failed.
    #[error("fetch-models: {0}")]
    Fetch(String),
    /// A checksum did not match.
    #[error("{path}: sha256 is {actual}, expected {expected}")]
    Checksum {
        /// The file involved.
        path: PathBuf,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// A configuration or data file is malformed; `location` names the file and line or field.
    #[error("{location}: {reason}")]
    Config {
        /// File plus line or field, e.g. `data/prompts.jsonl:3` or `exp.toml: judge.mode`.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A remote endpoint failed (after its retries).
    #[error("{0}")]
    Remote(RemoteError),
    /// The backend cannot read token probabilities at all (a server without `logprobs`, or
    /// one that ignores an assistant prefix): probability modes cannot run on it.
    #[error("no token probabilities: {0}")]
    NoLogprobs(String),
    /// No label of a distribution query was among the judge's likely next tokens: this one
    /// answer cannot be scored from probabilities.
    #[error("no label token: {0}")]
    NoLabelToken(String),
    /// A server reported a log-probability no probability has (positive, or not a finite
    /// number): its token probabilities cannot be trusted for this call.
    #[error("impossible log-probability: {0}")]
    BadLogprob(String),
    /// A file, line or field could not be read as what it should be; the cause is kept as
    /// the error's source. Its message is clipped (a parser may quote a 20 MB line whole).
    #[error("{location}: {}", clipped(source.as_ref()))]
    Invalid {
        /// File plus line or field, e.g. `data/prompts.jsonl:3` or `exp.toml: models[0].source`.
        location: String,
        /// Why it could not be read (a JSON or TOML error, a bad model name, ...).
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A table operation failed (polars, or writing a table file).
    #[error("table: {0}")]
    Table(String),
    /// Something llm-judge itself got wrong: reported as an error instead of a panic.
    #[error("internal error (a bug in llm-judge; please report it): {0}")]
    Internal(String),
    /// A chart could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
}

/// Longest line of a quoted cause, in characters.
const CLIP_LINE: usize = 300;
/// Most lines of a quoted cause.
const CLIP_LINES: usize = 40;

/// `e`'s message with each line cut to [`CLIP_LINE`] characters and at most [`CLIP_LINES`]
/// lines, saying how much was cut.
fn clipped(e: &(dyn std::error::Error + Send + Sync)) -> String {
    let text = e.to_string();
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i == CLIP_LINES {
            out.push(format!(
                "[{} more lines]",
                text.lines().count() - CLIP_LINES
            ));
            break;
        }
        let n = line.chars().count();
        if n > CLIP_LINE {
            let head: String = line.chars().take(CLIP_LINE).collect();
            out.push(format!("{head}[… {} more characters]", n - CLIP_LINE));
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\n")
}

/// A failed request to a remote endpoint: what the server (or the connection) said.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteError {
    /// Where the request went (without credentials).
    pub url: String,
    /// The HTTP status, or `None` when no response came (connection refused, timeout).
    pub status: Option<u16>,
    /// The error's `type` or `code` from an OpenAI-style error body, when there is one.
    pub kind: Option<String>,
    /// The error message (with any API key redacted).
    pub message: String,
    /// Attempts made, retries included.
    pub attempts: u32,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.url)?;
        if let Some(s) = self.status {
            write!(f, "HTTP {s}: ")?;
        }
        write!(f, "{}", self.message)?;
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

impl RemoteError {
    /// Whether trying again later may succeed: no response at all, 408, 429, or a 5xx.
    pub fn is_transient(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s == 408 || s == 429 || s >= 500,
        }
    }
}

impl Error {
    /// Whether running again may fix this failure (network trouble, rate limits, server
    /// errors); configuration and input errors need a change instead.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Remote(r) => r.is_transient(),
            Error::Io { .. } => true,
            _ => false,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// `source` at `location`, keeping `source` as the cause.
    pub fn invalid(
        location: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Invalid {
            location: location.into(),
            source: source.into(),
        }
    }

    /// A configuration error at `location`.
    pub fn config(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            location: location.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_cause_is_clipped_to_what_a_terminal_can_show() {
        // A TOML file whose one line is 2 MB: the parser quotes the line.
        let line = format!("name = {}", "x".repeat(2 << 20));
        let e = toml::from_str::<toml::Value>(&line).unwrap_err();
        assert!(e.to_string().len() > 2 << 20);
        let msg = Error::invalid("exp.toml", e).to_string();
        assert!(msg.starts_with("exp.toml: "), "{msg}");
        assert!(msg.len() < 5_000, "{} bytes", msg.len());
        assert!(msg.contains("more characters]"), "{msg}");
    }
}
