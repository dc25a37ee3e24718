//! Aggregate serving speed under concurrent clients, on loopback: `llm-judge serve` (started
//! in this process) and, for reference, llama.cpp's `llama-server -np N` on the same GGUF and
//! thread count. Each client sends one greedy `/v1/completions` request at the same moment;
//! the figure is the completion tokens of all answers (from each response's `usage`) over
//! the wall time until the last answer arrived. The load is bounded: one request per client,
//! a fixed token limit, a timeout.

use crate::error::{Error, Result};
use crate::model::Model;
use std::path::Path;
use std::time::{Duration, Instant};

/// Prompts for the clients (distinct, so that no server can share work between them).
const TOPICS: [&str; 8] = [
    "a tent in a windy place",
    "an eggless chocolate cake",
    "a laptop that won't turn on",
    "a Rubik's Cube for beginners",
    "a birdhouse from scrap wood",
    "a 15-minute workout",
    "a medium-rare steak",
    "a first Git repository",
];

fn prompt(i: usize) -> String {
    format!(
        "Write a long, detailed guide in many numbered steps about {} (guide {i}).",
        TOPICS[i % TOPICS.len()]
    )
}

/// Sends `clients` concurrent completion requests of `max_tokens` to `base` (`…/v1`) and
/// returns the aggregate completion tokens per second.
pub fn load(base: &str, clients: usize, max_tokens: usize) -> Result<f64> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(600))
        .build();
    let ask = |i: usize, n: usize| -> Result<u64> {
        let body = serde_json::json!({
            "model": "bench", "prompt": prompt(i), "max_tokens": n, "temperature": 0.0,
        });
        let url = format!("{base}/completions");
        let v: serde_json::Value = agent
            .post(&url)
            .send_json(body)
            .map_err(|e| Error::config(&url, format!("load request failed: {e}")))?
            .into_json()
            .map_err(|e| Error::config(&url, format!("unreadable answer: {e}")))?;
        v["usage"]["completion_tokens"]
            .as_u64()
            .ok_or_else(|| Error::config(&url, "the answer has no usage.completion_tokens"))
    };
    ask(0, 4)?; // warm-up: weights paged in, first-request setup done
    let t = Instant::now();
    let tokens = std::thread::scope(|s| -> Result<u64> {
        let handles: Vec<_> = (0..clients)
            .map(|i| s.spawn(move || ask(i, max_tokens)))
            .collect();
        let mut sum = 0;
        for h in handles {
            sum += h
                .join()
                .map_err(|_| Error::config("bench", "a load client panicked"))??;
        }
        Ok(sum)
    })?;
    Ok(tokens as f64 / t.elapsed().as_secs_f64())
}

/// Starts `llm-judge serve` on `model` in this process (loopback, a free port, up to
/// `clients` requests decoded together) and returns its base URL. The server runs until
/// the process ends.
pub fn start_ours(model: &Model, name: &str, clients: usize) -> Result<String> {
    let mut opts = crate::server::ServeOptions::new(name);
    opts.port = 0;
    opts.max_batch = clients.max(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let m = model.clone();
    std::thread::Builder::new()
        .name("bench-serve".into())
        .spawn(move || {
            let ready = tx.clone();
            if let Err(e) = crate::server::serve(m, opts, move |addr| {
                let _ = ready.send(Ok(addr));
            }) {
                let _ = tx.send(Err(e));
            }
        })
        .map_err(|e| Error::config("bench", format!("cannot start the server: {e}")))?;
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| Error::config("bench", "the server did not start"))??;
    Ok(format!("http://{addr}/v1"))
}

/// A `llama-server` child process, killed on drop.
pub struct LlamaServer {
    child: std::process::Child,
    /// Its base URL (`…/v1`).
    pub base: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `llama-server -np clients` on the same file and threads and waits until it is
/// healthy (at most two minutes).
pub fn start_llama_server(
    bin: &Path,
    gguf: &Path,
    threads: usize,
    clients: usize,
    ctx_per_client: usize,
) -> Result<LlamaServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::config("bench", format!("no free port: {e}")))?
        .port();
    let child = std::process::Command::new(bin)
        .arg("-m")
        .arg(gguf)
        .args(["-t", &threads.to_string(), "-np", &clients.to_string()])
        .args(["-c", &(clients * ctx_per_client).to_string()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Error::io(bin, e))?;
    let server = LlamaServer {
        child,
        base: format!("http://127.0.0.1:{port}/v1"),
    };
    let health = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if ureq::get(&health).call().is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(Error::config(
        bin.display().to_string(),
        "llama-server did not become healthy within 120 s",
    ))
}
