//! Experiments end to end on the real bundled models: judging, resume after SIGKILL,
//! reproducibility, and bad input reported before any generation.

use crate::common::{model_path, prompts_file, smollm, TempDir};
use llm_judge::backend::LocalBackend;
use llm_judge::experiment::{ExperimentConfig, Silent};
use llm_judge::judge::{Judge, JudgeConfig, Mode};
use llm_judge::model::bundled;
use llm_judge::records::{JudgmentRecord, ResponseRecord};
use llm_judge::store::Store;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small experiment: SmolLM2 under p1 and p2, `limit` prompts, short answers.
fn tiny_toml(dir: &Path, limit: usize, modes: &str, sanity: bool) -> PathBuf {
    let text = format!(
        r#"name = "tiny"
prompts = "{}"
seed = 7
max_tokens = 16
limit = {limit}

[[models]]
name = "smol"
source = "smollm2-135m-instruct"

[[settings]]
name = "p1"
preset = "p1"

[[settings]]
name = "p2"
preset = "p2"

[judge]
model = "smollm2-135m-instruct"
modes = [{modes}]
max_tokens = 24
retries = 0
sanity_check = {sanity}
"#,
        prompts_file().display()
    );
    let p = dir.join("tiny.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llm-judge"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn expected_scores_are_distributions_within_the_scale() {
    let judge_model = smollm();
    let mut judge = Judge::new(
        Box::new(LocalBackend::new(judge_model)),
        JudgeConfig::new("smollm2-135m-instruct").with_modes(&[Mode::Expected]),
    )
    .unwrap();
    let scores = judge
        .expected(
            "How do I cook a medium-rare steak?",
            "Sear it in a very hot pan for about 3 minutes per side and rest it 5 minutes.",
        )
        .unwrap()
        .expect("local judges give token probabilities");
    assert_eq!(scores.len(), 3);
    for s in scores {
        let sum: f64 = s.probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "{:?}", s.probs);
        assert_eq!(s.probs.len(), 4);
        assert!((1.0..=4.0).contains(&s.expected), "{}", s.expected);
        assert!((1..=4).contains(&s.argmax));
        assert!(s.mass > 0.0 && s.mass <= 1.0 + 1e-9);
    }
}

#[test]
fn run_writes_tables_and_same_seed_reproduces_them() {
    model_path(&bundled::SMOLLM2);
    let dir = TempDir::new("repro");
    let toml = tiny_toml(&dir.0, 2, "\"rubric\", \"expected\"", false);
    let cfg = ExperimentConfig::load(&toml).unwrap();
    let a =
        llm_judge::experiment::run(&cfg.plan().unwrap(), &dir.0.join("a"), &mut Silent).unwrap();
    let b =
        llm_judge::experiment::run(&cfg.plan().unwrap(), &dir.0.join("b"), &mut Silent).unwrap();
    assert_eq!(a.responses.height(), 4);
    // 4 answers x 2 modes x (3 criteria + total)
    assert_eq!(a.judgments.height(), 32);
    for name in ["responses", "judgments", "summary"] {
        for ext in ["parquet", "csv"] {
            assert!(dir.0.join("a").join(format!("{name}.{ext}")).exists());
        }
    }
    let drop_timing = |df: &polars::prelude::DataFrame| {
        df.drop_many([
            "prompt_s",
            "decode_s",
            "prompt_tok_per_s",
            "decode_tok_per_s",
        ])
    };
    assert!(drop_timing(&a.responses).equals_missing(&drop_timing(&b.responses)));
    assert!(a.judgments.equals_missing(&b.judgments));
    assert!(a.summary.equals_missing(&b.summary));
    // Tables load back as written.
    let back = llm_judge::table::load_table(&dir.0.join("a"), "summary").unwrap();
    assert!(back.equals_missing(&a.summary));
    let csv = std::fs::read_to_string(dir.0.join("a/summary.csv")).unwrap();
    assert!(csv.starts_with("model,setting,mode,criterion,n,n_null,mean,std,ci_low,ci_high"));
    // The report is one self-contained file with the chart inline.
    let report = llm_judge::report::write_report(&dir.0.join("a")).unwrap();
    let html = std::fs::read_to_string(report).unwrap();
    assert!(html.contains("<svg") && html.contains("Judge score (expected, total)"));
    assert!(html.contains("<table class=\"df\">") && html.contains("smollm2-135m-instruct"));
    assert!(
        !html.contains("src=\"http"),
        "report must not load anything from the network"
    );
}

#[test]
fn killed_run_resumes_without_loss_or_duplicates() {
    model_path(&bundled::SMOLLM2);
    let dir = TempDir::new("resume");
    let toml = tiny_toml(&dir.0, 4, "\"rubric\"", false);
    let out = dir.0.join("out");
    // One answer at a time, so the kill lands between stored answers.
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-judge"))
        .args([
            "run",
            toml.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--batch",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill with SIGKILL once some, but not all, answers are stored.
    let responses = out.join("responses.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let n = std::fs::read_to_string(&responses)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "run made no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before: Vec<ResponseRecord> = Store::open(&out).unwrap().load("responses").unwrap();
    assert!(
        before.len() < 8,
        "killed too late: {} answers",
        before.len()
    );

    let o = run_cli(&[
        "run",
        toml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let store = Store::open(&out).unwrap();
    let responses: Vec<ResponseRecord> = store.load("responses").unwrap();
    let judgments: Vec<JudgmentRecord> = store.load("judgments").unwrap();
    let raw_lines = std::fs::read_to_string(out.join("responses.jsonl")).unwrap();
    assert_eq!(responses.len(), 8, "4 prompts x 2 settings");
    assert_eq!(raw_lines.lines().count(), 8, "no duplicate lines on disk");
    // The records written before the kill are kept unchanged.
    for r in &before {
        assert!(responses.contains(r));
    }
    assert_eq!(judgments.len(), 8 * 4);

    // A clean run from scratch gives the same answers and scores.
    let clean = dir.0.join("clean");
    let o = run_cli(&[
        "run",
        toml.to_str().unwrap(),
        "--out",
        clean.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let clean_store = Store::open(&clean).unwrap();
    let clean_r: Vec<ResponseRecord> = clean_store.load("responses").unwrap();
    let text = |rs: &[ResponseRecord]| {
        let mut v: Vec<(String, Option<String>)> =
            rs.iter().map(|r| (r.key.clone(), r.text.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(text(&responses), text(&clean_r));
    let clean_j: Vec<JudgmentRecord> = clean_store.load("judgments").unwrap();
    let scores = |js: &[JudgmentRecord]| {
        let mut v: Vec<(String, Option<f64>)> =
            js.iter().map(|r| (r.key.clone(), r.score)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(scores(&judgments), scores(&clean_j));

    // A rerun computes nothing new.
    let o = run_cli(&[
        "run",
        toml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(out.join("responses.jsonl")).unwrap(),
        raw_lines
    );

    // `judge` re-judges the stored answers with another mode, without generating.
    let rejudged = dir.0.join("rejudged");
    let o = run_cli(&[
        "judge",
        out.to_str().unwrap(),
        "--model",
        "smollm2-135m-instruct",
        "--mode",
        "expected",
        "--out",
        rejudged.to_str().unwrap(),
        "--no-sanity",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rs: Vec<ResponseRecord> = Store::open(&rejudged).unwrap().load("responses").unwrap();
    assert_eq!(text(&rs), text(&responses));
    let js: Vec<JudgmentRecord> = Store::open(&rejudged).unwrap().load("judgments").unwrap();
    assert_eq!(js.len(), 8 * 4);
    assert!(js
        .iter()
        .all(|j| j.mode == "expected" && j.expected_score.is_some()));
}

#[test]
fn listwise_and_pairwise_record_order_and_consistency() {
    model_path(&bundled::SMOLLM2);
    let dir = TempDir::new("modes");
    let toml = tiny_toml(&dir.0, 1, "\"listwise\", \"pairwise\"", true);
    let cfg = ExperimentConfig::load(&toml).unwrap();
    let out =
        llm_judge::experiment::run(&cfg.plan().unwrap(), &dir.0.join("o"), &mut Silent).unwrap();
    let js: Vec<JudgmentRecord> = Store::open(dir.0.join("o"))
        .unwrap()
        .load("judgments")
        .unwrap();
    let listwise: Vec<&JudgmentRecord> = js.iter().filter(|j| j.mode == "listwise").collect();
    assert_eq!(listwise.len(), 2 * 4);
    let mut positions: Vec<u32> = listwise.iter().filter_map(|j| j.position).collect();
    positions.sort();
    positions.dedup();
    assert_eq!(positions, vec![1, 2]);
    assert!(listwise.iter().all(|j| j.order_seed.is_some()));
    let pairwise: Vec<&JudgmentRecord> = js.iter().filter(|j| j.mode == "pairwise").collect();
    assert_eq!(pairwise.len(), 1);
    let p = pairwise[0];
    assert!(p.other_key.is_some());
    // Both orders were asked.
    assert!(p.raw.matches("[A=").count() == 2, "{}", p.raw);
    if let (Some(s), Some(c)) = (p.score, p.consistent) {
        assert!(c || s == 0.5, "an inconsistent pair must count as a tie");
    }
    let sanity = out.sanity.expect("sanity check ran");
    assert_eq!(sanity.comparisons, 2, "1 prompt: truncated and gibberish");
    assert!(out.summary.height() > 0);
}

#[test]
fn bad_experiment_input_is_reported_before_generation() {
    let dir = TempDir::new("bad-exp");
    let good = std::fs::read_to_string(tiny_toml(&dir.0, 1, "\"rubric\"", false)).unwrap();
    let bad_prompts = dir.0.join("bad.jsonl");
    std::fs::write(
        &bad_prompts,
        "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\": oops}\n",
    )
    .unwrap();
    let bad_template = dir.0.join("t.toml");
    std::fs::write(
        &bad_template,
        "name = \"t\"\nmode = \"rubric\"\nprompt = \"{question} only\"\n",
    )
    .unwrap();
    let cases: Vec<(String, &str)> = vec![
        (good.replace("seed = 7", "seed = = 7"), "line 3"),
        (
            good.replace("preset = \"p2\"", "preset = \"p7\""),
            "settings[1].preset",
        ),
        (
            good.replace("source = \"smollm2-135m-instruct\"", "source = \"gpt-9\""),
            "models[0].source",
        ),
        (
            good.replace(
                &prompts_file().display().to_string(),
                &bad_prompts.display().to_string(),
            ),
            "bad.jsonl:2",
        ),
        (
            good.replace(
                "sanity_check = false",
                &format!(
                    "sanity_check = false\ntemplates = {{ rubric = \"{}\" }}",
                    bad_template.display()
                ),
            ),
            "lacks the placeholder {answer}",
        ),
        (
            good.replace("temperature", "temprature").replace(
                "[[settings]]\nname = \"p2\"",
                "[[settings]]\nname = \"p2\"\ntemprature = 3",
            ),
            "temprature",
        ),
    ];
    for (i, (text, needle)) in cases.into_iter().enumerate() {
        let p = dir.0.join(format!("case{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = dir.0.join(format!("out{i}"));
        let o = run_cli(&["run", p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "case {i} succeeded");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains(needle),
            "case {i}: expected `{needle}` in {err}"
        );
        assert!(
            !out.join("responses.jsonl").exists(),
            "case {i} generated before failing"
        );
    }
}
