//! The hf-hub path against a local server on 127.0.0.1 that serves a real GGUF the way the
//! hub does: `/{repo}/resolve/{revision}/{file}`, range requests, `etag` and
//! `x-repo-commit` headers.

use crate::common::{model_path, TempDir};
use llm_judge::model::bundled;
use llm_judge::model::source::{hub_get_with, HubOptions};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct FakeHub {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    pub auth: Arc<Mutex<Vec<String>>>,
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `file` as `test-org/tiny/model.gguf` at revision `main`, for at most 64
/// connections.
pub fn serve(file: PathBuf) -> FakeHub {
    serve_files("test-org/tiny", vec![("model.gguf".into(), file)], 64)
}

/// Serves each `(name, file)` as `/{repo}/resolve/main/{name}`, for at most `connections`
/// connections; every other path is a 404.
pub fn serve_files(repo: &str, files: Vec<(String, PathBuf)>, connections: usize) -> FakeHub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (r2, a2) = (requests.clone(), auth.clone());
    let files: HashMap<String, Vec<u8>> = files
        .into_iter()
        .map(|(name, f)| {
            (
                format!("/{repo}/resolve/main/{name}"),
                std::fs::read(f).unwrap(),
            )
        })
        .collect();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(stream) = stream else { continue };
            r2.fetch_add(1, Ordering::SeqCst);
            let _ = handle(stream, &files, &a2);
        }
    });
    FakeHub {
        url,
        requests,
        auth,
    }
}

fn handle(
    mut stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    auth: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        match k.to_ascii_lowercase().as_str() {
            "range" => range = Some(v.trim().to_string()),
            "authorization" => auth.lock().unwrap().push(v.trim().to_string()),
            _ => {}
        }
    }
    let Some(data) = files.get(&path) else {
        let body = b"{\"error\":\"Entry not found\"}";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )?;
        return stream.write_all(body);
    };
    let n = data.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            let b: usize = if b.is_empty() {
                n - 1
            } else {
                b.parse().unwrap()
            };
            (a, b.min(n - 1))
        }
        None => (0, n - 1),
    };
    write!(
        stream,
        "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {start}-{end}/{n}\r\n\
         etag: \"fake-etag-{n}\"\r\nx-repo-commit: {COMMIT}\r\nconnection: close\r\n\r\n",
        end + 1 - start
    )?;
    stream.write_all(&data[start..=end])
}

#[test]
fn downloads_a_real_gguf_through_hf_hub() {
    let src = model_path(&bundled::SMOLLM2);
    let hub = serve(src.clone());
    let home = TempDir::new("hf-home");
    let opts = HubOptions {
        endpoint: Some(hub.url.clone()),
        cache_dir: Some(home.0.join("hub")),
        token: Some("hf_test_token".into()),
        offline: false,
    };
    let got = hub_get_with("test-org/tiny", "model.gguf", "main", &opts).unwrap();
    assert!(got.starts_with(&home.0));
    assert_eq!(
        llm_judge::model::fingerprint::sha256_file(&got).unwrap(),
        bundled::SMOLLM2.sha256,
        "downloaded bytes differ"
    );
    assert!(hub
        .auth
        .lock()
        .unwrap()
        .iter()
        .any(|a| a == "Bearer hf_test_token"));

    // Offline: served from the cache, no request reaches the server.
    let before = hub.requests.load(Ordering::SeqCst);
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    let again = hub_get_with("test-org/tiny", "model.gguf", "main", &offline).unwrap();
    assert_eq!(again, got);
    assert_eq!(hub.requests.load(Ordering::SeqCst), before);

    // A file the hub does not have is an error naming it.
    let err = hub_get_with("test-org/tiny", "missing.gguf", "main", &opts).unwrap_err();
    assert!(err.to_string().contains("missing.gguf"), "{err}");
    // Offline with an empty cache is an error, not a download.
    let empty = HubOptions {
        cache_dir: Some(home.0.join("empty")),
        offline: true,
        ..opts
    };
    assert!(hub_get_with("test-org/tiny", "model.gguf", "main", &empty).is_err());
}

#[test]
fn downloads_a_safetensors_checkpoint_through_hf_hub() {
    let (dir, _) = crate::hf::converted();
    let files = [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ]
    .iter()
    .map(|f| (f.to_string(), dir.join(f)))
    .collect();
    let hub = serve_files("test-org/smol", files, 256);
    let home = TempDir::new("hf-home-ck");
    let opts = HubOptions {
        endpoint: Some(hub.url.clone()),
        cache_dir: Some(home.0.join("hub")),
        token: None,
        offline: false,
    };
    // No index on the server: the single-file weights are fetched instead.
    let got =
        llm_judge::model::source::hub_checkpoint_with("test-org/smol", "main", &opts).unwrap();
    assert!(got.starts_with(&home.0));
    assert_eq!(
        llm_judge::model::hf::checkpoint_sha256(&got).unwrap(),
        llm_judge::model::hf::checkpoint_sha256(&dir).unwrap(),
        "downloaded checkpoint differs"
    );
    let info = llm_judge::model::inspect(&llm_judge::ModelSource::Path(got.clone())).unwrap();
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.quantization, "f32");
    let mut m = llm_judge::Model::load(&llm_judge::ModelSource::Path(got)).unwrap();
    let out = m
        .generate(
            &llm_judge::Input::new(Default::default(), None, "What is the capital of France?"),
            &llm_judge::SamplingParams::greedy().with_max_new_tokens(12),
        )
        .unwrap();
    assert!(out.text.contains("Paris"), "{}", out.text);
    // Offline, from the cache alone.
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    let before = hub.requests.load(Ordering::SeqCst);
    llm_judge::model::source::hub_checkpoint_with("test-org/smol", "main", &offline).unwrap();
    assert_eq!(hub.requests.load(Ordering::SeqCst), before);
    // A repository without weights names what it tried.
    let err = llm_judge::model::source::hub_checkpoint_with("test-org/none", "main", &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}
