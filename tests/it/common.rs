//! Shared fixtures: the bundled models, loaded once per test binary.

use llm_judge::model::bundled::{self, BundledModel};
use llm_judge::{Model, ModelSource};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

static FETCH: Mutex<()> = Mutex::new(());

/// Path of a bundled model, fetching it on first use.
pub fn model_path(m: &BundledModel) -> PathBuf {
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    m.ensure(&mut |line| println!("{line}"))
        .unwrap_or_else(|e| panic!("bundled model {} unavailable: {e}", m.name))
        .0
}

fn load(m: &BundledModel, cell: &'static OnceLock<Model>) -> Model {
    cell.get_or_init(|| {
        model_path(m);
        Model::load(&ModelSource::Bundled(m.name.into())).expect("model loads")
    })
    .clone()
}

/// SmolLM2 135M Instruct (llama architecture, ChatML).
pub fn smollm() -> Model {
    static CELL: OnceLock<Model> = OnceLock::new();
    load(&bundled::SMOLLM2, &CELL)
}

/// Gemma 3 270M base (gemma3 architecture, no template).
pub fn gemma() -> Model {
    static CELL: OnceLock<Model> = OnceLock::new();
    load(&bundled::GEMMA3, &CELL)
}

/// Qwen2.5-Coder 0.5B Instruct (qwen2 architecture, ChatML): the qwen2 model of the tests.
pub fn qwen() -> Model {
    static CELL: OnceLock<Model> = OnceLock::new();
    load(&bundled::QWEN25_05B, &CELL)
}

/// Qwen2.5-Coder 1.5B Instruct: the bundled judge, in the tests only against llama.cpp.
pub fn qwen15() -> Model {
    static CELL: OnceLock<Model> = OnceLock::new();
    load(&bundled::QWEN25_15B, &CELL)
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `target/test-tmp/<name>-<pid>-<n>`.
    pub fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The write-up's prompt file.
pub fn prompts_file() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/prompts/writeup.jsonl")
}

/// Writes `toml` as `<dir>/<name>.toml` and runs it into `<dir>/<out>`, silently.
pub fn run_toml(dir: &std::path::Path, name: &str, toml: &str, out: &str) -> llm_judge::RunOutput {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, toml).unwrap();
    run_file(&p, &dir.join(out))
}

/// Runs an experiment file into `out`, silently.
pub fn run_file(path: &std::path::Path, out: &std::path::Path) -> llm_judge::RunOutput {
    let cfg = llm_judge::experiment::ExperimentConfig::load(path).unwrap();
    llm_judge::results::run_plan(
        &cfg.plan().unwrap(),
        out,
        &mut llm_judge::experiment::Silent,
    )
    .unwrap()
}

/// Reads one whole HTTP/1.1 request (head, then `content-length` bytes of body) from a
/// test server's connection, and returns the head and the body. A fixture server must read
/// all of the request before it answers and closes: closing with unread bytes makes the
/// kernel reset the connection, and the client may then see the reset instead of the reply.
pub fn read_request(stream: &std::net::TcpStream) -> (String, Vec<u8>) {
    use std::io::{BufRead, Read};
    let mut r = std::io::BufReader::new(stream);
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; len];
    let got = r.read_exact(&mut body).map(|_| len).unwrap_or(0);
    body.truncate(got);
    (head, body)
}
