//! The parts of the OpenAI Chat Completions wire format that llm-judge speaks, shared by the
//! client backend and the `serve` command.

use crate::error::{Error, Result};
use crate::model::Message;
use crate::sampling::Constraint;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The one property of a structured verdict (`response_format`): `{"verdict": "…"}`.
pub const VERDICT_FIELD: &str = "verdict";

/// What a free-text-first language looks like as a JSON-schema `pattern`, before its verdict
/// part (ECMA-262 and the regex crate both read `[\s\S]` as any character).
const FREE_TEXT: &str = "(?:[\\s\\S]*\n)?(?:";

/// The longest `pattern` `serve` compiles.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// A verdict's language as a structured-output request (`response_format` with a strict
/// JSON schema): one string property, [`VERDICT_FIELD`], whose `pattern` is the language
/// anchored at both ends.
pub fn verdict_format(c: &Constraint) -> Value {
    let pattern = if c.free_text {
        format!("^{FREE_TEXT}{})$", c.regex)
    } else {
        format!("^(?:{})$", c.regex)
    };
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": VERDICT_FIELD,
            "strict": true,
            "schema": {
                "type": "object",
                "properties": {VERDICT_FIELD: {"type": "string", "pattern": pattern}},
                "required": [VERDICT_FIELD],
                "additionalProperties": false,
            },
        },
    })
}

/// The language a `response_format` asks for, as `serve` reads it: `None` for none or
/// `{"type": "text"}`; a [`Constraint`] for a JSON schema of one string property with a
/// `pattern` (its property name comes back too). Anything else is refused with the reason:
/// the server would otherwise answer in a form the client did not ask for.
pub fn format_constraint(
    response_format: Option<&Value>,
) -> std::result::Result<Option<(String, Constraint)>, String> {
    let Some(rf) = response_format else {
        return Ok(None);
    };
    match rf["type"].as_str() {
        Some("text") => return Ok(None),
        Some("json_schema") => {}
        _ => {
            return Err(
                "only `text` and a `json_schema` of one string property with a \
                        `pattern` are supported"
                    .into(),
            )
        }
    }
    let schema = &rf["json_schema"]["schema"];
    let props = schema["properties"].as_object().filter(|p| p.len() == 1);
    let Some((name, prop)) = props.and_then(|p| p.iter().next()) else {
        return Err("the schema must be an object with exactly one property".into());
    };
    let (Some("string"), Some(pattern)) = (prop["type"].as_str(), prop["pattern"].as_str()) else {
        return Err(format!(
            "property `{name}` must be a string with a `pattern`"
        ));
    };
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "the pattern is {} bytes, more than the {MAX_PATTERN_BYTES} this server compiles",
            pattern.len()
        ));
    }
    // JSON-schema patterns are unanchored; a judge's are anchored at both ends, and the
    // decoder's language always is.
    let inner = pattern.strip_prefix('^').unwrap_or(pattern);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    let constraint = match inner
        .strip_prefix(FREE_TEXT)
        .and_then(|r| r.strip_suffix(')'))
    {
        Some(verdict) => Constraint {
            regex: verdict.to_string(),
            free_text: true,
        },
        None => Constraint {
            regex: inner.to_string(),
            free_text: false,
        },
    };
    Ok(Some((name.clone(), constraint)))
}

/// The verdict in a structured reply's content (`{"verdict": "…"}`), or `None` when the
/// content is not one (a server that ignored `response_format` answered in text).
pub fn verdict_of(content: &str) -> Option<String> {
    let v: Value = serde_json::from_str(content.trim()).ok()?;
    v[VERDICT_FIELD].as_str().map(str::to_string)
}

/// `stop`: one string or several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// Message content: a string, or a list of parts of which the text parts are used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<serde_json::Value>),
}

/// A chat message on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The content.
    pub content: Content,
}

impl WireMessage {
    /// Converts to a [`Message`]; non-text parts are an error.
    pub fn to_message(&self, index: usize) -> Result<Message> {
        let content = match &self.content {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    match (p["type"].as_str(), p["text"].as_str()) {
                        (Some("text"), Some(t)) => out.push_str(t),
                        _ => {
                            return Err(Error::config(
                                format!("messages[{index}].content"),
                                "only text content parts are supported",
                            ))
                        }
                    }
                }
                out
            }
        };
        if !matches!(self.role.as_str(), "system" | "user" | "assistant") {
            return Err(Error::config(
                format!("messages[{index}].role"),
                format!("unknown role `{}`", self.role),
            ));
        }
        Ok(Message {
            role: self.role.clone(),
            content,
        })
    }

    /// From a [`Message`].
    pub fn from_message(m: &Message) -> Self {
        Self {
            role: m.role.clone(),
            content: Content::Text(m.content.clone()),
        }
    }
}

/// A Chat Completions request (the fields llm-judge reads; others are ignored unless they
/// would change the result, see the server).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<WireMessage>,
    /// Temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus cutoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// min_p (vLLM, llama.cpp and llm-judge servers accept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    /// top_k (non-OpenAI servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Token limit (legacy name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Token limit (current name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<usize>,
    /// Sampler seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Return log-probabilities of the generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many alternatives per token (0-20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<usize>,
    /// Stream the reply as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Continue the final assistant message instead of starting a new one (vLLM's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_final_message: Option<bool>,
    /// Whether to open a new assistant turn after the messages (vLLM; must be false with
    /// `continue_final_message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_generation_prompt: Option<bool>,
    /// Number of choices (only 1 is supported by the llm-judge server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Must be 0 or absent for the llm-judge server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Must be 0 or absent for the llm-judge server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Structured output: the client asks for a verdict held to its form's language
    /// ([`verdict_format`]); the llm-judge server decodes it so ([`format_constraint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
}

/// A legacy Completions request (`/v1/completions`): raw text in, raw text out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The text to continue.
    pub prompt: String,
    /// Temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus cutoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// min_p.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    /// top_k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Sampler seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// How many alternatives per token to return with their log-probabilities (0-20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<usize>,
    /// Streaming; the llm-judge server streams chat completions only, and refuses it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Number of choices (only 1 is supported by the llm-judge server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Must be 0 or absent for the llm-judge server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Must be 0 or absent for the llm-judge server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_format_reads_back_as_its_constraint() {
        for c in [
            Constraint {
                regex: "\\[\\[[ABC]\\]\\]".into(),
                free_text: false,
            },
            Constraint {
                regex: "Winner: (?:Response A|Response B|draw)".into(),
                free_text: true,
            },
        ] {
            let f = verdict_format(&c);
            let pattern = f["json_schema"]["schema"]["properties"][VERDICT_FIELD]["pattern"]
                .as_str()
                .unwrap();
            assert!(
                pattern.starts_with('^') && pattern.ends_with('$'),
                "{pattern}"
            );
            // A pattern any regex engine reads: a verdict matches it, whole, and free text
            // before it only where the form allows it.
            let re = regex::Regex::new(pattern).unwrap();
            let verdict = if c.free_text { "Winner: draw" } else { "[[B]]" };
            assert!(re.is_match(verdict), "{pattern}");
            assert!(!re.is_match(&format!("{verdict}!")), "{pattern}");
            assert_eq!(re.is_match(&format!("Fine.\n{verdict}")), c.free_text);
            let (name, back) = format_constraint(Some(&f)).unwrap().unwrap();
            assert_eq!(name, VERDICT_FIELD);
            assert_eq!(back.free_text, c.free_text);
            // The same language: the verdict part as written, wrapped in a group.
            let want = if c.free_text {
                c.regex.clone()
            } else {
                format!("(?:{})", c.regex)
            };
            assert_eq!(back.regex, want);
        }
    }

    #[test]
    fn what_serve_cannot_decode_is_refused() {
        assert_eq!(format_constraint(None), Ok(None));
        assert_eq!(format_constraint(Some(&json!({"type": "text"}))), Ok(None));
        for rf in [
            json!({"type": "json_object"}),
            json!({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}),
            json!({"type": "json_schema", "json_schema": {"schema": {"properties": {
                "a": {"type": "integer"}}}}}),
            json!({"type": "json_schema", "json_schema": {"schema": {"properties": {
                "a": {"type": "string", "pattern": "x".repeat(MAX_PATTERN_BYTES + 1)}}}}}),
        ] {
            assert!(format_constraint(Some(&rf)).is_err(), "{rf}");
        }
        assert_eq!(
            verdict_of(r#" {"verdict": "[[A]]"} "#).as_deref(),
            Some("[[A]]")
        );
        assert_eq!(verdict_of("[[A]]"), None);
        assert_eq!(verdict_of(r#"{"other": 1}"#), None);
    }
}
