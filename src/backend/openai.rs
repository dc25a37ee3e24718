//! A client for any OpenAI-compatible endpoint (OpenAI, vLLM, TGI, llama.cpp's server,
//! `llm-judge serve`): chats through `/chat/completions`, raw text through `/completions`.
//!
//! Failed requests (408, 429, 5xx, dropped connections, timeouts) are retried with
//! exponential backoff and jitter, honouring a sane `Retry-After`; several base URLs
//! (replicas) are used in turn, and a batch keeps `in_flight` requests going per replica.
//! The API key is read from an environment variable, sent only in the `Authorization` header,
//! and redacted from every error text; URLs are shown without credentials.

use super::openai_types::{
    verdict_format, verdict_of, ChatRequest, CompletionRequest, Stop, WireMessage,
};
use super::{Backend, LabelDistribution, LabelQuery};
use crate::engine::{FinishReason, Generation, Timing};
use crate::error::{Error, RemoteError, Result};
use crate::model::{Input, Message, TemplateKind};
use crate::sampling::SamplingParams;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, Instant};

fn default_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_timeout() -> f64 {
    120.0
}
fn default_retries() -> u32 {
    4
}
fn one() -> usize {
    1
}
fn default_max_response_bytes() -> usize {
    DEFAULT_MAX_RESPONSE_BYTES
}

/// The largest reply body read from an endpoint unless configured otherwise: a judge's
/// verdict or an answer of a few thousand tokens is a few KB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 << 20;
/// Shortest per-request timeout: below it every call would time out, and no rerun helps.
const MIN_TIMEOUT_S: f64 = 0.1;

/// Longest wait between retries, whatever the server asks for.
const MAX_WAIT_S: f64 = 60.0;

/// How far above 0 a reported log-probability may be (rounding) before it is refused.
const LOGPROB_SLACK: f64 = 1e-4;

/// Where and how to reach an endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Base URLs ending in `/v1`; several are replicas used in turn.
    pub base_urls: Vec<String>,
    /// The model name the server expects.
    pub model: String,
    /// Environment variable holding the API key (default `OPENAI_API_KEY`; unset is no key).
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// Per-request timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Retries after a failed attempt.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Base backoff in seconds (doubled per retry, plus jitter); 0.5 when unset.
    #[serde(default)]
    pub backoff_s: Option<f64>,
    /// Requests in flight at once per base URL.
    #[serde(default = "one")]
    pub in_flight: usize,
    /// At most this many requests per second to the endpoint, all replicas together.
    #[serde(default)]
    pub requests_per_s: Option<f64>,
    /// Largest reply body read, in bytes (default 8 MiB); a larger one fails its call.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// What the endpoint charges, for the cost of each stage (`price = { input_per_mtok =
    /// 2.5, output_per_mtok = 10 }`, per million tokens, in any one currency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

/// An endpoint's price per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_mtok: f64,
    /// Per million completion tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of `usage`.
    pub fn cost(&self, usage: super::Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_mtok
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1e6
    }
}

impl EndpointConfig {
    /// One endpoint, default settings.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_urls: vec![base_url.into()],
            model: model.into(),
            api_key_env: default_key_env(),
            timeout_s: default_timeout(),
            retries: default_retries(),
            backoff_s: None,
            in_flight: 1,
            requests_per_s: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            price: None,
        }
    }

    /// Checks every field; errors name `location` and the field.
    pub fn validate(&self, location: &str) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::config(format!("{location}.{field}"), why));
        if self.base_urls.is_empty() {
            return bad("base_urls", "no base URL".into());
        }
        for u in &self.base_urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return bad(
                    "base_urls",
                    format!("`{}` is not an http(s) URL", strip_userinfo(u)),
                );
            }
        }
        if self.model.trim().is_empty() {
            return bad("model", "is empty".into());
        }
        if let Some(p) = &self.price {
            for (field, v) in [
                ("input_per_mtok", p.input_per_mtok),
                ("output_per_mtok", p.output_per_mtok),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return bad(&format!("price.{field}"), format!("{v} is not a price"));
                }
            }
        }
        if !(self.timeout_s.is_finite() && (MIN_TIMEOUT_S..=86_400.0).contains(&self.timeout_s)) {
            return bad(
                "timeout_s",
                format!(
                    "{} is not in [{MIN_TIMEOUT_S}, 86400] seconds",
                    self.timeout_s
                ),
            );
        }
        if !(1024..=(1 << 30)).contains(&self.max_response_bytes) {
            return bad(
                "max_response_bytes",
                format!(
                    "{} is not in [1024, 1073741824] bytes",
                    self.max_response_bytes
                ),
            );
        }
        if let Some(b) = self.backoff_s {
            if !(b.is_finite() && (0.0..=MAX_WAIT_S).contains(&b)) {
                return bad(
                    "backoff_s",
                    format!("{b} is not in [0, {MAX_WAIT_S}] seconds"),
                );
            }
        }
        if !(1..=256).contains(&self.in_flight) {
            return bad("in_flight", format!("{} is not in 1..=256", self.in_flight));
        }
        if self.retries > 100 {
            return bad("retries", format!("{} is more than 100", self.retries));
        }
        if let Some(r) = self.requests_per_s {
            if !(r.is_finite() && (1e-3..=1e6).contains(&r)) {
                return bad("requests_per_s", format!("{r} is not in [0.001, 1000000]"));
            }
        }
        Ok(())
    }

    /// The identity of what answers: first base URL (without credentials) and model.
    pub fn identity(&self) -> String {
        format!(
            "openai:{}:{}",
            self.base_urls
                .first()
                .map(|u| strip_userinfo(u))
                .unwrap_or_default(),
            self.model
        )
    }
}

/// `scheme://user:password@host/path` without the `user:password@`.
pub fn strip_userinfo(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}{}", &url[..start], &url[start + at + 1..]),
        None => url.to_string(),
    }
}

/// The user and password in a URL's authority (`user:pass@`), percent-decoded; `None`
/// without one.
fn userinfo(url: &str) -> Option<(String, String)> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = url[start..end].rfind('@')?;
    let info = &url[start..start + at];
    let (user, pass) = info.split_once(':').unwrap_or((info, ""));
    Some((percent_decode(user), percent_decode(pass)))
}

/// `%XX` sequences decoded (invalid ones kept as written), as UTF-8 (lossy).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every byte outside RFC 3986's unreserved set as `%XX` (upper-case hex, as URL
/// normalisers write it).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// Spaces requests out to at most `rate` per second, shared between clients.
#[derive(Clone, Debug, Default)]
pub struct RateLimiter {
    interval: Option<Duration>,
    next: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

impl RateLimiter {
    /// A limiter for `rate` requests per second (`None`, non-finite or non-positive: none).
    pub fn new(rate: Option<f64>) -> Self {
        Self {
            interval: rate
                .filter(|r| r.is_finite() && *r > 0.0)
                .and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok()),
            next: Default::default(),
        }
    }

    /// Waits until the next request may start.
    pub fn wait(&self) {
        let Some(iv) = self.interval else { return };
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + iv);
            at
        };
        let now = Instant::now();
        if start > now {
            std::thread::sleep(start - now);
        }
    }
}

/// A remote model.
pub struct OpenAiBackend {
    cfg: EndpointConfig,
    api_key: Option<String>,
    agent: ureq::Agent,
    next: usize,
    limiter: RateLimiter,
    /// The `usage` the endpoint's replies reported so far.
    used: super::Usage,
    /// Whether to ask for structured output (`response_format`) where a verdict has a
    /// language: true until the endpoint refuses it once (shared by the batch's workers).
    structured: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self
            .cfg
            .base_urls
            .iter()
            .map(|u| strip_userinfo(u))
            .collect();
        f.debug_struct("OpenAiBackend")
            .field("base_urls", &urls)
            .field("model", &self.cfg.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why an attempt failed, and whether another may succeed.
struct Attempt {
    error: RemoteError,
    wait: Option<Duration>,
}

/// A `Retry-After` value in seconds, if it is a sane number.
fn retry_after(v: &str) -> Option<Duration> {
    let s: f64 = v.trim().parse().ok()?;
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(MAX_WAIT_S)))
}

impl OpenAiBackend {
    /// A client; the key is read from `cfg.api_key_env` now.
    pub fn new(cfg: EndpointConfig) -> Result<Self> {
        cfg.validate("endpoint")?;
        let api_key = std::env::var(&cfg.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs_f64(cfg.timeout_s))
            .build();
        let limiter = RateLimiter::new(cfg.requests_per_s);
        Ok(Self {
            cfg,
            api_key,
            agent,
            next: 0,
            limiter,
            used: super::Usage::default(),
            structured: Default::default(),
        }
        .with_structured(true))
    }

    /// Shares a rate limiter with other clients of the same endpoint.
    pub fn with_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// Asks for structured output where a verdict has a language (the default), or never.
    pub fn with_structured(self, on: bool) -> Self {
        self.structured
            .store(on, std::sync::atomic::Ordering::Relaxed);
        self
    }

    fn asks_structured(&self, params: &SamplingParams) -> bool {
        params.constraint.is_some() && self.structured.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `text` with the API key, any bearer or basic credential, and every form of a base
    /// URL's password (as written, percent-decoded, percent-encoded, and inside a Basic
    /// header) replaced by `[redacted]`.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        if let Some(k) = &self.api_key {
            out = out.replace(k.as_str(), "[redacted]");
        }
        for url in &self.cfg.base_urls {
            let Some((user, pass)) = userinfo(url) else {
                continue;
            };
            let raw = url
                .split_once("://")
                .and_then(|(_, rest)| rest.rsplit_once('@'))
                .and_then(|(info, _)| info.split_once(':'))
                .map(|(_, p)| p.to_string())
                .unwrap_or_default();
            let basic = crate::plot::base64(format!("{user}:{pass}").as_bytes());
            // Longest first, so that a form inside another is not left half-replaced.
            let mut forms = [basic, raw, percent_encode(&pass), pass.clone()];
            forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
            for f in forms.iter().filter(|f| f.chars().count() >= 2) {
                out = out.replace(f.as_str(), "[redacted]");
            }
        }
        redact_bearer(&out)
    }

    /// The `Authorization` header of a request to `base`: the API key as a bearer token,
    /// else the URL's user and password as Basic credentials (never in the URL the HTTP
    /// client sees, so no error text or normalised URL can carry them).
    fn authorization(&self, base: &str) -> Option<String> {
        if let Some(k) = &self.api_key {
            return Some(format!("Bearer {k}"));
        }
        let (user, pass) = userinfo(base)?;
        Some(format!(
            "Basic {}",
            crate::plot::base64(format!("{user}:{pass}").as_bytes())
        ))
    }

    fn post_once(&mut self, path: &str, body: &Value) -> std::result::Result<Value, Attempt> {
        self.limiter.wait();
        let base = self.cfg.base_urls[self.next % self.cfg.base_urls.len()].clone();
        self.next += 1;
        // Credentials go in a header: the URL the client sees (and reports) has none.
        let url = strip_userinfo(&format!("{}/{path}", base.trim_end_matches('/')));
        let shown = url.clone();
        let fail = |status, kind, message: String, wait| Attempt {
            error: RemoteError {
                url: shown.clone(),
                status,
                kind,
                message,
                attempts: 1,
            },
            wait,
        };
        let mut req = self
            .agent
            .post(&url)
            .set("Content-Type", "application/json");
        if let Some(auth) = self.authorization(&base) {
            req = req.set("Authorization", &auth);
        }
        match req.send_string(&body.to_string()) {
            Ok(resp) => read_json(resp, self.cfg.max_response_bytes)
                .map_err(|(status, message)| fail(status, None, self.redact(&message), None)),
            Err(ureq::Error::Status(code, resp)) => {
                let wait = resp.header("Retry-After").and_then(retry_after);
                let text = resp.into_string().unwrap_or_default();
                let parsed = serde_json::from_str::<Value>(&text).ok();
                let err = parsed.as_ref().map(|v| &v["error"]);
                let message = err
                    .and_then(|e| e["message"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| text.chars().take(2000).collect());
                let kind = err.and_then(|e| {
                    e["type"]
                        .as_str()
                        .or_else(|| e["code"].as_str())
                        .map(str::to_string)
                });
                Err(fail(Some(code), kind, self.redact(&message), wait))
            }
            Err(e) => {
                // ureq's transport errors name the URL (with its credentials); say it once.
                let msg = e
                    .to_string()
                    .replace(&url, "")
                    .trim_start_matches(':')
                    .trim()
                    .to_string();
                Err(fail(None, None, self.redact(&msg), None))
            }
        }
    }

    /// Posts a request with retries; the error names the last failure and the attempts.
    pub fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        let base = self.cfg.backoff_s.unwrap_or(0.5);
        let mut attempt = 0u32;
        loop {
            match self.post_once(path, body) {
                Ok(v) => {
                    let count = |k: &str| v["usage"][k].as_u64().unwrap_or(0);
                    // Saturating: a server's absurd count must not overflow the tally.
                    let u = &mut self.used;
                    u.prompt_tokens = u.prompt_tokens.saturating_add(count("prompt_tokens"));
                    u.completion_tokens = u
                        .completion_tokens
                        .saturating_add(count("completion_tokens"));
                    return Ok(v);
                }
                Err(a) if a.error.is_transient() && attempt < self.cfg.retries => {
                    let backoff = (base * 2f64.powi(attempt.min(30) as i32)).min(MAX_WAIT_S);
                    let jitter = rand::rng().random_range(0.0..=backoff.max(1e-9));
                    let wait = a.wait.unwrap_or_else(|| {
                        Duration::from_secs_f64((backoff + jitter).min(MAX_WAIT_S))
                    });
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(mut a) => {
                    a.error.attempts = attempt + 1;
                    return Err(Error::Remote(a.error));
                }
            }
        }
    }

    fn chat_request(&self, messages: &[Message], params: &SamplingParams) -> ChatRequest {
        ChatRequest {
            model: Some(self.cfg.model.clone()),
            messages: messages.iter().map(WireMessage::from_message).collect(),
            temperature: Some(params.temperature),
            top_p: (params.top_p < 1.0).then_some(params.top_p),
            min_p: (params.min_p > 0.0).then_some(params.min_p),
            top_k: (params.top_k > 0).then_some(params.top_k),
            max_tokens: Some(params.max_new_tokens),
            seed: Some(params.seed),
            stop: (!params.stop.is_empty()).then(|| Stop::Many(params.stop.clone())),
            response_format: params
                .constraint
                .as_ref()
                .filter(|_| self.asks_structured(params))
                .map(verdict_format),
            ..Default::default()
        }
    }

    fn completion_request(&self, prompt: &str, params: &SamplingParams) -> CompletionRequest {
        CompletionRequest {
            model: Some(self.cfg.model.clone()),
            prompt: prompt.to_string(),
            temperature: Some(params.temperature),
            top_p: (params.top_p < 1.0).then_some(params.top_p),
            min_p: (params.min_p > 0.0).then_some(params.min_p),
            top_k: (params.top_k > 0).then_some(params.top_k),
            max_tokens: Some(params.max_new_tokens),
            seed: Some(params.seed),
            stop: (!params.stop.is_empty()).then(|| Stop::Many(params.stop.clone())),
            logprobs: None,
            stream: None,
            n: None,
            frequency_penalty: None,
            presence_penalty: None,
        }
    }

    fn malformed(&self, what: &str, v: &Value) -> Error {
        let shown: String = v.to_string().chars().take(500).collect();
        Error::Remote(RemoteError {
            url: strip_userinfo(&self.cfg.base_urls[0]),
            status: Some(200),
            kind: None,
            message: format!("response has no {what}: {}", self.redact(&shown)),
            attempts: 1,
        })
    }
}

/// Replaces the credential after any `Bearer ` or `Basic ` (any case) with `[redacted]`.
fn redact_bearer(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let found = ["bearer ", "basic "]
            .iter()
            .filter_map(|s| lower.find(s).map(|i| (i, s.len())))
            .min();
        let Some((i, len)) = found else { break };
        out.push_str(&rest[..i + len]);
        let after = &rest[i + len..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
            .unwrap_or(after.len());
        out.push_str("[redacted]");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn to_value<T: Serialize>(r: &T) -> Result<Value> {
    serde_json::to_value(r).map_err(|e| Error::Internal(format!("serialising a request: {e}")))
}

impl Backend for OpenAiBackend {
    fn usage(&self) -> super::Usage {
        self.used
    }

    fn identity(&self) -> Result<String> {
        Ok(self.cfg.identity())
    }

    fn name(&self) -> String {
        self.cfg.model.clone()
    }

    fn generate(&mut self, input: &Input, params: &SamplingParams) -> Result<Generation> {
        params.validate()?;
        let t = Instant::now();
        let (v, text) = match input {
            Input::Chat(messages) => {
                let structured = self.asks_structured(params);
                let request = self.chat_request(messages, params);
                let v = match self.post("chat/completions", &to_value(&request)?) {
                    // An endpoint that refuses structured output is asked in text from then
                    // on, and its replies parsed as text.
                    Err(Error::Remote(e)) if structured && matches!(e.status, Some(400 | 422)) => {
                        let plain = ChatRequest {
                            response_format: None,
                            ..request
                        };
                        let v = self.post("chat/completions", &to_value(&plain)?);
                        // Refused without it too: the request, not the format, was at fault.
                        if v.is_err() {
                            return Err(Error::Remote(e));
                        }
                        self.structured
                            .store(false, std::sync::atomic::Ordering::Relaxed);
                        v?
                    }
                    r => r?,
                };
                let text =
                    v["choices"][0]["message"]["content"]
                        .as_str()
                        .map(|c| match structured {
                            true => verdict_of(c).unwrap_or_else(|| c.to_string()),
                            false => c.to_string(),
                        });
                (v, text)
            }
            Input::Raw(prompt) => {
                let v = self.post(
                    "completions",
                    &to_value(&self.completion_request(prompt, params))?,
                )?;
                let text = v["choices"][0]["text"].as_str().map(str::to_string);
                (v, text)
            }
        };
        let secs = t.elapsed().as_secs_f64();
        let text = text.ok_or_else(|| self.malformed("choices[0] text", &v))?;
        let finish_reason = match v["choices"][0]["finish_reason"].as_str() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        let count = |k: &str| v["usage"][k].as_u64().unwrap_or(0) as usize;
        let completion_tokens = count("completion_tokens");
        Ok(Generation {
            text,
            prompt: String::new(),
            prompt_tokens: count("prompt_tokens"),
            completion_tokens,
            finish_reason,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            timing: Timing {
                prompt_s: 0.0,
                decode_s: secs,
                prompt_tok_per_s: 0.0,
                decode_tok_per_s: completion_tokens as f64 / secs.max(1e-9),
            },
            template: match input {
                Input::Chat(_) => TemplateKind::Model,
                Input::Raw(_) => TemplateKind::Raw,
            },
        })
    }

    /// Keeps `in_flight` requests going per base URL, sharing the rate limit; results are
    /// handed to `on_done` on the calling thread, in the order they finish.
    fn generate_batch(
        &mut self,
        requests: &[(Input, SamplingParams)],
        on_done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
    ) -> Result<()> {
        let workers = self.cfg.in_flight * self.cfg.base_urls.len();
        if workers <= 1 || requests.len() <= 1 {
            for (i, (input, params)) in requests.iter().enumerate() {
                let r = self.generate(input, params);
                on_done(i, r)?;
            }
            return Ok(());
        }
        let queue =
            std::sync::Mutex::new((0..requests.len()).collect::<std::collections::VecDeque<_>>());
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Generation>)>();
        let mut used = self.used;
        let result = std::thread::scope(|scope| -> Result<()> {
            let mut workers = Vec::new();
            for url in &self.cfg.base_urls {
                for _ in 0..self.cfg.in_flight {
                    let mut cfg = self.cfg.clone();
                    cfg.base_urls = vec![url.clone()];
                    let mut client = OpenAiBackend::new(cfg)?.with_limiter(self.limiter.clone());
                    client.structured = self.structured.clone();
                    let (queue, tx) = (&queue, tx.clone());
                    // Each worker hands back the usage its replies reported.
                    workers.push(scope.spawn(move || {
                        loop {
                            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                            let Some(i) = next else { break };
                            let (input, params) = &requests[i];
                            if tx.send((i, client.generate(input, params))).is_err() {
                                break;
                            }
                        }
                        client.used
                    }));
                }
            }
            drop(tx);
            let mut outcome = Ok(());
            for (i, r) in rx {
                if let Err(e) = on_done(i, r) {
                    // Stop the workers: nothing more will be taken from the queue.
                    queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    outcome = Err(e);
                    break;
                }
            }
            for w in workers {
                if let Ok(u) = w.join() {
                    used.prompt_tokens = used.prompt_tokens.saturating_add(u.prompt_tokens);
                    used.completion_tokens =
                        used.completion_tokens.saturating_add(u.completion_tokens);
                }
            }
            outcome
        });
        self.used = used;
        result
    }

    fn label_distribution(&mut self, q: &LabelQuery) -> Result<LabelDistribution> {
        let greedy = SamplingParams::greedy().with_max_new_tokens(1);
        let (path, body) = match &q.input {
            Input::Chat(messages) => {
                let mut msgs = messages.clone();
                msgs.push(Message::assistant(q.prefix.clone()));
                let mut r = self.chat_request(&msgs, &greedy);
                r.logprobs = Some(true);
                r.top_logprobs = Some(20);
                r.continue_final_message = Some(true);
                r.add_generation_prompt = Some(false);
                ("chat/completions", to_value(&r)?)
            }
            Input::Raw(text) => {
                let mut r = self.completion_request(&format!("{text}{}", q.prefix), &greedy);
                r.logprobs = Some(20);
                ("completions", to_value(&r)?)
            }
        };
        let v = match self.post(path, &body) {
            Ok(v) => v,
            // A request the server refuses for its shape (not for this answer's length) means
            // it cannot do what the probability modes need.
            Err(Error::Remote(e)) if matches!(e.status, Some(400 | 404 | 422)) => {
                let about_length = e.kind.as_deref().is_some_and(|k| {
                    let k = k.to_ascii_lowercase();
                    k.contains("context") || k.contains("length") || k.contains("too_long")
                });
                return Err(if about_length {
                    Error::Remote(e)
                } else {
                    Error::NoLogprobs(format!(
                        "{} refused a request for token probabilities after an assistant \
                         prefix: {e}",
                        self.cfg.model
                    ))
                });
            }
            Err(e) => return Err(e),
        };
        let choice = &v["choices"][0];
        // Chat: logprobs.content[0].top_logprobs = [{token, logprob}]; completions:
        // logprobs.top_logprobs[0] = {token: logprob}.
        let mut alternatives: Vec<(String, f64)> = Vec::new();
        if let Some(tops) = choice["logprobs"]["content"][0]["top_logprobs"].as_array() {
            for t in tops {
                if let (Some(tok), Some(lp)) = (t["token"].as_str(), t["logprob"].as_f64()) {
                    alternatives.push((tok.to_string(), lp));
                }
            }
        } else if let Some(map) = choice["logprobs"]["top_logprobs"][0].as_object() {
            for (tok, lp) in map {
                if let Some(lp) = lp.as_f64() {
                    alternatives.push((tok.clone(), lp));
                }
            }
        } else {
            return Err(Error::NoLogprobs(format!(
                "{} answered without `logprobs` (the server does not return token \
                 probabilities)",
                self.cfg.model
            )));
        }
        // A log-probability is at most 0 (a little above it only by rounding). A larger or
        // non-finite value is a server fault, not a probability to renormalise.
        for (tok, lp) in &alternatives {
            if !lp.is_finite() || *lp > LOGPROB_SLACK {
                let shown = if lp.abs() >= 1e6 {
                    format!("{lp:e}")
                } else {
                    lp.to_string()
                };
                return Err(Error::BadLogprob(format!(
                    "{} gave the token {tok:?} the log-probability {shown} (a log-probability \
                     is a finite number at most 0)",
                    self.cfg.model
                )));
            }
        }
        let raw = q
            .labels
            .iter()
            .map(|label| {
                alternatives
                    .iter()
                    .filter(|(tok, _)| tok.trim() == label.as_str())
                    .map(|(_, lp)| lp.min(0.0).exp())
                    .sum()
            })
            .collect();
        let missing: Vec<usize> = q
            .labels
            .iter()
            .enumerate()
            .filter(|(_, label)| {
                !alternatives
                    .iter()
                    .any(|(tok, _)| tok.trim() == label.as_str())
            })
            .map(|(i, _)| i)
            .collect();
        // A label outside the list is no more likely than the least likely one listed.
        let at_most = alternatives
            .iter()
            .map(|(_, lp)| lp.min(0.0).exp())
            .fold(f64::INFINITY, f64::min);
        let d = LabelDistribution::from_raw(raw).map_err(|_| {
            Error::NoLabelToken(format!(
                "none of {:?} is among the judge's {} most likely next tokens",
                q.labels,
                alternatives.len()
            ))
        })?;
        Ok(d.with_missing(missing, if at_most.is_finite() { at_most } else { 0.0 }))
    }
}

/// A successful reply's body as JSON, read to at most `cap` bytes. The error's status says
/// whether a retry may help: `None` for a body cut off in transit (the connection ended
/// early, or the JSON stops mid-way), which may come whole next time; `Some(200)` for a body
/// over the cap or one that is not JSON, which will not.
fn read_json(
    resp: ureq::Response,
    cap: usize,
) -> std::result::Result<Value, (Option<u16>, String)> {
    use std::io::Read;
    let mut buf = Vec::new();
    if let Err(e) = resp
        .into_reader()
        .take(cap as u64 + 1)
        .read_to_end(&mut buf)
    {
        return Err((None, format!("response cut off: {e}")));
    }
    if buf.len() > cap {
        return Err((
            Some(200),
            format!("response body over {cap} bytes (the endpoint's max_response_bytes)"),
        ));
    }
    serde_json::from_slice(&buf).map_err(|e| {
        if e.is_eof() {
            (None, format!("response cut off: {e}"))
        } else {
            (Some(200), format!("unreadable response: {e}"))
        }
    })
}

#[cfg(test)]
mod tests;
