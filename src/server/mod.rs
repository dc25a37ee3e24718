//! `llm-judge serve`: an OpenAI-compatible HTTP server over a local model.
//!
//! Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (temperature, top_p, min_p,
//! top_k, max_tokens, seed, stop, logprobs/top_logprobs, stream, and vLLM's
//! `continue_final_message`) and `POST /v1/completions` (raw text). Bad requests get
//! OpenAI-style JSON errors.
//!
//! One client cannot stall the others:
//! - requests that arrive together decode together (continuous batching in one model
//!   thread, [`worker`]); rendering and tokenizing happen before, outside it;
//! - a client that disconnects is dropped from the batch at the next token;
//! - bodies are capped (413), headers and bodies must arrive within a timeout, and at most
//!   `max_connections` requests are served at once (the rest wait). A request takes its
//!   slot only once its key is checked (a client without a valid key gets 401 and holds
//!   nothing), and an idle connection holds none: keep-alive idle time, like a request's
//!   headers, gets at most [`IDLE_S`] seconds;
//! - a body is parsed, rendered and tokenized on the blocking pool, [`PREPARING`] at once,
//!   never on the threads that serve connections, and a text longer than the model's context
//!   could hold is refused before it is tokenized;
//! - streamed events are sent as soon as each token is final.
//!
//! It binds to loopback unless told otherwise; binding elsewhere without an API key needs
//! `allow_unauthenticated`. With a key, requests need `Authorization: Bearer KEY` (the scheme
//! in any case; the key is compared in constant time).

pub mod api;
pub mod worker;

use crate::backend::openai_types::{ChatRequest, CompletionRequest};
use crate::error::{Error, Result};
use crate::model::Model;
use api::{ApiError, Limits, Prepared};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use worker::{Event, Job};

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
    /// Largest request body in bytes (larger gets 413).
    pub max_body_bytes: usize,
    /// Most tokens one request may generate.
    pub max_tokens: Option<usize>,
    /// Requests served at once (an idle connection holds none).
    pub max_connections: usize,
    /// Seconds a client has to send a request's body; its headers, and an idle keep-alive
    /// connection, get at most [`IDLE_S`] (this, when shorter).
    pub read_timeout_s: u64,
    /// Requests decoded together.
    pub max_batch: usize,
    /// Serve a non-loopback address without an API key.
    pub allow_unauthenticated: bool,
}

impl ServeOptions {
    /// Loopback, no key, the default limits.
    pub fn new(model_name: impl Into<String>) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            model_name: model_name.into(),
            max_body_bytes: 8 << 20,
            max_tokens: None,
            max_connections: 64,
            read_timeout_s: 30,
            max_batch: crate::backend::DEFAULT_MAX_BATCH,
            allow_unauthenticated: false,
        }
    }
}

struct Shared {
    opts: ServeOptions,
    /// A clone of the served model for rendering and tokenizing (weights are shared).
    model: Model,
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
    next_id: AtomicU64,
    nonce: u64,
    /// Requests being served, from their body to their last byte: `max_connections`.
    requests: Arc<tokio::sync::Semaphore>,
    /// Bodies being parsed, rendered and tokenized at once ([`PREPARING`]); a permit goes
    /// with the work to the blocking pool, so a client that leaves does not free it early.
    preparing: Arc<tokio::sync::Semaphore>,
}

/// Most seconds an idle keep-alive connection, or a request's headers, may take (the
/// `read_timeout` when shorter).
pub const IDLE_S: u64 = 10;
/// Bodies prepared (parsed, rendered, tokenized) at once on the blocking pool.
pub const PREPARING: usize = 2;
/// A body at least this large has its memory handed back to the system once prepared.
const LARGE_BODY: usize = 1 << 20;

/// Hands the memory the allocator keeps after a large body back to the system: glibc keeps
/// freed memory in its arenas (a few large bodies parsed on the blocking pool's threads
/// would otherwise leave the process hundreds of MB larger). Elsewhere the allocator
/// decides.
fn give_memory_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim takes no pointer and only releases free memory.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Open connections at most, per request slot: idle ones beyond wait in the backlog.
const OPEN_PER_SLOT: usize = 8;

fn is_loopback(host: &str) -> bool {
    let h = host.trim_matches(['[', ']']);
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Binds and serves until the process ends. `on_ready` receives the bound address.
pub fn serve(
    model: Model,
    opts: ServeOptions,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<()> {
    if !is_loopback(&opts.host) && opts.api_key.is_none() && !opts.allow_unauthenticated {
        return Err(Error::config(
            "serve --host",
            format!(
                "{} is reachable from other machines and no API key is set; pass \
                 --api-key-env VAR, or --allow-unauthenticated if that is what you want",
                opts.host
            ),
        ));
    }
    if opts.max_connections == 0
        || opts.max_body_bytes == 0
        || opts.read_timeout_s == 0
        || opts.max_tokens == Some(0)
        || opts.max_batch == 0
    {
        return Err(Error::config(
            "serve",
            "--max-connections, --max-body-bytes, --read-timeout, --max-tokens and --batch must \
             be at least 1",
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::config("serve", format!("cannot start the runtime: {e}")))?;
    let jobs = worker::start(model.clone(), opts.max_batch);
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ std::process::id() as u64;
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        model,
        jobs: std::sync::Mutex::new(jobs),
        next_id: AtomicU64::new(0),
        nonce,
        requests: Arc::new(tokio::sync::Semaphore::new(opts.max_connections)),
        preparing: Arc::new(tokio::sync::Semaphore::new(PREPARING)),
    });
    rt.block_on(async move {
        let addr = format!("{}:{}", opts.host, opts.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::config("serve", format!("cannot bind {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::invalid("serve: the bound address", e))?;
        on_ready(bound);
        accept_loop(listener, shared).await;
        Ok(())
    })
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(shared.clone());
    // Open connections are bounded only so that idle ones cannot take every file
    // descriptor; a request slot is taken per request, in the handlers.
    let open = shared
        .opts
        .max_connections
        .saturating_mul(OPEN_PER_SLOT)
        .max(256);
    let slots = Arc::new(tokio::sync::Semaphore::new(open));
    let timeout = Duration::from_secs(shared.opts.read_timeout_s.min(IDLE_S));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
            drop(permit);
        });
    }
}

fn error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &e.body())
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Equal in constant time for equal lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(headers: &HeaderMap, key: &Option<String>) -> bool {
    let Some(key) = key else { return true };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.trim().splitn(2, ' ');
    let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && same_secret(token.trim().as_bytes(), key.as_bytes())
}

fn check_auth(shared: &Shared, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
    if authorized(headers, &shared.opts.api_key) {
        return Ok(());
    }
    Err(ApiError {
        status: 401,
        message: "Incorrect or missing API key".into(),
        param: None,
        code: Some("invalid_api_key"),
    })
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_auth(&shared, &headers) {
        return error(e);
    }
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [
            {"id": shared.opts.model_name, "object": "model", "created": 0, "owned_by": "llm-judge"}
        ]}),
    )
}

async fn not_found(uri: axum::http::Uri, method: axum::http::Method) -> Response {
    let path = uri.path().to_string();
    if ["/v1/models", "/v1/chat/completions", "/v1/completions"].contains(&path.as_str()) {
        return error(ApiError::new(
            405,
            format!("method {method} not allowed on {path}"),
        ));
    }
    error(ApiError::new(404, format!("unknown path {path}")))
}

/// Reads the body within the size cap and the read timeout.
async fn read_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> std::result::Result<Bytes, ApiError> {
    let cap = shared.opts.max_body_bytes;
    let too_large = || {
        ApiError::new(
            413,
            format!("the request body is larger than the server's limit of {cap} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let timeout = Duration::from_secs(shared.opts.read_timeout_s);
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, cap)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::new(
            408,
            "the request body did not arrive in time",
        )),
    }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, ApiError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| ApiError::bad("the body is not UTF-8", None))?;
    serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let hint = if msg.contains("Content") || msg.contains("content") {
            " (each message's `content` must be a string or a list of text parts, not null)"
        } else {
            ""
        };
        ApiError::bad(format!("invalid JSON body: {msg}{hint}"), None)
    })
}

impl Shared {
    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:016x}{n:08x}", self.nonce)
    }

    fn submit(
        &self,
        p: &Prepared,
    ) -> std::result::Result<tokio::sync::mpsc::UnboundedReceiver<Event>, ApiError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let job = Job {
            request: p.request.clone(),
            top_logprobs: p.logprobs.unwrap_or(0),
            stream: p.stream,
            events: tx,
        };
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .is_ok();
        if sent {
            Ok(rx)
        } else {
            Err(ApiError::new(503, "the model worker has stopped"))
        }
    }
}

/// Waits for the finished generation (text events are skipped).
async fn finished(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> std::result::Result<crate::engine::Generation, ApiError> {
    while let Some(e) = rx.recv().await {
        match e {
            Event::Text(_) => {}
            Event::Done(Ok(g)) => return Ok(g),
            Event::Done(Err(m)) => return Err(ApiError::new(500, m)),
        }
    }
    Err(ApiError::new(500, "the model worker dropped the request"))
}

/// Admits a request: its key checked first (a 401 holds nothing), then a request slot
/// (held until the response is dropped: for a stream, its end), then its body read and
/// turned into a job by `prepare` on the blocking pool, [`PREPARING`] at once, so that a
/// large body never holds the threads that serve the other connections.
async fn admit<R: Send + 'static>(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: Body,
    prepare: impl FnOnce(&[u8], &Shared) -> std::result::Result<R, ApiError> + Send + 'static,
) -> std::result::Result<(tokio::sync::OwnedSemaphorePermit, R), ApiError> {
    check_auth(shared, headers)?;
    let stopping = |_| ApiError::new(503, "the server is stopping");
    let slot = shared
        .requests
        .clone()
        .acquire_owned()
        .await
        .map_err(stopping)?;
    let bytes = read_body(shared, headers, body).await?;
    let turn = shared
        .preparing
        .clone()
        .acquire_owned()
        .await
        .map_err(stopping)?;
    let s = shared.clone();
    let r = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let large = bytes.len() >= LARGE_BODY;
        let r = prepare(&bytes, &s);
        drop(bytes);
        if large {
            give_memory_back();
        }
        r
    })
    .await
    .map_err(|_| ApiError::new(500, "preparing the request failed"))??;
    Ok((slot, r))
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    chat_inner(shared, headers, body)
        .await
        .unwrap_or_else(error)
}

async fn chat_inner(
    shared: Arc<Shared>,
    headers: HeaderMap,
    body: Body,
) -> std::result::Result<Response, ApiError> {
    let limits = Limits {
        max_tokens: shared.opts.max_tokens,
    };
    let (slot, prepared) = admit(&shared, &headers, body, move |bytes, s| {
        let req: ChatRequest = parse(bytes)?;
        api::chat_job(&req, &s.model, limits)
    })
    .await?;
    let mut rx = shared.submit(&prepared)?;
    let id = shared.id("chatcmpl");
    let created = api::now();
    if prepared.stream {
        return Ok(stream_chat(shared.clone(), id, created, rx, slot));
    }
    let g = finished(&mut rx).await?;
    let logprobs = match prepared.logprobs {
        Some(_) => api::chat_logprobs(&g, &shared.model),
        None => Value::Null,
    };
    // Structured output: the text, decoded held to the pattern, as the one property.
    let content = match &prepared.structured {
        Some(name) => json!({ name.as_str(): g.text }).to_string(),
        None => g.text.clone(),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": id, "object": "chat.completion", "created": created,
            "model": shared.opts.model_name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": logprobs,
                "finish_reason": api::finish_reason(&g),
            }],
            "usage": api::usage(&g),
        }),
    ))
}

/// Server-sent events: one event per piece of text as soon as it is final, a last event with
/// the finish reason, then `[DONE]`. A client that goes away drops the stream, and with it
/// the request's place in the batch.
fn stream_chat(
    shared: Arc<Shared>,
    id: String,
    created: u64,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let name = shared.opts.model_name.clone();
    let chunk = move |delta: Value, finish: Value| {
        let v = json!({
            "id": id, "object": "chat.completion.chunk", "created": created,
            "model": name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Bytes::from(format!("data: {v}\n\n"))
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    // State: (receiver, what to send first, whether the stream has ended).
    // The request's slot travels with the stream and is given back when it ends or the
    // client goes away.
    let stream = futures_util::stream::unfold(
        (rx, Some(first), false, (chunk, slot)),
        |(mut rx, pending, ended, (chunk, slot))| async move {
            if let Some(p) = pending {
                return Some((
                    Ok::<Bytes, std::io::Error>(p),
                    (rx, None, ended, (chunk, slot)),
                ));
            }
            if ended {
                return None;
            }
            match rx.recv().await {
                Some(Event::Text(t)) => {
                    let b = chunk(json!({"content": t}), Value::Null);
                    Some((Ok(b), (rx, None, false, (chunk, slot))))
                }
                Some(Event::Done(Ok(g))) => {
                    let b = chunk(json!({}), json!(api::finish_reason(&g)));
                    let done = Bytes::from_static(b"data: [DONE]\n\n");
                    Some((Ok(b), (rx, Some(done), true, (chunk, slot))))
                }
                Some(Event::Done(Err(m))) => {
                    let err = json!({"error": {"message": m, "type": "server_error"}});
                    let b = Bytes::from(format!("data: {err}\n\n"));
                    let done = Bytes::from_static(b"data: [DONE]\n\n");
                    Some((Ok(b), (rx, Some(done), true, (chunk, slot))))
                }
                None => None,
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(ApiError::new(500, "cannot build the stream")))
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    completions_inner(shared, headers, body)
        .await
        .unwrap_or_else(error)
}

async fn completions_inner(
    shared: Arc<Shared>,
    headers: HeaderMap,
    body: Body,
) -> std::result::Result<Response, ApiError> {
    let limits = Limits {
        max_tokens: shared.opts.max_tokens,
    };
    let (_slot, prepared) = admit(&shared, &headers, body, move |bytes, s| {
        let req: CompletionRequest = parse(bytes)?;
        api::completion_job(&req, &s.model, limits)
    })
    .await?;
    let mut rx = shared.submit(&prepared)?;
    let g = finished(&mut rx).await?;
    let logprobs = match prepared.logprobs {
        Some(_) => api::completion_logprobs(&g, &shared.model),
        None => Value::Null,
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": shared.id("cmpl"), "object": "text_completion", "created": api::now(),
            "model": shared.opts.model_name,
            "choices": [{"index": 0, "text": g.text, "logprobs": logprobs,
                         "finish_reason": api::finish_reason(&g)}],
            "usage": api::usage(&g),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_in_any_case_and_keys_compared_whole() {
        let key = Some("s3cret".to_string());
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        assert!(authorized(&h("Bearer s3cret"), &key));
        assert!(authorized(&h("bearer s3cret"), &key));
        assert!(authorized(&h("BEARER  s3cret "), &key));
        assert!(!authorized(&h("Bearer s3cre"), &key));
        assert!(!authorized(&h("Basic s3cret"), &key));
        assert!(!authorized(&HeaderMap::new(), &key));
        assert!(authorized(&HeaderMap::new(), &None));
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("localhost"));
        assert!(!is_loopback("0.0.0.0") && !is_loopback("192.168.1.4"));
    }
}
