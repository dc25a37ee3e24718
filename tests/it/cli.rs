//! The command line, run as a user would run it.

use crate::common::{model_path, TempDir};
use crate::hub::serve;
use llm_judge::model::bundled;
use std::process::{Command, Output};

fn llm_judge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llm-judge"))
        .args(args)
        .env("LLM_JUDGE_THREADS", "2")
        .output()
        .expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Fails unless the command failed cleanly: non-zero exit, a message containing `needle`,
/// and no panic.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn generate_json_reports_counts_and_timing() {
    model_path(&bundled::SMOLLM2);
    let o = llm_judge(&[
        "generate",
        "--model",
        "smollm2-135m-instruct",
        "--prompt",
        "Explain how to bake a chocolate cake without using eggs.",
        "--preset",
        "p1",
        "--max-tokens",
        "24",
        "--seed",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["completion_tokens"].as_u64().unwrap() as usize,
        v["tokens"].as_array().unwrap().len()
    );
    assert!(v["prompt_tokens"].as_u64().unwrap() > 10);
    assert!(v["timing"]["decode_tok_per_s"].as_f64().unwrap() > 0.0);
    assert!(!v["text"].as_str().unwrap().is_empty());
}

#[test]
fn tokenize_prints_ids_without_bos_unless_asked() {
    model_path(&bundled::GEMMA3);
    let o = llm_judge(&[
        "tokenize",
        "--model",
        "gemma3-270m",
        "--text",
        "Hello world",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<u64> = serde_json::from_value(v["ids"].clone()).unwrap();
    assert_eq!(ids, vec![9259, 1902]);
    let o = llm_judge(&[
        "tokenize",
        "--model",
        "gemma3-270m",
        "--text",
        "Hello world",
        "--json",
        "--add-bos",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ids"][0], 2);
}

#[test]
fn info_describes_the_model() {
    model_path(&bundled::SMOLLM2);
    let o = llm_judge(&["info", "--model", "smollm2-135m-instruct", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["quantization"], "q4_1");
    assert_eq!(v["context_length"], 8192);
    assert_eq!(v["vocab_size"], 49152);
    assert_eq!(v["has_chat_template"], true);
    let params = v["parameters"].as_u64().unwrap();
    assert!((130_000_000..140_000_000).contains(&params), "{params}");
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = TempDir::new("bad-inputs");
    // Missing file.
    let o = llm_judge(&["info", "--model", "/nonexistent/model.gguf"]);
    assert_clean_failure(&o, "model file not found: /nonexistent/model.gguf");
    // Not GGUF.
    let text = dir.0.join("notes.gguf");
    std::fs::write(&text, "just some text, not a model").unwrap();
    let o = llm_judge(&["info", "--model", text.to_str().unwrap()]);
    assert_clean_failure(&o, "not a valid GGUF file");
    // Truncated GGUF: the first 5 MB of a real one.
    let real = std::fs::read(model_path(&bundled::SMOLLM2)).unwrap();
    let cut = dir.0.join("cut.gguf");
    std::fs::write(&cut, &real[..5_000_000]).unwrap();
    let o = llm_judge(&["info", "--model", cut.to_str().unwrap()]);
    assert_clean_failure(&o, "truncated");
    // Truncated inside the header.
    std::fs::write(&cut, &real[..1000]).unwrap();
    let o = llm_judge(&["info", "--model", cut.to_str().unwrap()]);
    assert_clean_failure(&o, "not a valid GGUF file");
    // An empty file, and a folder, given as a model.
    let empty = dir.0.join("empty.gguf");
    std::fs::write(&empty, "").unwrap();
    let o = llm_judge(&["info", "--model", empty.to_str().unwrap()]);
    assert_clean_failure(&o, "the file is empty");
    let folder = dir.0.join("folder.gguf");
    std::fs::create_dir_all(&folder).unwrap();
    let o = llm_judge(&["info", "--model", folder.to_str().unwrap()]);
    assert_clean_failure(&o, "is a folder without config.json");
    // Zero threads, and a token limit of zero.
    let o = llm_judge(&["--threads", "0", "info", "--model", "smollm2-135m-instruct"]);
    assert_clean_failure(&o, "--threads must be at least 1");
    let o = llm_judge(&[
        "generate",
        "--model",
        "smollm2-135m-instruct",
        "--prompt",
        "hi",
        "--max-tokens",
        "0",
    ]);
    assert_clean_failure(&o, "--max-tokens");
    // Unknown model name.
    let o = llm_judge(&["info", "--model", "llama-9000"]);
    assert_clean_failure(&o, "unknown model `llama-9000`");
    // Invalid sampling values, rejected before the model loads.
    for (flag, value, field) in [
        ("--temperature", "-0.5", "temperature"),
        ("--min-p", "1.5", "min_p"),
        ("--top-p", "0", "top_p"),
        ("--top-p", "1.01", "top_p"),
    ] {
        let o = llm_judge(&[
            "generate",
            "--model",
            "smollm2-135m-instruct",
            "--prompt",
            "hi",
            flag,
            value,
        ]);
        assert_clean_failure(&o, &format!("invalid sampling value `{field}`"));
    }
    let o = llm_judge(&[
        "generate",
        "--model",
        "smollm2-135m-instruct",
        "--prompt",
        "hi",
        "--preset",
        "p9",
    ]);
    assert_clean_failure(&o, "unknown sampling preset `p9`");
}

#[test]
fn unsupported_architecture_is_named() {
    // Rewrite general.architecture of a real file from "llama" to "lllma" (same length).
    let mut real = std::fs::read(model_path(&bundled::SMOLLM2)).unwrap();
    let key = b"general.architecture";
    let at = real.windows(key.len()).position(|w| w == key).unwrap();
    let value = at + key.len() + 4 + 8;
    assert_eq!(&real[value..value + 5], b"llama");
    real[value..value + 5].copy_from_slice(b"lllma");
    let dir = TempDir::new("arch");
    let p = dir.0.join("odd.gguf");
    std::fs::write(&p, &real).unwrap();
    let o = llm_judge(&["info", "--model", p.to_str().unwrap()]);
    assert_clean_failure(&o, "unsupported architecture `lllma`");
}

#[test]
fn hub_reference_downloads_through_hf_endpoint_then_works_offline() {
    let hub = serve(model_path(&bundled::SMOLLM2));
    let home = TempDir::new("cli-hf-home");
    let run = |offline: bool| {
        Command::new(env!("CARGO_BIN_EXE_llm-judge"))
            .args(["info", "--model", "hf://test-org/tiny/model.gguf", "--json"])
            .env("HF_ENDPOINT", &hub.url)
            .env("HF_HOME", &home.0)
            .env("HF_HUB_OFFLINE", if offline { "1" } else { "0" })
            .output()
            .unwrap()
    };
    let o = run(false);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["architecture"], "llama");
    let served = hub.requests.load(std::sync::atomic::Ordering::SeqCst);
    let o = run(true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        hub.requests.load(std::sync::atomic::Ordering::SeqCst),
        served
    );
}

/// `bench` measures every figure it is asked for (speeds, not timings: nothing here asserts
/// how fast) and writes them as JSON: tg128 under a busy core, and `serve` under concurrent
/// clients on loopback.
#[test]
fn bench_writes_every_figure_as_json() {
    model_path(&bundled::SMOLLM2);
    let dir = TempDir::new("bench");
    let json = dir.0.join("bench.json");
    let o = llm_judge(&[
        "--threads",
        "2",
        "bench",
        "--model",
        "smollm2-135m-instruct",
        "--reps",
        "1",
        "--parallel",
        "2",
        "--batch-tokens",
        "8",
        "--judge-answers",
        "0",
        "--busy",
        "--busy-nice",
        "--stream-read",
        "--memory",
        "--serve-clients",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["threads"], 2);
    assert!(v["cpu"].as_str().is_some_and(|c| !c.is_empty()));
    let tests: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0, "{r}");
            assert!(
                r["llama_cpp_tokens_per_s"].is_null(),
                "no reference was asked for"
            );
            r["test"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        tests,
        [
            "pp128",
            "pp512",
            "tg128",
            "tg8@b2",
            "tg128+busy",
            "tg128+busy-nice",
            "serve@c3"
        ]
    );
    for r in v["rows"].as_array().unwrap() {
        assert_eq!(r["runs"].as_array().unwrap().len(), 1, "one round: {r}");
    }
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 50.0);
    // The machine's figure at the start and the end, and the decoding bound from it.
    let reads = v["stream_read_gbps"].as_array().unwrap();
    assert_eq!(reads.len(), 2);
    assert!(reads.iter().all(|r| r.as_f64().unwrap() > 0.1), "{reads:?}");
    let bound = &v["bounds"][0];
    // SmolLM2's output is its (tied) embedding table, so decoding reads every tensor.
    let file = std::fs::metadata(model_path(&bundled::SMOLLM2))
        .unwrap()
        .len();
    let bytes = bound["bytes_per_token"].as_u64().unwrap();
    assert!(bytes < file && bytes > file * 9 / 10, "{bytes} of {file}");
    assert!(bound["tg128_fraction"].as_f64().unwrap() > 0.0);
    // The child `generate` holds the model and little else.
    let mem = &v["memory"][0];
    let peak = mem["generate_peak_rss_bytes"].as_u64().unwrap();
    assert!(
        peak > file && peak < file + 300_000_000,
        "peak {peak} for a file of {file}"
    );
}

#[test]
fn checkpoint_adapter_and_device_from_the_command_line() {
    let (base, _) = crate::hf::converted();
    let base = base.to_str().unwrap();
    let tmp = TempDir::new("cli-adapter");
    // A valid rank-2 adapter on q_proj of every layer, written by the library's own reader's
    // conventions (PEFT names).
    let layers = 30;
    let mut st = std::collections::HashMap::new();
    for l in 0..layers {
        let key =
            |w: &str| format!("base_model.model.model.layers.{l}.self_attn.q_proj.{w}.weight");
        let dev = candle_core::Device::Cpu;
        st.insert(
            key("lora_A"),
            candle_core::Tensor::ones((2, 576), candle_core::DType::F32, &dev).unwrap(),
        );
        st.insert(
            key("lora_B"),
            candle_core::Tensor::zeros((576, 2), candle_core::DType::F32, &dev).unwrap(),
        );
    }
    let adapter = tmp.0.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    candle_core::safetensors::save(&st, adapter.join("adapter_model.safetensors")).unwrap();
    std::fs::write(
        adapter.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}"#,
    )
    .unwrap();
    let adapter = adapter.to_str().unwrap();
    let prompt = "What is the capital of France?";
    let o = llm_judge(&[
        "--device",
        "cpu",
        "generate",
        "--model",
        base,
        "--adapter",
        adapter,
        "--prompt",
        prompt,
        "--temperature",
        "0",
        "--max-tokens",
        "8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("device: cpu"), "{}", stderr(&o));
    // B = 0: the merged model answers like its base.
    let plain = llm_judge(&[
        "generate",
        "--model",
        base,
        "--prompt",
        prompt,
        "--temperature",
        "0",
        "--max-tokens",
        "8",
    ]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert_eq!(o.stdout, plain.stdout);

    let info = llm_judge(&["info", "--model", base]);
    assert!(info.status.success(), "{}", stderr(&info));
    assert!(String::from_utf8_lossy(&info.stdout).contains("f32"));

    // An adapter on a GGUF file, a CUDA device in a CPU build, an unknown device.
    let o = llm_judge(&[
        "generate",
        "--model",
        "smollm2-135m-instruct",
        "--adapter",
        adapter,
        "--prompt",
        "hi",
    ]);
    assert_clean_failure(&o, "safetensors checkpoint");
    if !cfg!(feature = "cuda") {
        let o = llm_judge(&[
            "--device", "cuda:1", "generate", "--model", base, "--prompt", "hi",
        ]);
        assert_clean_failure(&o, "built without the `cuda` feature");
    }
    let o = llm_judge(&[
        "--device", "tpu", "generate", "--model", base, "--prompt", "hi",
    ]);
    assert_clean_failure(&o, "expected auto, cpu, cuda or cuda:N");

    // The GPU check runs anywhere: on the CPU it compares the CPU with itself.
    let o = llm_judge(&["--device", "cpu", "check-device", "--tokens", "4", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], true);
    assert_eq!(v["max_logit_diff"], 0.0);
    assert_eq!(v["cpu_tokens"], v["device_tokens"]);
}

/// Runs the binary, killing it after `secs` seconds: a command that hangs fails the test
/// instead of hanging it.
fn llm_judge_within(args: &[&str], secs: u64) -> Output {
    llm_judge_env_within(args, &[], secs)
}

/// [`llm_judge_within`] with extra environment variables.
fn llm_judge_env_within(args: &[&str], env: &[(&str, &str)], secs: u64) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-judge"))
        .args(args)
        .envs(env.iter().copied())
        .env("LLM_JUDGE_THREADS", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed().as_secs() >= secs {
            let _ = child.kill();
            panic!(
                "`llm-judge {}` still running after {secs} s",
                args.join(" ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn special_files_as_inputs_are_refused_at_once() {
    // A FIFO as the prompt set had hung the run; /dev/zero as the experiment file was read
    // until memory ran out. Both are refused before anything is read, naming the file.
    let dir = TempDir::new("special-inputs");
    let fifo = dir.0.join("prompts.jsonl");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let exp = dir.0.join("exp.toml");
    std::fs::write(
        &exp,
        format!(
            "name = \"x\"\nprompts = \"{}\"\n\n[[models]]\nname = \"smol\"\n\
             source = \"smollm2-135m-instruct\"\n\n[[settings]]\nname = \"p1\"\npreset = \"p1\"\n",
            fifo.display()
        ),
    )
    .unwrap();
    let o = llm_judge_within(&["run", exp.to_str().unwrap(), "--dry-run"], 30);
    assert_clean_failure(&o, "not a regular file");
    assert!(stderr(&o).contains("prompts.jsonl"), "{}", stderr(&o));
    let o = llm_judge_within(&["run", "/dev/zero", "--dry-run"], 30);
    assert_clean_failure(&o, "/dev/zero: is not a regular file");
}

#[test]
fn an_empty_api_key_is_refused_before_serving() {
    // No client could ever send an empty key: everyone would be locked out. (A server that
    // started anyway would never exit: the watchdog fails the test instead of hanging.)
    let o = llm_judge_env_within(
        &[
            "serve",
            "--model",
            "smollm2-135m-instruct",
            "--port",
            "0",
            "--api-key-env",
            "LLM_JUDGE_TEST_EMPTY_KEY",
        ],
        &[("LLM_JUDGE_TEST_EMPTY_KEY", "")],
        60,
    );
    assert_clean_failure(&o, "LLM_JUDGE_TEST_EMPTY_KEY is empty");
}

#[test]
fn an_error_names_its_cause_once_and_a_huge_line_is_cut() {
    let dir = TempDir::new("errors-once");
    let o = llm_judge(&["run", dir.0.join("missing.toml").to_str().unwrap()]);
    assert_clean_failure(&o, "missing.toml");
    let err = stderr(&o);
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
    // One 20 MB line that does not parse: the message quotes it, cut.
    let big = dir.0.join("big.toml");
    std::fs::write(&big, format!("name = {}\n", "x".repeat(20 << 20))).unwrap();
    let o = llm_judge(&["run", big.to_str().unwrap()]);
    assert_clean_failure(&o, "big.toml");
    assert!(
        stderr(&o).len() < 10_000,
        "{} bytes on stderr",
        stderr(&o).len()
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn device_reaches_every_command_and_is_not_recorded_as_the_experiments() {
    let dir = TempDir::new("device");
    let exp = dir.0.join("exp.toml");
    std::fs::write(
        &exp,
        format!(
            "name = \"d\"\nprompts = \"{}\"\nmax_tokens = 2\nlimit = 1\n\
             [[models]]\nname = \"smol\"\nsource = \"smollm2-135m-instruct\"\n\
             [[settings]]\nname = \"g\"\npreset = \"greedy\"\n",
            crate::common::prompts_file().display()
        ),
    )
    .unwrap();
    let out = dir.0.join("out");
    let (exp, out) = (exp.to_str().unwrap(), out.to_str().unwrap());
    // A binary without the `cuda` feature cannot open cuda:7: each command that loads a
    // model must say so, naming the device, before it does anything.
    for args in [
        vec![
            "generate",
            "--model",
            "smollm2-135m-instruct",
            "--prompt",
            "hi",
        ],
        vec![
            "tokenize",
            "--model",
            "smollm2-135m-instruct",
            "--text",
            "hi",
        ],
        vec!["run", exp, "--out", out],
        vec!["serve", "--model", "smollm2-135m-instruct", "--port", "0"],
        vec!["duel", "--prompt", "hi", "--out", out],
    ] {
        let mut a = vec!["--device", "cuda:7"];
        a.extend(&args);
        assert_clean_failure(&llm_judge_within(&a, 60), "cuda:7");
    }
    // On the CPU the run goes through, and run.json records where it ran, while the
    // experiment it records is the file's (no device).
    let o = llm_judge(&["--device", "cpu", "run", exp, "--out", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("out/run.json")).unwrap())
            .unwrap();
    assert_eq!(meta["device"], "cpu");
    assert!(
        meta["experiment"]["device"].is_null(),
        "{}",
        meta["experiment"]
    );
    // Judging that run again on cuda:7 fails the same way.
    let o = llm_judge(&[
        "--device",
        "cuda:7",
        "judge",
        out,
        "--model",
        "smollm2-135m-instruct",
        "--mode",
        "expected",
        "--no-sanity",
        "--out",
        dir.0.join("again").to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "cuda:7");
}
