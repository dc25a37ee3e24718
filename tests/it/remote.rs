//! The OpenAI-compatible client against the project's own server (a real bundled model on
//! 127.0.0.1), and against a local fault-injecting server.

use crate::common::{model_path, prompts_file, read_request, run_toml, smollm, TempDir};
use llm_judge::backend::{Backend, EndpointConfig, LabelQuery, LocalBackend, OpenAiBackend};
use llm_judge::model::bundled;
use llm_judge::{Input, Message, Mode, SamplingParams};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// `llm-judge serve` on a free loopback port; killed on drop.
pub struct Served {
    pub child: Child,
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(extra_env: &[(&str, &str)], extra_args: &[&str]) -> Served {
    model_path(&bundled::SMOLLM2);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llm-judge"));
    cmd.args(["serve", "--model", "smollm2-135m-instruct", "--port", "0"])
        .args(extra_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .nth(2)
        .expect("listening line")
        .to_string();
    Served { child, base }
}

pub fn endpoint(base: &str) -> EndpointConfig {
    let mut e = EndpointConfig::new(base, "smollm2-135m-instruct");
    e.api_key_env = "LLM_JUDGE_TEST_NO_KEY".into();
    e
}

#[test]
fn client_and_server_match_the_local_model() {
    let served = serve(&[], &[]);
    let mut remote = OpenAiBackend::new(endpoint(&served.base)).unwrap();
    let mut local = LocalBackend::new(smollm());
    let msgs = Input::Chat(vec![Message::user("Name three primary colors.")]);
    let p = SamplingParams::greedy().with_max_new_tokens(24);
    let a = remote.generate(&msgs, &p).unwrap();
    let b = local.generate(&msgs, &p).unwrap();
    assert_eq!(a.text, b.text);
    assert_eq!(a.completion_tokens, b.completion_tokens);
    assert_eq!(a.prompt_tokens, b.prompt_tokens);

    let q = LabelQuery {
        input: Input::Chat(vec![Message::user(
            "Rate this answer from 1 to 4: 'Paris is in France.'",
        )]),
        prefix: "Score: [[".into(),
        labels: (1..=4).map(|k| k.to_string()).collect(),
    };
    let pr = remote.label_distribution(&q).unwrap();
    let pl = local.label_distribution(&q).unwrap();
    for (x, y) in pr.probs.iter().zip(&pl.probs) {
        assert!((x - y).abs() < 1e-3, "{pr:?} vs {pl:?}");
    }
    assert!((pr.mass - pl.mass).abs() < 1e-3, "{pr:?} vs {pl:?}");

    // Streaming gives the same text in pieces.
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "Name three primary colors."}],
        "temperature": 0, "max_tokens": 24, "stream": true,
    });
    let resp = ureq::post(&format!("{}/chat/completions", served.base))
        .send_string(&body.to_string())
        .unwrap();
    assert_eq!(resp.header("Content-Type"), Some("text/event-stream"));
    let mut text = String::new();
    let mut pieces = 0;
    let mut done = false;
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
            pieces += 1;
        }
    }
    assert!(done && pieces > 3);
    assert_eq!(text, a.text);
}

#[test]
fn server_errors_are_openai_shaped() {
    let served = serve(
        &[("LLMJ_TEST_KEY", "sekret")],
        &["--api-key-env", "LLMJ_TEST_KEY"],
    );
    let url = format!("{}/chat/completions", served.base);
    let call = |key: Option<&str>, body: &str| {
        let mut r = ureq::post(&url);
        if let Some(k) = key {
            r = r.set("Authorization", &format!("Bearer {k}"));
        }
        match r.send_string(body) {
            Ok(resp) => (resp.status(), resp.into_string().unwrap()),
            Err(ureq::Error::Status(c, resp)) => (c, resp.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    };
    let ok = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    assert_eq!(call(None, ok).0, 401);
    assert_eq!(call(Some("wrong"), ok).0, 401);
    assert_eq!(call(Some("sekret"), ok).0, 200);
    for (body, param) in [
        (r#"{"messages":[]}"#, "messages"),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":-1}"#,
            "temperature",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"top_p":1.5}"#,
            "top_p",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"min_p":2}"#,
            "min_p",
        ),
        (
            r#"{"messages":[{"role":"robot","content":"hi"}]}"#,
            "messages",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"top_logprobs":50}"#,
            "top_logprobs",
        ),
        // Structured output it cannot give is refused, not ignored.
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
            "response_format",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object","properties":{"a":{"type":"string","pattern":"x"},"b":{"type":"string"}}}}}}"#,
            "response_format",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object","properties":{"a":{"type":"string","pattern":"(unclosed"}}}}}}"#,
            "response_format",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"stream":true,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object","properties":{"a":{"type":"string","pattern":"^(?:x)$"}}}}}}"#,
            "response_format",
        ),
    ] {
        let (status, text) = call(Some("sekret"), body);
        assert_eq!(status, 400, "{body}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], param, "{text}");
    }
    let (status, _) = call(Some("sekret"), "not json");
    assert_eq!(status, 400);
    // A verdict held to its pattern comes back as the schema's one property.
    let (status, text) = call(
        Some("sekret"),
        r#"{"messages":[{"role":"user","content":"Which is better, A or B?"}],"max_tokens":2,"seed":1,"response_format":{"type":"json_schema","json_schema":{"name":"verdict","strict":true,"schema":{"type":"object","properties":{"verdict":{"type":"string","pattern":"^(?:\\[\\[[ABC]\\]\\])$"}},"required":["verdict"]}}}}"#,
    );
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let content: serde_json::Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    let verdict = content["verdict"].as_str().unwrap();
    assert!(["[[A]]", "[[B]]", "[[C]]"].contains(&verdict), "{text}");
    // /v1/completions refuses what it cannot do instead of ignoring it.
    let completions = format!("{}/completions", served.base);
    for (body, param) in [
        (r#"{"prompt":"hi","max_tokens":2,"stream":true}"#, "stream"),
        (r#"{"prompt":"hi","max_tokens":2,"n":3}"#, "n"),
        (
            r#"{"prompt":"hi","max_tokens":2,"presence_penalty":0.5}"#,
            "presence_penalty",
        ),
    ] {
        let r = ureq::post(&completions)
            .set("Authorization", "Bearer sekret")
            .send_string(body);
        let Err(ureq::Error::Status(400, resp)) = r else {
            panic!("{body}: not a 400");
        };
        let v: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
        assert_eq!(v["error"]["param"], param, "{body}");
    }
    // The key never appears in the client's debug output.
    std::env::set_var("LLMJ_TEST_KEY_CLIENT", "sekret");
    let mut e = endpoint(&served.base);
    e.api_key_env = "LLMJ_TEST_KEY_CLIENT".into();
    let client = OpenAiBackend::new(e).unwrap();
    assert!(!format!("{client:?}").contains("sekret"));
    assert!(!client.identity().unwrap().contains("sekret"));
}

/// A server that answers each connection from a script: `500`, `429`, `drop`, `stall`, or
/// `ok`; the last entry repeats. Counts connections.
pub fn fault_server(script: Vec<&'static str>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().take(40).enumerate() {
            let Ok(mut s) = stream else { continue };
            c2.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            std::thread::spawn(move || {
                let (head, body) = read_request(&s);
                let request = format!("{head}\r\n{}", String::from_utf8_lossy(&body));
                let step = script[i.min(script.len() - 1)];
                let reply = |s: &mut std::net::TcpStream, status: &str, body: &str, extra: &str| {
                    let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
                    body.len()
                );
                };
                match step {
                    "500" => reply(
                        &mut s,
                        "500 Internal Server Error",
                        r#"{"error":{"message":"boom"}}"#,
                        "",
                    ),
                    "429" => reply(
                        &mut s,
                        "429 Too Many Requests",
                        r#"{"error":{"message":"slow down"}}"#,
                        "retry-after: 0\r\n",
                    ),
                    "drop" => drop(s),
                    // The headers promise more body than comes: the connection ends early.
                    "cut" => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\nconnection: close\r\n\r\n{{\"choices\":[{{\"index\":0,"
                        );
                    }
                    // A whole HTTP body whose JSON stops mid-way (a proxy cut it).
                    "half" => reply(&mut s, "200 OK", r#"{"choices":[{"index":0,"mess"#, ""),
                    // A reply of 64 KiB of text, valid JSON.
                    "big" => {
                        let text = "x".repeat(64 << 10);
                        let body = format!(
                            r#"{{"choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}]}}"#
                        );
                        reply(&mut s, "200 OK", &body, "")
                    }
                    // A server that echoes the request (headers included) in its error.
                    "echo" => {
                        let msg = serde_json::json!({"error": {"message": format!("bad request: {request}")}});
                        reply(&mut s, "400 Bad Request", &msg.to_string(), "")
                    }
                    "stall" => std::thread::sleep(std::time::Duration::from_secs(3)),
                    // Next-token log-probabilities: plausible, positive, and far too large.
                    lp if lp.starts_with("lp ") => {
                        let v: Vec<&str> = lp[3..].split(',').collect();
                        let body = format!(
                            r#"{{"choices":[{{"index":0,"message":{{"role":"assistant","content":"3"}},"logprobs":{{"content":[{{"token":"3","logprob":{a},"top_logprobs":[{{"token":"3","logprob":{a}}},{{"token":"4","logprob":{b}}}]}}]}},"finish_reason":"length"}}]}}"#,
                            a = v[0],
                            b = v[1]
                        );
                        reply(&mut s, "200 OK", &body, "")
                    }
                    // An endpoint without structured output: a request for it is refused.
                    "strict" if request.contains("response_format") => reply(
                        &mut s,
                        "400 Bad Request",
                        r#"{"error":{"message":"response_format is not supported","type":"invalid_request_error"}}"#,
                        "",
                    ),
                    _ => reply(
                        &mut s,
                        "200 OK",
                        r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
                        "",
                    ),
                }
            });
        }
    });
    (base, count)
}

pub fn fast(base: &str) -> EndpointConfig {
    let mut e = endpoint(base);
    e.backoff_s = Some(0.01);
    e.timeout_s = 0.5;
    e.retries = 3;
    e
}

#[test]
fn transient_failures_are_retried() {
    let (base, count) = fault_server(vec!["500", "429", "drop", "ok"]);
    let mut c = OpenAiBackend::new(fast(&base)).unwrap();
    let g = c
        .generate(
            &Input::Chat(vec![Message::user("hi")]),
            &SamplingParams::greedy(),
        )
        .unwrap();
    assert_eq!(g.text, "fine");
    assert_eq!(count.load(Ordering::SeqCst), 4);
    // Only the reply that came counts: its `usage` (3 prompt, 1 completion tokens), at a
    // price of 2 and 10 per million.
    let used = c.usage();
    assert_eq!((used.prompt_tokens, used.completion_tokens), (3, 1));
    let price = llm_judge::backend::Price {
        input_per_mtok: 2.0,
        output_per_mtok: 10.0,
    };
    assert!((price.cost(used) - 16e-6).abs() < 1e-15);
}

#[test]
fn an_endpoint_without_structured_output_is_asked_in_text_from_then_on() {
    let (base, count) = fault_server(vec!["strict"]);
    let mut c = OpenAiBackend::new(fast(&base)).unwrap();
    let held = SamplingParams::greedy().with_constraint(Some(llm_judge::sampling::Constraint {
        regex: "fine|poor".into(),
        free_text: false,
    }));
    let chat = Input::Chat(vec![Message::user("hi")]);
    // Refused with `response_format`, answered without it: the text is read as it came.
    assert_eq!(c.generate(&chat, &held).unwrap().text, "fine");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // The next verdict is asked in text at once.
    assert_eq!(c.generate(&chat, &held).unwrap().text, "fine");
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // A refusal that has nothing to do with the format stays an error.
    let (base, count) = fault_server(vec!["echo"]);
    let mut c = OpenAiBackend::new(fast(&base)).unwrap();
    let e = c.generate(&chat, &held).unwrap_err().to_string();
    assert!(e.contains("400") || e.contains("bad request"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn a_reply_cut_off_in_transit_is_retried_and_an_oversized_one_is_not() {
    let input = Input::Chat(vec![Message::user("hi")]);
    for cut in ["cut", "half"] {
        let (base, count) = fault_server(vec![cut, "ok"]);
        let mut c = OpenAiBackend::new(fast(&base)).unwrap();
        let g = c.generate(&input, &SamplingParams::greedy()).unwrap();
        assert_eq!(g.text, "fine");
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "the {cut} reply was retried"
        );
    }

    let (base, count) = fault_server(vec!["big"]);
    let mut e = fast(&base);
    e.max_response_bytes = 16 << 10;
    let mut c = OpenAiBackend::new(e).unwrap();
    let err = c.generate(&input, &SamplingParams::greedy()).unwrap_err();
    assert!(!err.is_transient(), "{err}");
    let err = err.to_string();
    assert!(err.contains("max_response_bytes"), "{err}");
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "no retry: it would be as large again"
    );
}

#[test]
fn persistent_failures_end_in_a_clear_error() {
    for (script, needle) in [
        (vec!["500"], "HTTP 500: boom"),
        (vec!["429"], "HTTP 429"),
        (vec!["stall"], "timed out"),
    ] {
        let (base, count) = fault_server(script);
        let mut c = OpenAiBackend::new(fast(&base)).unwrap();
        let t = std::time::Instant::now();
        let err = c
            .generate(
                &Input::Chat(vec![Message::user("hi")]),
                &SamplingParams::greedy(),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle) || err.contains("timeout"), "{err}");
        assert!(err.contains("after 4 attempts"), "{err}");
        assert_eq!(count.load(Ordering::SeqCst), 4, "1 try + 3 retries");
        assert!(t.elapsed().as_secs_f64() < 10.0);
    }
}

#[test]
fn impossible_log_probabilities_are_refused_naming_the_token() {
    let query = LabelQuery {
        input: Input::Chat(vec![Message::user("Score it: [[")]),
        prefix: "Score: [[".into(),
        labels: (1..=4).map(|k| k.to_string()).collect(),
    };
    // Plausible values give a distribution; a positive or huge one is an error naming the
    // token and the value, not a probability mass of 2e17 or "no label token".
    let (base, _) = fault_server(vec!["lp -0.25,-1.5"]);
    let d = OpenAiBackend::new(fast(&base))
        .unwrap()
        .label_distribution(&query)
        .unwrap();
    assert!(d.probs[2] > d.probs[3] && d.probs[3] > 0.0, "{d:?}");
    // The top list had only `3` and `4`: `1` and `2` are missing, each at most as likely
    // as the least likely listed token, and together at most the mass the list left.
    let (base, _) = fault_server(vec!["lp -0.5,-2.0"]);
    let d = OpenAiBackend::new(fast(&base))
        .unwrap()
        .label_distribution(&query)
        .unwrap();
    let (p3, p4) = ((-0.5f64).exp(), (-2.0f64).exp());
    assert_eq!(d.missing, vec![0, 1]);
    assert!((d.missing_at_most - p4).abs() < 1e-12);
    let e = (3.0 * p3 + 4.0 * p4) / (p3 + p4);
    assert!((d.expectation() - e).abs() < 1e-12);
    let extra = 1.0 - p3 - p4;
    let low = (3.0 * p3 + 4.0 * p4 + extra) / (p3 + p4 + extra);
    let (lo, hi) = d.expectation_bounds();
    assert!(
        (lo - low).abs() < 1e-12 && (hi - e).abs() < 1e-12,
        "{lo} {hi} vs {low} {e}"
    );
    for values in ["lp 39.0,-1.0", "lp -0.1,1e308"] {
        let (base, _) = fault_server(vec![values]);
        let err = OpenAiBackend::new(fast(&base))
            .unwrap()
            .label_distribution(&query)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("impossible log-probability"),
            "{values}: {err}"
        );
        let bad = if values.contains("39") { "39" } else { "1e308" };
        assert!(err.contains(bad), "{values}: {err}");
    }
}

#[test]
fn a_failing_endpoint_is_recorded_and_the_grid_goes_on() {
    let (base, _) = fault_server(vec!["500", "500", "ok"]);
    let dir = TempDir::new("grid-fail");
    let prompts = prompts_file();
    let toml = format!(
        r#"name = "mixed"
prompts = "{}"
limit = 2
max_tokens = 8

[[models]]
name = "broken"
[models.endpoint]
base_urls = ["{base}"]
model = "x"
api_key_env = "LLM_JUDGE_TEST_NO_KEY"
retries = 0
backoff_s = 0.01
timeout_s = 1.0

[[models]]
name = "smol"
source = "smollm2-135m-instruct"

[[settings]]
name = "g"
preset = "greedy"
"#,
        prompts.display()
    );
    model_path(&bundled::SMOLLM2);
    let out = run_toml(&dir.0, "mixed", &toml, "o");
    let rs: Vec<llm_judge::records::ResponseRecord> =
        llm_judge::store::Store::open(dir.0.join("o"))
            .unwrap()
            .load("responses")
            .unwrap();
    assert_eq!(out.responses.height(), 4);
    let broken: Vec<_> = rs.iter().filter(|r| r.model == "broken").collect();
    assert_eq!(broken.len(), 2);
    assert!(broken
        .iter()
        .all(|r| r.text.is_none() && r.error.as_deref().unwrap_or("").contains("HTTP 500")));
    assert!(rs
        .iter()
        .filter(|r| r.model == "smol")
        .all(|r| r.text.is_some()));
    assert!(
        out.warnings()
            .iter()
            .any(|w| w.contains("generate: 2 failed")),
        "{:?}",
        out.warnings()
    );
    assert_eq!(out.failures().len(), 2);
    assert!(
        out.failures().iter().all(|f| f.transient),
        "HTTP 500 is worth a retry"
    );

    // Once the endpoint recovers, a rerun retries the failed answers and keeps the rest.
    let again = run_toml(&dir.0, "mixed", &toml, "o");
    assert!(again.warnings().is_empty(), "{:?}", again.warnings());
    let rs: Vec<llm_judge::records::ResponseRecord> =
        llm_judge::store::Store::open(dir.0.join("o"))
            .unwrap()
            .load("responses")
            .unwrap();
    assert_eq!(rs.len(), 4);
    assert!(rs
        .iter()
        .filter(|r| r.model == "broken")
        .all(|r| r.text.as_deref() == Some("fine")));
}

#[test]
fn a_failing_judge_endpoint_is_reported_and_the_run_finishes() {
    let (base, _) = fault_server(vec!["500"]);
    let dir = TempDir::new("judge-fail");
    let prompts = prompts_file();
    let toml = format!(
        "name = \"jf\"\nprompts = \"{}\"\nlimit = 1\nmax_tokens = 4\n\n[[models]]\nname = \"smol\"\nsource = \"smollm2-135m-instruct\"\n\n[[settings]]\nname = \"g\"\npreset = \"greedy\"\n\n[judge]\nmodel = \"remote\"\nmodes = [\"rubric\"]\nsanity_check = false\n[judge.endpoint]\nbase_urls = [\"{base}\"]\nmodel = \"x\"\napi_key_env = \"LLM_JUDGE_TEST_NO_KEY\"\nretries = 1\nbackoff_s = 0.01\n",
        prompts.display()
    );
    model_path(&bundled::SMOLLM2);
    let out = run_toml(&dir.0, "jf", &toml, "o");
    assert_eq!(out.responses.height(), 1);
    assert_eq!(out.judgments.height(), 0);
    assert!(
        out.warnings()
            .iter()
            .any(|w| w.contains("judge rubric: 1 failed") && w.contains("run again")),
        "{:?}",
        out.warnings()
    );
}

#[test]
fn judge_behind_serve_matches_the_local_judge() {
    let served = serve(&[], &[]);
    let dir = TempDir::new("remote-judge");
    let prompts = prompts_file();
    let base_toml = format!(
        r#"name = "judge-compare"
prompts = "{}"
limit = 2
seed = 3
max_tokens = 16

[[models]]
name = "smol"
source = "smollm2-135m-instruct"

[[settings]]
name = "p1"
preset = "p1"

[judge]
model = "smollm2-135m-instruct"
modes = ["rubric", "expected"]
max_tokens = 24
retries = 0
sanity_check = false
constrained = CONSTRAINED
"#,
        prompts.display()
    );
    let remote_toml = format!(
        "{base_toml}\n[judge.endpoint]\nbase_urls = [\"{}\"]\nmodel = \"smollm2-135m-instruct\"\napi_key_env = \"LLM_JUDGE_TEST_NO_KEY\"\n",
        served.base
    );
    let run = |text: &str, name: &str| {
        let p = dir.0.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        let cfg = llm_judge::experiment::ExperimentConfig::load(&p).unwrap();
        llm_judge::results::run_plan(
            &cfg.plan().unwrap(),
            &dir.0.join(name),
            &mut llm_judge::experiment::Silent,
        )
        .unwrap()
    };
    // Free text, and verdicts held to the rubric's form: locally by the decoder, through
    // the endpoint by structured output (`response_format`), which `serve` decodes the same
    // way. Either way the two judges write the same verdicts.
    for constrained in [false, true] {
        let on = |t: &str| t.replace("CONSTRAINED", &constrained.to_string());
        let local = run(&on(&base_toml), &format!("local-{constrained}"));
        let remote = run(&on(&remote_toml), &format!("remote-{constrained}"));
        same_judgments(&local, &remote);
        if constrained {
            let rubric = remote
                .judgment_rows
                .iter()
                .filter(|r| r.mode == Mode::Rubric);
            assert!(rubric.clone().count() > 0);
            for r in rubric {
                assert!(r.parse_ok && r.raw.contains("[["), "{}", r.raw);
            }
        }
    }
}

fn same_judgments(local: &llm_judge::RunOutput, remote: &llm_judge::RunOutput) {
    let key = |j: &llm_judge::records::JudgmentRecord| {
        (j.mode, j.response_key.clone(), j.criterion.clone())
    };
    assert_eq!(local.judgment_rows.len(), remote.judgment_rows.len());
    for l in &local.judgment_rows {
        let r = remote
            .judgment_rows
            .iter()
            .find(|r| key(r) == key(l))
            .expect("same rows");
        if l.mode == Mode::Rubric {
            assert_eq!(l.raw, r.raw);
            assert_eq!(l.score, r.score);
        } else {
            // The server runs each prompt whole; the local judge continues cached prefixes
            // (split where a round's queries part). A split changes nothing, so the scores
            // agree up to the logprobs' trip through JSON.
            let (a, b) = (l.expected_score.unwrap(), r.expected_score.unwrap());
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

#[test]
fn requests_in_flight_and_rate_limit() {
    // A server that answers after 300 ms: 8 requests with 4 in flight take about 0.6 s,
    // one at a time about 2.4 s.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let peak = Arc::new(AtomicUsize::new(0));
    let now_open = Arc::new(AtomicUsize::new(0));
    let (p2, o2) = (peak.clone(), now_open.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { continue };
            let (p, o) = (p2.clone(), o2.clone());
            std::thread::spawn(move || {
                read_request(&s);
                let n = o.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(300));
                o.fetch_sub(1, Ordering::SeqCst);
                let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
                let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            });
        }
    });
    let dir = TempDir::new("in-flight");
    let prompts = prompts_file();
    let run = |in_flight: usize, rate: &str, name: &str| {
        let toml = format!(
            "name = \"f\"\nprompts = \"{}\"\nlimit = 8\n\n[[models]]\nname = \"r\"\n[models.endpoint]\nbase_urls = [\"{base}\"]\nmodel = \"x\"\napi_key_env = \"LLM_JUDGE_TEST_NO_KEY\"\nin_flight = {in_flight}\n{rate}\n\n[[settings]]\nname = \"g\"\npreset = \"greedy\"\n",
            prompts.display()
        );
        let p = dir.0.join(format!("{name}.toml"));
        std::fs::write(&p, toml).unwrap();
        let cfg = llm_judge::experiment::ExperimentConfig::load(&p).unwrap();
        let t = std::time::Instant::now();
        let out = llm_judge::results::run_plan(
            &cfg.plan().unwrap(),
            &dir.0.join(name),
            &mut llm_judge::experiment::Silent,
        )
        .unwrap();
        assert_eq!(out.responses.height(), 8);
        (t.elapsed().as_secs_f64(), out)
    };
    peak.store(0, Ordering::SeqCst);
    // Each reply reports 1 prompt and 1 completion token: 8 and 8 over the 4 workers, at
    // 1 and 2 per token.
    let (_, out) = run(
        4,
        "price = { input_per_mtok = 1000000.0, output_per_mtok = 2000000.0 }",
        "four",
    );
    assert_eq!(peak.load(Ordering::SeqCst), 4, "4 requests in flight");
    let u = &out.usage()[0];
    assert_eq!(
        (u.calls, u.prompt_tokens, u.completion_tokens),
        (8, 8, 8),
        "{u:?}"
    );
    assert_eq!(u.cost, Some(24.0));
    peak.store(0, Ordering::SeqCst);
    run(1, "", "one");
    assert_eq!(peak.load(Ordering::SeqCst), 1, "one at a time");
    // 8 requests at 10 per second need at least 0.7 s even with 4 in flight.
    let (limited, _) = run(4, "requests_per_s = 10.0", "limited");
    assert!(limited >= 0.7, "{limited}");
}

#[test]
fn no_secret_reaches_any_file() {
    // The endpoint echoes the request, Authorization header included, into its error; the
    // URL carries a user and password. Neither may reach a record, table, log or run.json.
    let (base, _) = fault_server(vec!["echo"]);
    let base = base.replace("http://", "http://alice:pa55word@");
    let dir = TempDir::new("secrets");
    std::env::set_var("LLM_JUDGE_TEST_SECRET_KEY", "sk-very-secret-123");
    let toml = format!(
        "name = \"s\"\nprompts = \"{}\"\nlimit = 1\nmax_tokens = 4\n\n[[models]]\nname = \"r\"\n[models.endpoint]\nbase_urls = [\"{base}\"]\nmodel = \"x\"\napi_key_env = \"LLM_JUDGE_TEST_SECRET_KEY\"\nretries = 0\n\n[[settings]]\nname = \"g\"\npreset = \"greedy\"\n",
        prompts_file().display()
    );
    let out = run_toml(&dir.0, "s", &toml, "o");
    assert_eq!(out.failures().len(), 1);
    let err = &out.failures()[0].error;
    assert!(
        err.contains("bad request") && err.contains("[redacted]"),
        "{err}"
    );
    assert!(!out.failures()[0].transient, "a 400 is not worth a retry");
    for entry in std::fs::read_dir(dir.0.join("o")).unwrap() {
        let p = entry.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["sk-very-secret-123", "pa55word", "alice:"] {
            assert!(!text.contains(secret), "{} holds `{secret}`", p.display());
        }
    }
}

/// Base64 as HTTP Basic credentials write it.
fn b64(bytes: &[u8]) -> String {
    llm_judge::plot::base64(bytes)
}

#[test]
fn no_form_of_a_url_password_reaches_any_file_or_stream() {
    // Property test, fixed seed: users and passwords over the whole printable range, written
    // into the URL as a user would (only `@ / ? # : %` escaped; `^ | { } \`` and spaces as
    // they are, which a URL normaliser would percent-encode), against an endpoint that
    // echoes the request (Authorization header included) and against a refused connection
    // on an upper-case host. No form of either secret may reach a file or stderr.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(27);
    let printable: Vec<char> = (0x20u8..0x7f).map(char::from).collect();
    let escape = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                '@' | '/' | '?' | '#' | ':' | '%' => format!("%{:02X}", c as u32),
                c => c.to_string(),
            })
            .collect()
    };
    let dir = TempDir::new("url-secrets");
    for case in 0..12 {
        let mut word = |n: usize| -> String {
            (0..n)
                .map(|_| printable[rng.random_range(0..printable.len())])
                .collect()
        };
        let (user, pass) = (format!("u{}", word(9)), format!("p{}", word(11)));
        let info = format!("{}:{}", escape(&user), escape(&pass));
        let base = if case % 2 == 0 {
            let (b, _) = fault_server(vec!["echo"]);
            b.replace("http://", &format!("http://{info}@"))
        } else {
            format!("http://{info}@LOCALHOST:1/v1")
        };
        let toml = format!(
            "name = \"s\"\nprompts = \"{}\"\nlimit = 1\nmax_tokens = 4\n\n[[models]]\nname = \"r\"\n[models.endpoint]\nbase_urls = [{}]\nmodel = \"x\"\napi_key_env = \"LLM_JUDGE_TEST_NO_KEY\"\nretries = 0\ntimeout_s = 2.0\n\n[[settings]]\nname = \"g\"\npreset = \"greedy\"\n",
            prompts_file().display(),
            // A TOML literal string takes every printable character but `'`.
            if base.contains('\'') {
                format!("\"{}\"", base.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                format!("'{base}'")
            }
        );
        let p = dir.0.join(format!("case{case}.toml"));
        std::fs::write(&p, &toml).unwrap();
        let out_dir = dir.0.join(format!("case{case}"));
        let o = Command::new(env!("CARGO_BIN_EXE_llm-judge"))
            .args([
                "run",
                p.to_str().unwrap(),
                "--out",
                out_dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(!o.status.success(), "case {case}: the call should fail");
        let forms = [
            pass.clone(),
            escape(&pass),
            b64(format!("{user}:{pass}").as_bytes()),
            user.clone(),
            escape(&user),
        ];
        let mut texts = vec![(
            "stderr".to_string(),
            String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout),
        )];
        for entry in std::fs::read_dir(&out_dir).unwrap() {
            let p = entry.unwrap().path();
            texts.push((
                p.display().to_string(),
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).to_string(),
            ));
        }
        for (name, text) in &texts {
            for f in &forms {
                assert!(
                    !text.contains(f.as_str()),
                    "case {case}: {name} holds `{f}`"
                );
            }
        }
    }
}

#[test]
fn a_run_with_failures_exits_non_zero_and_says_why() {
    let dir = TempDir::new("exit-codes");
    let run = |script: Vec<&'static str>, name: &str| {
        let (base, _) = fault_server(script);
        let toml = format!(
            "name = \"e\"\nprompts = \"{}\"\nlimit = 1\nmax_tokens = 4\n\n[[models]]\nname = \"r\"\n[models.endpoint]\nbase_urls = [\"{base}\"]\nmodel = \"x\"\napi_key_env = \"LLM_JUDGE_TEST_NO_KEY\"\nretries = 0\n\n[[settings]]\nname = \"g\"\npreset = \"greedy\"\n",
            prompts_file().display()
        );
        let p = dir.0.join(format!("{name}.toml"));
        std::fs::write(&p, toml).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_llm-judge"))
            .args([
                "run",
                p.to_str().unwrap(),
                "--out",
                dir.0.join(name).to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    // A server error: worth a retry (exit 3).
    let o = run(vec!["500"], "transient");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("generate: 1 failed") && err.contains("run again"),
        "{err}"
    );
    // A request the server refuses: a retry will not help (exit 4), and it says so.
    let o = run(vec!["echo"], "permanent");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("will not fix"), "{err}");
    // Everything computed: exit 0.
    let o = run(vec!["ok"], "fine");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What the GPT-4 stub gives an answer: a total in 3..=12 from the answer's own words, so
/// the test can tell which answer a total belongs to.
fn stub_total(answer: &str) -> u32 {
    3 + (answer.split_whitespace().count() as u32 % 10)
}

/// An OpenAI-compatible stub of the write-up's GPT-4 judge: it reads the listwise prompt it
/// receives, finds `Response k: …` for each answer, and replies the way GPT-4 did, one
/// total per line (`Response 1: 11`). Returns the base URL.
fn gpt4_stub() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let split = regex::Regex::new(r"(?s)\n\nResponse (\d+): ").unwrap();
        for stream in listener.incoming().take(200) {
            let Ok(mut s) = stream else { continue };
            let split = split.clone();
            std::thread::spawn(move || {
                let (_, body) = read_request(&s);
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let prompt = req["messages"][0]["content"].as_str().unwrap_or("");
                // The answers sit between the question and the criteria line.
                let end = prompt
                    .find("\n\nEvaluation Criteria:")
                    .unwrap_or(prompt.len());
                let part = &prompt[..end];
                let heads: Vec<(usize, usize, String)> = split
                    .captures_iter(part)
                    .map(|c| {
                        let m = c.get(0).unwrap();
                        (m.start(), m.end(), c[1].to_string())
                    })
                    .collect();
                let mut lines = Vec::new();
                for (i, (_, from, k)) in heads.iter().enumerate() {
                    let to = heads.get(i + 1).map_or(part.len(), |h| h.0);
                    lines.push(format!("Response {k}: {}", stub_total(&part[*from..to])));
                }
                let reply = serde_json::json!({
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": lines.join("\n")}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10},
                })
                .to_string();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            });
        }
    });
    base
}

/// The write-up's GPT-4 prompt against a judge that answers as GPT-4 did: each total lands
/// on the answer it was given for, through the shuffled order, and nothing is null.
#[test]
fn gpt4_totals_map_to_the_right_answers_under_shuffling() {
    use llm_judge::records::{Mode, TOTAL};
    let base = gpt4_stub();
    let dir = TempDir::new("gpt4");
    let toml = format!(
        r#"name = "gpt4"
prompts = "{}"
limit = 3
max_tokens = 12
seed = 11

[[models]]
name = "smol"
source = "smollm2-135m-instruct"

[[settings]]
name = "p1"
preset = "p1"

[[settings]]
name = "p2"
preset = "p2"

[[settings]]
name = "greedy"
preset = "greedy"

[judge]
model = "gpt-4-stub"
modes = ["listwise"]
order = "shuffle"
sanity_check = false
templates = {{ listwise = "writeup-gpt4" }}
[judge.endpoint]
base_urls = ["{base}"]
model = "gpt-4"
api_key_env = "LLM_JUDGE_TEST_NO_KEY"
"#,
        prompts_file().display()
    );
    model_path(&bundled::SMOLLM2);
    let out = run_toml(&dir.0, "gpt4", &toml, "o");
    let totals: Vec<_> = out
        .judgment_rows
        .iter()
        .filter(|j| j.mode == Mode::Listwise && j.criterion == TOTAL)
        .collect();
    assert_eq!(totals.len(), 3 * 3, "3 prompts x 3 answers");
    let mut positions = std::collections::BTreeSet::new();
    let mut per_prompt: std::collections::BTreeMap<&str, std::collections::BTreeSet<u64>> =
        Default::default();
    for j in totals {
        per_prompt
            .entry(j.prompt_id.as_str())
            .or_default()
            .insert(j.score.unwrap_or(-1.0) as u64);
        let answer = out
            .response_rows
            .iter()
            .find(|a| a.key == j.response_key)
            .expect("the row names its answer");
        let text = answer.text.as_deref().unwrap_or("");
        assert_eq!(
            j.score,
            Some(stub_total(text) as f64),
            "answer {:?} at position {:?}",
            text,
            j.position
        );
        positions.insert((answer.setting.clone(), j.position));
    }
    // The order really was shuffled: some setting was shown in more than one position.
    assert!(positions.len() > 3, "{positions:?}");
    // And the answers of a prompt got different totals, so a wrong mapping would show.
    assert!(per_prompt.values().any(|t| t.len() > 1), "{per_prompt:?}");
}
