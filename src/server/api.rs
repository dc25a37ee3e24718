//! The OpenAI wire format of `serve`: checking a request into a job (rendered and tokenized
//! here, before the model is involved), and the response bodies.

use crate::backend::openai_types::{format_constraint, ChatRequest, CompletionRequest};
use crate::engine::{BatchRequest, Generation};
use crate::error::Error;
use crate::model::{Input, Message, Model};
use crate::sampling::SamplingParams;
use serde_json::{json, Value};

/// An HTTP error in OpenAI's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What is wrong, for the client.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 naming `param`.
    pub fn bad(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// Any status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let kind = match self.status {
            401 => "authentication_error",
            404 => "not_found_error",
            413 => "request_too_large",
            500 => "server_error",
            503 => "overloaded_error",
            _ => "invalid_request_error",
        };
        json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}})
    }
}

/// A checked request, ready for the model worker.
pub struct Prepared {
    /// Prompt ids and sampling values.
    pub request: BatchRequest,
    /// Whether to return log-probabilities, and how many alternatives.
    pub logprobs: Option<usize>,
    /// Whether to stream.
    pub stream: bool,
    /// Structured output: the property the reply's text goes in, as `{"<name>": "…"}`.
    pub structured: Option<String>,
}

/// The sampling fields of a request, as sent.
#[derive(Clone, Debug, Default)]
struct Wire {
    temperature: Option<f64>,
    top_p: Option<f64>,
    min_p: Option<f64>,
    top_k: Option<usize>,
    max_tokens: Option<usize>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
}

/// The sampling values a request asks for, checked (its token limit lowered to `cap`);
/// errors name the wire field.
fn sampling(w: Wire, cap: Option<usize>) -> Result<SamplingParams, ApiError> {
    let mut p = SamplingParams::neutral();
    if let Some(v) = w.temperature {
        p.temperature = v;
    }
    if let Some(v) = w.top_p {
        p.top_p = v;
    }
    if let Some(v) = w.min_p {
        p.min_p = v;
    }
    if let Some(v) = w.top_k {
        p.top_k = v;
    }
    if let Some(v) = w.max_tokens {
        p.max_new_tokens = v;
    }
    if let Some(c) = cap {
        p.max_new_tokens = p.max_new_tokens.min(c);
    }
    if let Some(v) = w.seed {
        p.seed = v;
    }
    if let Some(s) = w.stop {
        p.stop = s;
    }
    match p.validate() {
        Ok(()) => Ok(p),
        Err(Error::InvalidSampling {
            field,
            value,
            reason,
        }) => {
            // The wire name of the token limit.
            let field = if field == "max_new_tokens" {
                "max_tokens"
            } else {
                field
            };
            Err(ApiError::bad(
                format!("`{field}` = {value}: {reason}"),
                Some(field),
            ))
        }
        Err(e) => Err(ApiError::bad(e.to_string(), None)),
    }
}

/// Settings of the server that bound requests.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most tokens a request may generate (its `max_tokens` is lowered to this).
    pub max_tokens: Option<usize>,
}

fn unsupported(
    n: Option<usize>,
    frequency: Option<f64>,
    presence: Option<f64>,
) -> Result<(), ApiError> {
    if n.unwrap_or(1) != 1 {
        return Err(ApiError::bad("only n = 1 is supported", Some("n")));
    }
    for (name, v) in [
        ("frequency_penalty", frequency),
        ("presence_penalty", presence),
    ] {
        if v.unwrap_or(0.0) != 0.0 {
            return Err(ApiError::bad(
                format!("`{name}` is not supported"),
                Some(name),
            ));
        }
    }
    Ok(())
}

/// Most bytes of text a prompt may have per token of the model's context before it is
/// tokenized: natural text runs 3 to 6 bytes a token, so a longer one will not fit, and
/// tokenizing megabytes would hold a worker for seconds.
pub const BYTES_PER_TOKEN: usize = 64;

/// Refuses, before tokenizing, a prompt of `bytes` that the context could not hold.
fn not_too_long(model: &Model, bytes: usize, param: &str) -> Result<(), ApiError> {
    let context = model.context_length();
    let cap = context.saturating_mul(BYTES_PER_TOKEN);
    if bytes > cap {
        return Err(ApiError {
            status: 400,
            message: format!(
                "the prompt is {bytes} bytes; the context length is {context} tokens, and \
                 this server refuses a prompt over {cap} bytes ({BYTES_PER_TOKEN} a token) \
                 without tokenizing it"
            ),
            param: Some(param.into()),
            code: Some("context_length_exceeded"),
        });
    }
    Ok(())
}

/// The prompt's ids when they leave room to generate; the error names `param`, the field
/// that holds the prompt (`messages` or `prompt`).
fn fits(model: &Model, ids: Vec<u32>, param: &str) -> Result<Vec<u32>, ApiError> {
    let context = model.context_length();
    if ids.is_empty() || ids.len() >= context {
        return Err(ApiError {
            status: 400,
            message: format!(
                "the prompt has {} tokens; the context length is {context}",
                ids.len()
            ),
            param: Some(param.into()),
            code: Some("context_length_exceeded"),
        });
    }
    Ok(ids)
}

fn top(logprobs: Option<bool>, top_logprobs: Option<usize>) -> Result<Option<usize>, ApiError> {
    let top = top_logprobs.unwrap_or(0);
    if top > 20 {
        return Err(ApiError::bad(
            "`top_logprobs` must be at most 20",
            Some("top_logprobs"),
        ));
    }
    Ok((logprobs == Some(true)).then_some(top))
}

/// Checks a chat request and renders and tokenizes it with `model`'s template (a clone of
/// the served model: no model time is spent).
pub fn chat_job(r: &ChatRequest, model: &Model, limits: Limits) -> Result<Prepared, ApiError> {
    if r.messages.is_empty() {
        return Err(ApiError::bad(
            "`messages` must not be empty",
            Some("messages"),
        ));
    }
    unsupported(r.n, r.frequency_penalty, r.presence_penalty)?;
    let messages: Vec<Message> = r
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| m.to_message(i))
        .collect::<crate::Result<_>>()
        .map_err(|e| ApiError::bad(e.to_string(), Some("messages")))?;
    not_too_long(
        model,
        messages.iter().map(|m| m.content.len()).sum(),
        "messages",
    )?;
    let mut params = sampling(
        Wire {
            temperature: r.temperature,
            top_p: r.top_p,
            min_p: r.min_p,
            top_k: r.top_k,
            max_tokens: r.max_completion_tokens.or(r.max_tokens),
            seed: r.seed,
            stop: r.stop.clone().map(|s| s.into_vec()),
        },
        limits.max_tokens,
    )?;
    let prepared = if r.continue_final_message == Some(true) {
        let (last, head) = messages.split_last().expect("not empty");
        if last.role != "assistant" {
            return Err(ApiError::bad(
                "continue_final_message needs an assistant message last",
                Some("continue_final_message"),
            ));
        }
        model.prepare_continuation(&Input::Chat(head.to_vec()), &last.content)
    } else {
        model.prepare(&Input::Chat(messages))
    }
    .map_err(|e| ApiError::bad(e.to_string(), Some("messages")))?;
    params.stop.extend(prepared.stops);
    let structured = match format_constraint(r.response_format.as_ref())
        .map_err(|e| ApiError::bad(format!("response_format: {e}"), Some("response_format")))?
    {
        Some((name, c)) => {
            if r.stream == Some(true) {
                return Err(ApiError::bad(
                    "response_format with a JSON schema cannot be streamed",
                    Some("response_format"),
                ));
            }
            // Compiled now, so that a pattern this engine cannot decode is the client's
            // error before the request takes a place in the batch.
            crate::engine::constrain::Grammar::get(&c).map_err(|e| {
                ApiError::bad(format!("response_format: {e}"), Some("response_format"))
            })?;
            params.constraint = Some(c);
            Some(name)
        }
        None => None,
    };
    Ok(Prepared {
        request: BatchRequest {
            prompt_ids: fits(model, prepared.ids, "messages")?,
            params,
        },
        logprobs: top(r.logprobs, r.top_logprobs)?,
        stream: r.stream == Some(true),
        structured,
    })
}

/// Checks a completions request (raw text, no template).
pub fn completion_job(
    r: &CompletionRequest,
    model: &Model,
    limits: Limits,
) -> Result<Prepared, ApiError> {
    unsupported(r.n, r.frequency_penalty, r.presence_penalty)?;
    if r.stream == Some(true) {
        return Err(ApiError::bad(
            "streaming is supported on /v1/chat/completions only",
            Some("stream"),
        ));
    }
    let params = sampling(
        Wire {
            temperature: r.temperature,
            top_p: r.top_p,
            min_p: r.min_p,
            top_k: r.top_k,
            max_tokens: r.max_tokens,
            seed: r.seed,
            stop: r.stop.clone().map(|s| s.into_vec()),
        },
        limits.max_tokens,
    )?;
    not_too_long(model, r.prompt.len(), "prompt")?;
    let prepared = model
        .prepare(&Input::Raw(r.prompt.clone()))
        .map_err(|e| ApiError::bad(e.to_string(), Some("prompt")))?;
    let top_n = r.logprobs.unwrap_or(0);
    if top_n > 20 {
        return Err(ApiError::bad(
            "`logprobs` must be at most 20",
            Some("logprobs"),
        ));
    }
    Ok(Prepared {
        request: BatchRequest {
            prompt_ids: fits(model, prepared.ids, "prompt")?,
            params,
        },
        logprobs: r.logprobs.map(|_| top_n),
        stream: false,
        structured: None,
    })
}

fn token_text(m: &Model, id: u32) -> String {
    m.tokenizer().decode(&[id], false).unwrap_or_default()
}

/// The `logprobs` object of a chat choice.
pub fn chat_logprobs(g: &Generation, m: &Model) -> Value {
    let entry = |id: u32, lp: f32| {
        let text = token_text(m, id);
        json!({"token": text, "logprob": lp, "bytes": text.as_bytes()})
    };
    let content: Vec<Value> = g
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let mut e = entry(t, g.logprobs[i]);
            let tops: Vec<Value> = g
                .top_logprobs
                .get(i)
                .map(|v| v.iter().map(|&(id, lp)| entry(id, lp)).collect())
                .unwrap_or_default();
            e["top_logprobs"] = Value::Array(tops);
            e
        })
        .collect();
    json!({"content": content})
}

/// The `logprobs` object of a legacy completions choice.
pub fn completion_logprobs(g: &Generation, m: &Model) -> Value {
    let tokens: Vec<String> = g.tokens.iter().map(|&t| token_text(m, t)).collect();
    let tops: Vec<Value> = g
        .top_logprobs
        .iter()
        .map(|v| {
            let mut o = serde_json::Map::new();
            for &(id, lp) in v {
                o.insert(token_text(m, id), json!(lp));
            }
            Value::Object(o)
        })
        .collect();
    json!({"tokens": tokens, "token_logprobs": g.logprobs, "top_logprobs": tops})
}

/// `stop` or `length`.
pub fn finish_reason(g: &Generation) -> &'static str {
    match g.finish_reason {
        crate::engine::FinishReason::Length => "length",
        _ => "stop",
    }
}

/// Token counts.
pub fn usage(g: &Generation) -> Value {
    json!({
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.completion_tokens,
        "total_tokens": g.prompt_tokens + g.completion_tokens,
    })
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_errors_name_the_wire_field() {
        let w = |f: fn(&mut Wire)| {
            let mut w = Wire::default();
            f(&mut w);
            w
        };
        let e = sampling(w(|w| w.max_tokens = Some(0)), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(e.message.contains("`max_tokens`"), "{}", e.message);
        let e = sampling(w(|w| w.temperature = Some(-1.0)), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        // A huge limit is kept (generation stops at the context), unless the server caps it.
        let p = sampling(w(|w| w.max_tokens = Some(usize::MAX)), Some(64)).unwrap();
        assert_eq!(p.max_new_tokens, 64);
        let p = sampling(w(|w| w.max_tokens = Some(usize::MAX)), None).unwrap();
        assert_eq!(p.max_new_tokens, usize::MAX);
    }
}
