//! A client for any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, TGI,
//! llama.cpp's server, `llm-judge serve`).
//!
//! Failed requests (429, 5xx, dropped connections, timeouts) are retried with exponential
//! backoff and jitter, honouring `Retry-After`; several base URLs (replicas) are used in
//! turn. The API key is read from an environment variable and never stored in records,
//! logs or `Debug` output.

use super::openai_types::{ChatRequest, Stop, WireMessage};
use super::Backend;
use crate::engine::{FinishReason, Generation, Timing};
use crate::error::{Error, Result};
use crate::model::{Message, TemplateSource};
use crate::sampling::SamplingParams;
use rand::Rng;
use serde::{Deserialize, Serialize};
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
    /// Base backoff in seconds (doubled per retry, plus jitter).
    #[serde(default)]
    pub backoff_s: Option<f64>,
    /// Requests in flight at once per base URL (generation grids).
    #[serde(default = "one")]
    pub in_flight: usize,
    /// At most this many requests per second to the endpoint, all replicas together.
    #[serde(default)]
    pub requests_per_s: Option<f64>,
}

fn one() -> usize {
    1
}

/// Spaces requests out to at most `rate` per second, shared between clients.
#[derive(Clone, Debug, Default)]
pub struct RateLimiter {
    interval: Option<Duration>,
    next: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

impl RateLimiter {
    /// A limiter for `rate` requests per second (`None` or non-positive: no limit).
    pub fn new(rate: Option<f64>) -> Self {
        Self {
            interval: rate
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
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
        }
    }
}

/// A remote chat model.
pub struct OpenAiBackend {
    cfg: EndpointConfig,
    api_key: Option<String>,
    agent: ureq::Agent,
    next: usize,
    limiter: RateLimiter,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("base_urls", &self.cfg.base_urls)
            .field("model", &self.cfg.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why an attempt failed, and whether another may succeed.
struct Attempt {
    message: String,
    retry: bool,
    wait: Option<Duration>,
}

impl OpenAiBackend {
    /// A client; the key is read from `cfg.api_key_env` now.
    pub fn new(cfg: EndpointConfig) -> Result<Self> {
        if cfg.base_urls.is_empty() {
            return Err(Error::config("endpoint.base_urls", "no base URL"));
        }
        let api_key = std::env::var(&cfg.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs_f64(cfg.timeout_s.max(0.001)))
            .build();
        let limiter = RateLimiter::new(cfg.requests_per_s);
        Ok(Self {
            cfg,
            api_key,
            agent,
            next: 0,
            limiter,
        })
    }

    /// Shares a rate limiter with other clients of the same endpoint.
    pub fn with_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = limiter;
        self
    }

    fn post_once(
        &mut self,
        body: &serde_json::Value,
    ) -> std::result::Result<serde_json::Value, Attempt> {
        self.limiter.wait();
        let base = &self.cfg.base_urls[self.next % self.cfg.base_urls.len()];
        self.next += 1;
        let url = format!("{}/chat/completions", base.trim_end_matches('/'));
        let mut req = self
            .agent
            .post(&url)
            .set("Content-Type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        match req.send_string(&body.to_string()) {
            Ok(resp) => resp.into_json::<serde_json::Value>().map_err(|e| Attempt {
                message: format!("{url}: unreadable response: {e}"),
                retry: true,
                wait: None,
            }),
            Err(ureq::Error::Status(code, resp)) => {
                let wait = resp
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(|s| Duration::from_secs_f64(s.clamp(0.0, 60.0)));
                let text = resp.into_string().unwrap_or_default();
                let detail = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                    .unwrap_or(text);
                Err(Attempt {
                    message: format!("{url}: HTTP {code}: {detail}"),
                    retry: code == 429 || code >= 500,
                    wait,
                })
            }
            Err(e) => Err(Attempt {
                message: format!("{url}: {e}"),
                retry: true,
                wait: None,
            }),
        }
    }

    /// Posts a request with retries; the error names the last failure and the attempts.
    pub fn post(&mut self, body: &serde_json::Value) -> Result<serde_json::Value> {
        let base = self.cfg.backoff_s.unwrap_or(0.5);
        let mut attempt = 0;
        loop {
            match self.post_once(body) {
                Ok(v) => return Ok(v),
                Err(a) if a.retry && attempt < self.cfg.retries => {
                    let backoff = base * 2f64.powi(attempt as i32);
                    let jitter = rand::rng().random_range(0.0..=backoff.max(1e-9));
                    let wait = a
                        .wait
                        .unwrap_or_else(|| Duration::from_secs_f64((backoff + jitter).min(30.0)));
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(a) => {
                    return Err(Error::Remote(format!(
                        "{} (after {} attempt{})",
                        a.message,
                        attempt + 1,
                        if attempt == 0 { "" } else { "s" }
                    )))
                }
            }
        }
    }

    fn request(&self, messages: &[Message], params: &SamplingParams) -> ChatRequest {
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
            ..Default::default()
        }
    }
}

fn to_value(r: &ChatRequest) -> Result<serde_json::Value> {
    serde_json::to_value(r).map_err(|e| Error::Remote(format!("serialising a request: {e}")))
}

impl Backend for OpenAiBackend {
    fn identity(&self) -> Result<String> {
        Ok(format!(
            "openai:{}:{}",
            self.cfg.base_urls[0], self.cfg.model
        ))
    }

    fn name(&self) -> String {
        self.cfg.model.clone()
    }

    fn chat(&mut self, messages: &[Message], params: &SamplingParams) -> Result<Generation> {
        params.validate()?;
        let body = to_value(&self.request(messages, params))?;
        let t = Instant::now();
        let v = self.post(&body)?;
        let secs = t.elapsed().as_secs_f64();
        let choice = &v["choices"][0];
        let text = choice["message"]["content"]
            .as_str()
            .ok_or_else(|| {
                Error::Remote(format!("response has no choices[0].message.content: {v}"))
            })?
            .to_string();
        let finish_reason = match choice["finish_reason"].as_str() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize;
        let completion_tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
        Ok(Generation {
            text,
            prompt: String::new(),
            prompt_tokens,
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
            template: TemplateSource::Model,
        })
    }

    fn next_token_distribution(
        &mut self,
        messages: &[Message],
        assistant_prefix: &str,
        candidates: &[String],
    ) -> Result<Option<(Vec<f64>, f64)>> {
        let mut msgs = messages.to_vec();
        msgs.push(Message::assistant(assistant_prefix));
        let mut r = self.request(&msgs, &SamplingParams::greedy().with_max_new_tokens(1));
        r.logprobs = Some(true);
        r.top_logprobs = Some(20);
        r.continue_final_message = Some(true);
        let v = match self.post(&to_value(&r)?) {
            Ok(v) => v,
            // A server without continue_final_message or logprobs: fall back to text.
            Err(Error::Remote(m)) if m.contains("HTTP 400") || m.contains("HTTP 422") => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let Some(tops) = v["choices"][0]["logprobs"]["content"][0]["top_logprobs"].as_array()
        else {
            return Ok(None);
        };
        let raw: Vec<f64> = candidates
            .iter()
            .map(|c| {
                tops.iter()
                    .find(|t| t["token"].as_str().map(str::trim) == Some(c.as_str()))
                    .and_then(|t| t["logprob"].as_f64())
                    .map(f64::exp)
                    .unwrap_or(0.0)
            })
            .collect();
        // No score token among the alternatives: fall back to text parsing.
        Ok(super::renormalise(raw))
    }
}
