//! `llm-judge serve`: an OpenAI-compatible HTTP server over a local model.
//!
//! Endpoints: `GET /v1/models` and `POST /v1/chat/completions` (temperature, top_p, min_p,
//! top_k, max_tokens, seed, stop, logprobs/top_logprobs, stream, and vLLM's
//! `continue_final_message`). Bad requests get OpenAI-style JSON errors. It binds to loopback
//! unless told otherwise; with an API key set, requests need `Authorization: Bearer KEY`.
//! Requests are served one generation at a time (the model is shared).

use crate::backend::openai_types::ChatRequest;
use crate::engine::{GenerateOptions, Generation};
use crate::error::{Error, Result};
use crate::model::{Message, Model};
use crate::sampling::SamplingParams;
use serde_json::{json, Value};
use std::io::Read;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tiny_http::{Header, Method, Response, Server, StatusCode};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Host to bind (default loopback).
    pub host: String,
    /// Port (0 picks a free one).
    pub port: u16,
    /// Required bearer token, if any.
    pub api_key: Option<String>,
    /// Name reported by `/v1/models` and in responses.
    pub model_name: String,
}

/// An HTTP error in OpenAI's shape.
struct ApiError {
    status: u16,
    message: String,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    fn bad(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            param: param.map(str::to_string),
            code: None,
        }
    }
    fn body(&self) -> Value {
        let kind = match self.status {
            401 => "authentication_error",
            404 => "not_found_error",
            500 => "server_error",
            _ => "invalid_request_error",
        };
        json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}})
    }
}

fn json_header() -> Header {
    Header::from_bytes("Content-Type", "application/json").expect("valid header")
}

fn respond_json(req: tiny_http::Request, status: u16, body: &Value) {
    let resp = Response::from_string(body.to_string())
        .with_status_code(StatusCode(status))
        .with_header(json_header());
    let _ = req.respond(resp);
}

/// Binds and serves until the process ends. `on_ready` receives the bound address.
pub fn serve(
    model: Model,
    opts: ServeOptions,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<()> {
    let addr = format!("{}:{}", opts.host, opts.port);
    let server = Server::http(&addr)
        .map_err(|e| Error::config("serve", format!("cannot bind {addr}: {e}")))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::config("serve", "not an IP address"))?;
    on_ready(bound);
    let model = Arc::new(Mutex::new(model));
    let opts = Arc::new(opts);
    for req in server.incoming_requests() {
        let (model, opts) = (model.clone(), opts.clone());
        std::thread::spawn(move || handle(req, &model, &opts));
    }
    Ok(())
}

fn authorized(req: &tiny_http::Request, key: &Option<String>) -> bool {
    let Some(key) = key else { return true };
    req.headers()
        .iter()
        .any(|h| h.field.equiv("Authorization") && h.value.as_str() == format!("Bearer {key}"))
}

fn handle(mut req: tiny_http::Request, model: &Mutex<Model>, opts: &ServeOptions) {
    if !authorized(&req, &opts.api_key) {
        let e = ApiError {
            status: 401,
            message: "Incorrect or missing API key".into(),
            param: None,
            code: Some("invalid_api_key"),
        };
        return respond_json(req, 401, &e.body());
    }
    let path = req.url().split('?').next().unwrap_or("").to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::Get, "/v1/models") => {
            let body = json!({"object": "list", "data": [
                {"id": opts.model_name, "object": "model", "created": 0, "owned_by": "llm-judge"}
            ]});
            respond_json(req, 200, &body)
        }
        (Method::Post, "/v1/chat/completions") => {
            let mut body = String::new();
            if req.as_reader().read_to_string(&mut body).is_err() {
                return respond_json(req, 400, &ApiError::bad("body is not UTF-8", None).body());
            }
            let parsed: ChatRequest = match serde_json::from_str(&body) {
                Ok(r) => r,
                Err(e) => {
                    return respond_json(
                        req,
                        400,
                        &ApiError::bad(format!("invalid JSON body: {e}"), None).body(),
                    )
                }
            };
            match prepare(&parsed, model) {
                Err(e) => respond_json(req, e.status, &e.body()),
                Ok(job) if parsed.stream == Some(true) => stream(req, job, model, opts),
                Ok(job) => match run(&job, model, None) {
                    Ok(g) => respond_json(req, 200, &completion_body(&g, &job, model, opts)),
                    Err(e) => respond_json(
                        req,
                        500,
                        &ApiError {
                            status: 500,
                            message: e.to_string(),
                            param: None,
                            code: None,
                        }
                        .body(),
                    ),
                },
            }
        }
        (_, "/v1/models") | (_, "/v1/chat/completions") => respond_json(
            req,
            405,
            &ApiError {
                status: 405,
                message: format!("method not allowed on {path}"),
                param: None,
                code: None,
            }
            .body(),
        ),
        _ => respond_json(
            req,
            404,
            &ApiError {
                status: 404,
                message: format!("unknown path {path}"),
                param: None,
                code: None,
            }
            .body(),
        ),
    }
}

/// A checked request: prompt tokens and sampling values.
struct Job {
    prompt_ids: Vec<u32>,
    params: SamplingParams,
    top_logprobs: usize,
    logprobs: bool,
}

fn prepare(r: &ChatRequest, model: &Mutex<Model>) -> std::result::Result<Job, ApiError> {
    if r.messages.is_empty() {
        return Err(ApiError::bad(
            "`messages` must not be empty",
            Some("messages"),
        ));
    }
    if r.n.unwrap_or(1) != 1 {
        return Err(ApiError::bad("only n = 1 is supported", Some("n")));
    }
    for (name, v) in [
        ("frequency_penalty", r.frequency_penalty),
        ("presence_penalty", r.presence_penalty),
    ] {
        if v.unwrap_or(0.0) != 0.0 {
            return Err(ApiError::bad(
                format!("`{name}` is not supported"),
                Some(name),
            ));
        }
    }
    let messages: Vec<Message> = r
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| m.to_message(i))
        .collect::<Result<_>>()
        .map_err(|e| ApiError::bad(e.to_string(), Some("messages")))?;
    let mut p = crate::experiment::SettingEntry {
        name: "request".into(),
        preset: None,
        temperature: r.temperature,
        min_p: r.min_p,
        top_p: r.top_p,
        top_k: r.top_k,
        repetition_penalty: None,
    }
    .resolve()
    .map_err(|e| ApiError::bad(e.to_string(), None))?;
    if let Some(v) = r.max_completion_tokens.or(r.max_tokens) {
        p.max_new_tokens = v;
    }
    if let Some(v) = r.seed {
        p.seed = v;
    }
    if let Some(s) = r.stop.clone() {
        p.stop = s.into_vec();
    }
    if let Err(Error::InvalidSampling {
        field,
        value,
        reason,
    }) = p.validate()
    {
        return Err(ApiError::bad(
            format!("`{field}` = {value}: {reason}"),
            Some(field),
        ));
    }
    let top = r.top_logprobs.unwrap_or(0);
    if top > 20 {
        return Err(ApiError::bad(
            "`top_logprobs` must be at most 20",
            Some("top_logprobs"),
        ));
    }
    let m = model.lock().unwrap_or_else(|e| e.into_inner());
    let cont = r.continue_final_message == Some(true);
    let text = if cont {
        let (last, head) = messages.split_last().expect("non-empty");
        if last.role != "assistant" {
            return Err(ApiError::bad(
                "continue_final_message needs an assistant message last",
                Some("continue_final_message"),
            ));
        }
        m.template().render(head, true).map(|t| t + &last.content)
    } else {
        m.template().render(&messages, true)
    }
    .map_err(|e| ApiError::bad(e.to_string(), Some("messages")))?;
    p.stop.extend(m.template().extra_stops());
    let prompt_ids = m
        .tokenizer()
        .encode_prompt(&text)
        .map_err(|e| ApiError::bad(e.to_string(), Some("messages")))?;
    if prompt_ids.len() >= m.context_length() {
        return Err(ApiError {
            status: 400,
            message: format!(
                "the prompt has {} tokens; the context length is {}",
                prompt_ids.len(),
                m.context_length()
            ),
            param: Some("messages".into()),
            code: Some("context_length_exceeded"),
        });
    }
    Ok(Job {
        prompt_ids,
        params: p,
        top_logprobs: top,
        logprobs: r.logprobs == Some(true),
    })
}

fn run(
    job: &Job,
    model: &Mutex<Model>,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
    let opts = GenerateOptions {
        top_logprobs: if job.logprobs { job.top_logprobs } else { 0 },
        on_text,
    };
    m.generate_ids_with(&job.prompt_ids, &job.params, opts)
}

fn token_entry(m: &Model, id: u32, logprob: f32) -> Value {
    let text = m.tokenizer().decode(&[id], false).unwrap_or_default();
    json!({"token": text, "logprob": logprob, "bytes": text.as_bytes()})
}

fn logprobs_body(g: &Generation, job: &Job, model: &Mutex<Model>) -> Value {
    if !job.logprobs {
        return Value::Null;
    }
    let m = model.lock().unwrap_or_else(|e| e.into_inner());
    let content: Vec<Value> = g
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let mut e = token_entry(&m, t, g.logprobs[i]);
            let tops: Vec<Value> = g
                .top_logprobs
                .get(i)
                .map(|v| v.iter().map(|&(id, lp)| token_entry(&m, id, lp)).collect())
                .unwrap_or_default();
            e["top_logprobs"] = Value::Array(tops);
            e
        })
        .collect();
    json!({"content": content})
}

fn finish(g: &Generation) -> &'static str {
    match g.finish_reason {
        crate::engine::FinishReason::Length => "length",
        _ => "stop",
    }
}

fn id_for(g: &Generation) -> String {
    let h = crate::model::fingerprint::sha256_str(&format!("{:?}{}", g.tokens, g.prompt_tokens));
    format!("chatcmpl-{}", &h[..24])
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_body(g: &Generation, job: &Job, model: &Mutex<Model>, opts: &ServeOptions) -> Value {
    json!({
        "id": id_for(g),
        "object": "chat.completion",
        "created": now(),
        "model": opts.model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": g.text},
            "logprobs": logprobs_body(g, job, model),
            "finish_reason": finish(g),
        }],
        "usage": {
            "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.completion_tokens,
            "total_tokens": g.prompt_tokens + g.completion_tokens,
        },
    })
}

/// A `Read` over chunks sent from the generating thread.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn stream(req: tiny_http::Request, job: Job, model: &Mutex<Model>, opts: &ServeOptions) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let name = opts.model_name.clone();
    let created = now();
    let chunk = move |delta: Value, finish: Value| {
        let v = json!({
            "id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": created,
            "model": name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {v}\n\n").into_bytes()
    };
    std::thread::scope(|s| {
        let tx2 = tx.clone();
        let chunk2 = chunk.clone();
        s.spawn(move || {
            let _ = tx2.send(chunk2(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            let mut send = |t: &str| {
                let _ = tx2.send(chunk2(json!({"content": t}), Value::Null));
            };
            let result = run(&job, model, Some(&mut send));
            match result {
                Ok(g) => {
                    let _ = tx2.send(chunk2(json!({}), json!(finish(&g))));
                }
                Err(e) => {
                    let err = json!({"error": {"message": e.to_string(), "type": "server_error"}});
                    let _ = tx2.send(format!("data: {err}\n\n").into_bytes());
                }
            }
            let _ = tx2.send(b"data: [DONE]\n\n".to_vec());
        });
        drop(tx);
        let reader = ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        };
        let resp = Response::new(
            StatusCode(200),
            vec![
                Header::from_bytes("Content-Type", "text/event-stream").expect("valid header"),
                Header::from_bytes("Cache-Control", "no-cache").expect("valid header"),
            ],
            reader,
            None,
            None,
        );
        let _ = req.respond(resp);
    });
}
