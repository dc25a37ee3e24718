//! `llm-judge serve` under clients that misbehave: one client must not stall the others, and
//! no input may crash or block the server.

use crate::remote::{serve, Served};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn addr(s: &Served) -> String {
    s.base
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string()
}

/// CPU seconds the server process has used (user + system).
fn cpu_seconds(s: &Served) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.child.id())).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the command name.
    let ticks = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn threads(s: &Served) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn raw_request(s: &Served, path: &str, body: &str) -> TcpStream {
    let mut t = TcpStream::connect(addr(s)).unwrap();
    write!(
        t,
        "POST /v1/{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    t
}

const LONG: &str = r#"{"messages":[{"role":"user","content":"Write a very long story about a dragon, a knight and a baker, with many chapters."}],"temperature":1.0,"max_tokens":3000,"seed":1,"stream":STREAM}"#;

/// A two-token chat request (with the key, if any), answered within 60 s.
fn small_chat(s: &Served, key: Option<&str>) -> ureq::Response {
    let mut req = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
        .post(&format!("{}/chat/completions", s.base));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    req.send_string(r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#)
        .unwrap()
}

/// Waits until the server uses no more CPU than an idle one would in 1.5 s.
fn becomes_idle(s: &Served) -> bool {
    for _ in 0..20 {
        let before = cpu_seconds(s);
        std::thread::sleep(Duration::from_millis(1500));
        if cpu_seconds(s) - before < 0.3 {
            return true;
        }
    }
    false
}

#[test]
fn a_client_that_leaves_stops_its_generation() {
    let served = serve(&[], &[]);
    for stream in ["false", "true"] {
        let mut t = raw_request(&served, "chat/completions", &LONG.replace("STREAM", stream));
        // Generation is under way: the server is busy.
        std::thread::sleep(Duration::from_millis(1500));
        let before = cpu_seconds(&served);
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            cpu_seconds(&served) - before > 0.5,
            "stream={stream}: not generating"
        );
        if stream == "true" {
            let mut first = [0u8; 64];
            t.read_exact(&mut first).unwrap();
        }
        drop(t);
        assert!(
            becomes_idle(&served),
            "stream={stream}: the server kept generating for a client that left"
        );
    }
    // And it still answers.
    let r = ureq::post(&format!("{}/chat/completions", served.base))
        .send_string(r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#)
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn streamed_text_arrives_token_by_token() {
    let served = serve(&[], &[]);
    let body = LONG.replace("STREAM", "true").replace("3000", "200");
    let start = Instant::now();
    let t = raw_request(&served, "chat/completions", &body);
    let mut lines = BufReader::new(t).lines();
    let mut first_content = None;
    let mut events = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("data: {")
            && line.contains("\"content\":\"")
            && !line.contains("\"content\":\"\"")
        {
            events += 1;
            first_content.get_or_insert(start.elapsed());
        }
        if line == "data: [DONE]" {
            break;
        }
    }
    let total = start.elapsed();
    let first = first_content.expect("some text was streamed");
    assert!(events > 20, "{events} events for up to 200 tokens");
    // The first piece comes with the first tokens, long before the end (not in 8 KB lumps).
    assert!(first * 4 < total, "first text after {first:?} of {total:?}");
}

#[test]
fn oversized_bodies_are_refused_before_they_are_read() {
    let served = serve(&[], &["--max-body-bytes", "2000"]);
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(5000)
    );
    match ureq::post(&format!("{}/chat/completions", served.base)).send_string(&big) {
        Err(ureq::Error::Status(413, r)) => {
            let v: serde_json::Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("2000 bytes"));
        }
        other => panic!("expected 413, got {other:?}"),
    }
}

#[test]
fn stalled_connections_neither_pile_up_threads_nor_block_for_ever() {
    let served = serve(&[], &["--read-timeout", "2", "--max-connections", "16"]);
    let base_threads = threads(&served);
    // 60 clients that connect and never send a byte, and 20 that send half a header.
    let mut idle: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(addr(&served)).unwrap())
        .collect();
    for _ in 0..20 {
        let mut t = TcpStream::connect(addr(&served)).unwrap();
        t.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Le")
            .unwrap();
        idle.push(t);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        threads(&served) <= base_threads + 2,
        "{} threads for stalled connections (from {base_threads})",
        threads(&served)
    );
    // A real client gets its answer: the stalled connections hold no request slot.
    assert_eq!(small_chat(&served, None).status(), 200);
    drop(idle);
}

#[test]
fn requests_are_checked_and_answers_have_unique_ids() {
    let served = serve(&[], &["--max-tokens", "5"]);
    let post = |body: &str| match ureq::post(&format!("{}/chat/completions", served.base))
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let greedy = r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0,"max_tokens":18446744073709551615}"#;
    let (s1, a) = post(greedy);
    let (s2, b) = post(greedy);
    assert_eq!((s1, s2), (200, 200), "{a}");
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&a).unwrap(),
        serde_json::from_str(&b).unwrap(),
    );
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    assert_ne!(a["id"], b["id"], "identical outputs still get their own id");
    assert!(
        a["usage"]["completion_tokens"].as_u64().unwrap() <= 5,
        "the server's cap holds"
    );
    for (body, needle) in [
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#,
            "`max_tokens`",
        ),
        (
            r#"{"messages":[{"role":"user","content":null}]}"#,
            "content",
        ),
    ] {
        let (status, text) = post(body);
        assert_eq!(status, 400, "{body}");
        assert!(text.contains(needle), "{body}: {text}");
        assert!(!text.contains("max_new_tokens"), "{text}");
    }
    // A prompt too long for the context names the field that holds it.
    let long = format!(
        r#"{{"prompt":"{}","max_tokens":1}}"#,
        "word ".repeat(10_000)
    );
    let (status, text) =
        match ureq::post(&format!("{}/completions", served.base)).send_string(&long) {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, 400, "{text}");
    assert_eq!(v["error"]["param"], "prompt", "{text}");
    // A known path with the wrong method: a 405 that says why, in the OpenAI error shape.
    let (status, text) = match ureq::get(&format!("{}/chat/completions", served.base)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 405);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("GET")),
        "{text}"
    );
}

#[test]
fn a_public_address_without_a_key_is_refused() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llm-judge"))
        .args([
            "serve",
            "--model",
            "smollm2-135m-instruct",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--allow-unauthenticated") && err.contains("--api-key-env"),
        "{err}"
    );
}

#[test]
fn idle_and_keyless_clients_hold_no_request_slot() {
    let served = serve(
        &[("LLM_JUDGE_TEST_SERVE_KEY", "k3y")],
        &[
            "--max-connections",
            "2",
            "--read-timeout",
            "30",
            "--api-key-env",
            "LLM_JUDGE_TEST_SERVE_KEY",
        ],
    );
    // 100 connections that never send a byte, and 20 clients without the key that announce
    // a body and never send it, their connections held open.
    let mut held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr(&served)).unwrap())
        .collect();
    for _ in 0..20 {
        // Headers that announce a body which never comes: the key is checked first.
        let mut t = TcpStream::connect(addr(&served)).unwrap();
        t.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n",
        )
        .unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut status = String::new();
        BufReader::new(t.try_clone().unwrap())
            .read_line(&mut status)
            .expect("a keyless client is answered at once");
        assert!(status.contains(" 401 "), "{status}");
        held.push(t);
    }
    // Two request slots, 120 connections held: a client with the key is served at once
    // (before, it waited for the idle ones' 30 s header timeout).
    let t = Instant::now();
    assert_eq!(small_chat(&served, Some("k3y")).status(), 200);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    drop(held);
}

#[test]
fn large_bodies_are_refused_without_stalling_other_clients() {
    let served = serve(&[], &[]);
    // Two bodies of 7.5 MB (under the 8 MB cap): far more text than the context holds.
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "word ".repeat(1_500_000)
    );
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let (url, big) = (format!("{}/chat/completions", served.base), big.clone());
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = ureq::post(&url).send_string(&big);
                (t.elapsed(), r)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Meanwhile a small request is answered: nothing is tokenized on the threads that
    // serve connections (before, both were busy tokenizing for about 10 s).
    let t = Instant::now();
    assert_eq!(small_chat(&served, None).status(), 200);
    let small = t.elapsed();
    assert!(
        small < Duration::from_secs(5),
        "{small:?} for a small request"
    );
    for h in senders {
        let (took, r) = h.join().unwrap();
        match r {
            Err(ureq::Error::Status(400, resp)) => {
                let v: serde_json::Value =
                    serde_json::from_str(&resp.into_string().unwrap()).unwrap();
                assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
                assert!(
                    v["error"]["message"].as_str().unwrap().contains("7500"),
                    "{v}"
                );
            }
            other => panic!("expected 400, got {other:?}"),
        }
        assert!(
            took < Duration::from_secs(8),
            "{took:?} to refuse a large body"
        );
    }
    assert!(
        small < Duration::from_secs(5),
        "{small:?} for a small request"
    );
}
