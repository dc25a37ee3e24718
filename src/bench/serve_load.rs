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
    start_ours_with(model, name, clients, None)
}

/// [`start_ours`], with an API key the clients must send.
pub fn start_ours_with(
    model: &Model,
    name: &str,
    clients: usize,
    api_key: Option<String>,
) -> Result<String> {
    let mut opts = crate::server::ServeOptions::new(name);
    opts.port = 0;
    opts.max_batch = clients.max(1);
    opts.api_key = api_key;
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

/// Latencies of small requests to `serve`, alone and while it is abused.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AbuseFigure {
    /// What ran alongside.
    pub abuse: String,
    /// Small requests timed in each phase.
    pub requests: usize,
    /// Median latency alone, in ms.
    pub alone_p50_ms: f64,
    /// 99th-percentile latency alone, in ms.
    pub alone_p99_ms: f64,
    /// Median latency under the abuse, in ms.
    pub abused_p50_ms: f64,
    /// 99th-percentile latency under the abuse, in ms.
    pub abused_p99_ms: f64,
    /// Big bodies the abusers got an answer to while the small requests ran.
    pub big_bodies_answered: usize,
    /// Resident memory of this process (the server runs in it) before the abuse, in MB.
    pub rss_before_mb: Option<f64>,
    /// Resident memory 2 s after the abuse ended, in MB: what the server kept.
    pub rss_after_mb: Option<f64>,
}

/// This process's resident memory now, in MB (Linux).
fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The `q`-quantile (nearest rank) of `xs`, sorted here.
fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let i = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1;
    xs[i]
}

/// Serve under abuse, on loopback and bounded: the latency of small chat requests (one
/// token) alone, then while 200 idle sockets, 20 clients without the key (holding their
/// connections open) and 2 clients sending 7.5 MB bodies over and over run alongside.
pub fn abuse(model: &Model, name: &str) -> Result<AbuseFigure> {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const KEY: &str = "bench-abuse-key";
    const REQUESTS: usize = 40;
    let base = start_ours_with(model, name, 8, Some(KEY.into()))?;
    let host = base
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let url = format!("{base}/chat/completions");
    let small = || -> Result<f64> {
        let t = Instant::now();
        agent
            .post(&url)
            .set("Authorization", &format!("Bearer {KEY}"))
            .send_string(r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#)
            .map_err(|e| Error::config(&url, format!("small request failed: {e}")))?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    small()?; // warm-up
    let mut alone: Vec<f64> = (0..REQUESTS).map(|_| small()).collect::<Result<_>>()?;
    let rss_before_mb = rss_mb();
    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "word ".repeat(1_500_000)
    );
    let mut abused = std::thread::scope(|s| -> Result<Vec<f64>> {
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(std::net::TcpStream::connect(&host).map_err(|e| Error::io(&host, e))?);
        }
        for _ in 0..20 {
            let (host, stop) = (&host, &stop);
            s.spawn(move || {
                // A request without the key, then the connection held open.
                if let Ok(mut t) = std::net::TcpStream::connect(host) {
                    let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
                    let _ = write!(
                        t,
                        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
        for _ in 0..2 {
            let (url, big, stop, answered) = (&url, &big, &stop, &answered);
            s.spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(120))
                    .build();
                while !stop.load(Ordering::Relaxed) {
                    let _ = agent
                        .post(url)
                        .set("Authorization", &format!("Bearer {KEY}"))
                        .send_string(big);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        let times: Result<Vec<f64>> = (0..REQUESTS).map(|_| small()).collect();
        stop.store(true, Ordering::Relaxed);
        drop(idle);
        times
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_after_mb = rss_mb();
    Ok(AbuseFigure {
        abuse: "200 idle sockets, 20 clients without the key holding their connections, 2 \
                clients sending 7.5 MB bodies over and over"
            .into(),
        requests: REQUESTS,
        alone_p50_ms: quantile(&mut alone, 0.5),
        alone_p99_ms: quantile(&mut alone, 0.99),
        abused_p50_ms: quantile(&mut abused, 0.5),
        abused_p99_ms: quantile(&mut abused, 0.99),
        big_bodies_answered: answered.load(Ordering::Relaxed),
        rss_before_mb,
        rss_after_mb,
    })
}
