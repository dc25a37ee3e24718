//! Experiments end to end on the real bundled models: judging in every mode, batched judging
//! equal to one call at a time, resume after SIGKILL, reproducibility, and bad input reported
//! before any generation.

use crate::common::{model_path, prompts_file, run_file, smollm, TempDir};
use llm_judge::backend::LocalBackend;
use llm_judge::experiment::ExperimentConfig;
use llm_judge::judge::{calls_for, group_answers, run_calls, Asker, Judge, JudgeConfig};
use llm_judge::model::bundled;
use llm_judge::records::{CallRecord, JudgmentRecord, Mode, ResponseRecord, TOTAL};
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

fn judgments(dir: &Path) -> Vec<JudgmentRecord> {
    Store::open(dir)
        .unwrap()
        .load::<CallRecord>("judgments")
        .unwrap()
        .into_iter()
        .flat_map(|c| c.rows)
        .collect()
}

fn answer(key: &str, text: &str) -> ResponseRecord {
    ResponseRecord {
        key: key.into(),
        model: key.into(),
        setting: "s".into(),
        prompt_id: "steak".into(),
        prompt: "How do I cook a medium-rare steak?".into(),
        text: Some(text.into()),
        ..Default::default()
    }
}

/// Judges `answers` (one prompt) in `mode` with SmolLM2, decoding `batch` calls together.
fn judge_directly(mode: Mode, answers: &[ResponseRecord], batch: usize) -> Vec<JudgmentRecord> {
    let cfg = JudgeConfig::new("smollm2-135m-instruct")
        .with_modes(&[mode])
        .with_sanity_check(false);
    let templates = cfg.validate("test", Path::new(".")).unwrap();
    let judge = Judge::new(cfg, "smol".into(), "local:smol".into(), templates, 5);
    let mut backend = LocalBackend::new(smollm()).with_max_batch(batch);
    let asker = Asker::default();
    let groups = group_answers(answers);
    let calls = calls_for(&judge, &asker, mode, &groups);
    let mut rows = Vec::new();
    run_calls(&mut backend, &asker, calls, &mut |_, r| {
        rows.extend(r?);
        Ok(())
    })
    .unwrap();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

fn answers() -> Vec<ResponseRecord> {
    vec![
        answer(
            "good",
            "Sear it in a very hot pan for about 3 minutes per side and rest it 5 minutes.",
        ),
        answer("short", "Cook it."),
        answer(
            "odd",
            "Steak is a cut of beef. Many people enjoy it with potatoes and a salad.",
        ),
    ]
}

#[test]
fn expected_scores_are_distributions_within_the_scale() {
    let rows = judge_directly(Mode::Expected, &answers(), 8);
    assert_eq!(rows.len(), 3 * 4, "3 answers x (3 criteria + total)");
    for r in &rows {
        let m = r.mass.expect("mass recorded");
        assert!(m > 0.0 && m <= 1.0 + 1e-9, "{m}");
        if r.criterion == TOTAL {
            let e = r.expected_score.unwrap();
            assert!((3.0..=12.0).contains(&e), "{e}");
            continue;
        }
        let p = r.probs.as_ref().unwrap();
        assert_eq!(p.len(), 4);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{p:?}");
        let e = r.expected_score.unwrap();
        assert!((1.0..=4.0).contains(&e), "{e}");
        assert!((1.0..=4.0).contains(&r.score.unwrap()));
        assert_eq!(r.flag.is_some(), m < 0.5, "low mass is flagged");
    }
}

#[test]
fn a_joint_total_is_the_judges_own_probability_of_writing_it() {
    use llm_judge::backend::{Backend, LabelQuery};
    use llm_judge::judge::{expected::joint_format, ExpectedTotal};
    let cfg = JudgeConfig::new("qwen2.5-coder-0.5b-instruct")
        .with_modes(&[Mode::Expected])
        .with_expected_total(ExpectedTotal::Joint)
        .with_sanity_check(false);
    let templates = cfg.validate("test", Path::new(".")).unwrap();
    let judge = Judge::new(cfg, "qwen".into(), "local:qwen".into(), templates, 5);
    let mut backend = LocalBackend::new(crate::common::qwen());
    let asker = Asker::default();
    let answers = answers();
    let groups = group_answers(&answers[..1]);
    let mut rows = Vec::new();
    run_calls(
        &mut backend,
        &asker,
        calls_for(&judge, &asker, Mode::Expected, &groups),
        &mut |_, r| {
            rows.extend(r?);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let raw = |i: usize| row.probs.as_ref().unwrap()[i] * row.mass.unwrap();
    // The same question asked of the model directly, one digit at a time.
    let a = &answers[0];
    let input = judge.input(
        Mode::Expected,
        &[
            ("question", &a.prompt),
            ("answer", a.text.as_deref().unwrap()),
            ("format", &joint_format(&judge)),
        ],
    );
    // Each query on a fresh backend (no prefix served from a cache; a prompt split
    // elsewhere agrees to rounding).
    let digit = |prefix: &str, from: u32| {
        let d = LocalBackend::new(crate::common::qwen())
            .label_distribution(&LabelQuery {
                input: input.clone(),
                prefix: prefix.into(),
                labels: (from..=9).map(|d| d.to_string()).collect(),
            })
            .unwrap();
        d.probs.iter().map(|p| p * d.mass).collect::<Vec<f64>>()
    };
    let first = digit("Total: [[", 1);
    let second = digit("Total: [[1", 0);
    let close = |x: f64, y: f64| (x - y).abs() <= 5e-3 * y + 1e-9;
    // Totals 3..=9 are one digit; 10, 11 and 12 are `1` and then their second digit.
    for total in 3..=12usize {
        let want = if total < 10 {
            first[total - 1]
        } else {
            first[0] * second[total - 10]
        };
        assert!(
            close(raw(total - 3), want),
            "total {total}: {} vs {want}",
            raw(total - 3)
        );
    }
    assert!(row.mass.unwrap() > 0.0 && row.expected_score.is_some());
}

#[test]
fn batched_judging_equals_one_call_at_a_time() {
    // Text verdicts decoded together (and re-asked) give exactly what one call at a time
    // gives, in every text mode; so do the probability modes.
    let answers = answers();
    for mode in [
        Mode::Rubric,
        Mode::Listwise,
        Mode::Pairwise,
        Mode::PairwiseExpected,
        Mode::Expected,
    ] {
        let alone = judge_directly(mode, &answers, 1);
        let together = judge_directly(mode, &answers, 8);
        assert!(!alone.is_empty(), "{mode}");
        assert_eq!(alone, together, "{mode}: batched judging changed the rows");
    }
}

#[test]
fn pairwise_expected_gives_a_preference_in_both_orders() {
    let rows = judge_directly(Mode::PairwiseExpected, &answers(), 8);
    assert_eq!(rows.len(), 3, "3 pairs");
    for r in &rows {
        let s = r.score.expect("a probability, whatever the judge writes");
        assert!((0.0..=1.0).contains(&s), "{s}");
        assert!(r.consistent.is_some() && r.other_key.is_some());
        let p = r.probs.as_ref().unwrap();
        assert_eq!(p.len(), 6, "p(A), p(B), p(C) in both orders");
        assert!((p[..3].iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((p[3..].iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // The stored score is the mean preference for the first answer over both orders.
        let want = ((p[0] + p[2] / 2.0) + (p[4] + p[5] / 2.0)) / 2.0;
        assert!((s - want).abs() < 1e-12);
    }
}

#[test]
fn run_writes_tables_and_same_seed_reproduces_them() {
    model_path(&bundled::SMOLLM2);
    let dir = TempDir::new("repro");
    let toml = tiny_toml(&dir.0, 2, "\"rubric\", \"expected\"", false);
    // This judge's expected scores are nearly all low-mass: kept here, so that the tables
    // and the report have something in every place.
    let text = std::fs::read_to_string(&toml).unwrap() + "low_mass_policy = \"include\"\n";
    std::fs::write(&toml, text).unwrap();
    let a = run_file(&toml, &dir.0.join("a"));
    let b = run_file(&toml, &dir.0.join("b"));
    assert_eq!(a.responses.height(), 4);
    // 4 answers x 2 modes x (3 criteria + total)
    assert_eq!(a.judgments.height(), 32);
    for name in ["responses", "judgments", "summary", "comparisons"] {
        for ext in ["parquet", "csv"] {
            assert!(dir.0.join("a").join(format!("{name}.{ext}")).exists());
        }
        if name != "responses" {
            // Byte-identical tables from the same seed (answers carry timings).
            let read = |d: &str| std::fs::read(dir.0.join(d).join(format!("{name}.csv"))).unwrap();
            assert_eq!(read("a"), read("b"), "{name}.csv differs between runs");
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
    // p1 vs p2 of the one model, in each scoring mode (rubric rows are all null with this
    // judge, and a comparison without a single complete pair is left out).
    let rows = &a.comparison_rows;
    assert!(rows.iter().all(|c| c.a == "smol/p1" && c.b == "smol/p2"));
    let expected_rows = rows.iter().filter(|c| c.mode == Mode::Expected).count();
    assert_eq!(expected_rows, 4, "expected: 3 criteria + total");
    for c in rows {
        assert!(c.n > 0 && c.wins + c.ties + c.losses == c.n);
    }
    // Tables load back as written, and a loaded run computes the same tables.
    let back = llm_judge::RunOutput::load(dir.0.join("a")).unwrap();
    for (x, y) in back.summary_rows.iter().zip(&a.summary_rows) {
        assert_eq!(format!("{x:?}"), format!("{y:?}"));
    }
    assert!(back.summary.equals_missing(&a.summary));
    assert!(back.comparisons.equals_missing(&a.comparisons));
    let csv = std::fs::read_to_string(dir.0.join("a/summary.csv")).unwrap();
    assert!(csv.starts_with(
        "model,setting,mode,criterion,n,prompts,n_null,n_flagged,n_excluded,mean,std,ci_low,ci_high"
    ));
    // The report is one self-contained file with the charts inline.
    let html = std::fs::read_to_string(&a.report().unwrap().path).unwrap();
    assert!(
        html.contains("data:image/png;base64,") && html.contains("Judge score (expected, total)")
    );
    assert!(html.contains("<table class=\"df\">") && html.contains("Findings"));
    for external in ["src=\"http", "href=\"http", "@import", "<script"] {
        assert!(
            !html.contains(external),
            "report loads something from elsewhere: {external}"
        );
    }
}

/// Starts `llm-judge run TOML --out OUT --batch 1` in the background, output discarded; one
/// answer at a time, so a test can act between stored answers.
fn spawn_run(toml: &Path, out: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_llm-judge"))
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
        .unwrap()
}

#[test]
fn killed_run_resumes_without_loss_or_duplicates() {
    model_path(&bundled::SMOLLM2);
    let dir = TempDir::new("resume");
    let toml = tiny_toml(&dir.0, 4, "\"rubric\"", false);
    let out = dir.0.join("out");
    // One answer at a time, so the kill lands between stored answers.
    let mut child = spawn_run(&toml, &out);
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
    let raw_lines = std::fs::read_to_string(out.join("responses.jsonl")).unwrap();
    assert_eq!(responses.len(), 8, "4 prompts x 2 settings");
    assert_eq!(raw_lines.lines().count(), 8, "no duplicate lines on disk");
    // The records written before the kill are kept unchanged.
    for r in &before {
        assert!(responses.contains(r));
    }
    let js = judgments(&out);
    assert_eq!(js.len(), 8 * 4);
    assert!(std::fs::read_to_string(out.join("run.log"))
        .unwrap()
        .contains("judge rubric"));

    // A clean run from scratch gives the same answers and scores.
    let clean = dir.0.join("clean");
    let o = run_cli(&[
        "run",
        toml.to_str().unwrap(),
        "--out",
        clean.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let clean_r: Vec<ResponseRecord> = Store::open(&clean).unwrap().load("responses").unwrap();
    let text = |rs: &[ResponseRecord]| {
        let mut v: Vec<(String, Option<String>)> =
            rs.iter().map(|r| (r.key.clone(), r.text.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(text(&responses), text(&clean_r));
    let scores = |js: &[JudgmentRecord]| {
        let mut v: Vec<(String, Option<f64>)> =
            js.iter().map(|r| (r.key.clone(), r.score)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(scores(&js), scores(&judgments(&clean)));

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
    let js = judgments(&rejudged);
    assert_eq!(js.len(), 8 * 4);
    assert!(js
        .iter()
        .all(|j| j.mode == Mode::Expected && j.expected_score.is_some()));
}

#[test]
fn listwise_pairwise_and_the_sanity_check_in_every_mode() {
    model_path(&bundled::SMOLLM2);
    let dir = TempDir::new("modes");
    let toml = tiny_toml(&dir.0, 2, "\"listwise\", \"pairwise\", \"expected\"", true);
    let out = run_file(&toml, &dir.0.join("o"));
    let js = judgments(&dir.0.join("o"));
    let listwise: Vec<&JudgmentRecord> = js.iter().filter(|j| j.mode == Mode::Listwise).collect();
    assert_eq!(
        listwise.len(),
        2 * 2 * 4,
        "2 prompts x 2 answers x (3 criteria + total)"
    );
    let mut positions: Vec<u32> = listwise.iter().filter_map(|j| j.position).collect();
    positions.sort();
    positions.dedup();
    assert_eq!(positions, vec![1, 2]);
    assert!(listwise.iter().all(|j| j.order_seed.is_some()));
    let pairwise: Vec<&JudgmentRecord> = js.iter().filter(|j| j.mode == Mode::Pairwise).collect();
    assert_eq!(pairwise.len(), 2, "one pair per prompt");
    let p = pairwise[0];
    assert!(p.other_key.is_some());
    // Both orders were asked, and the row says which was which.
    assert_eq!(p.raw.matches("[A=").count(), 2, "{}", p.raw);
    assert!(p.raw.starts_with("[A=smol/p1 B=smol/p2]"), "{}", p.raw);
    // A score exists exactly when both orders parsed, and a disagreement is a tie.
    assert_eq!(p.score.is_some(), p.consistent.is_some());
    assert_eq!(p.score.is_some(), p.parse_ok);
    assert!(p.consistent != Some(false) || p.score == Some(0.5));
    // The sanity check ran in each mode of the run, against each kind of bad answer.
    let sanity = out.sanity().cloned().expect("sanity check ran");
    let modes: Vec<Mode> = sanity.modes.iter().map(|m| m.mode).collect();
    assert_eq!(modes, vec![Mode::Listwise, Mode::Pairwise, Mode::Expected]);
    for m in &sanity.modes {
        let kinds: Vec<&str> = m.kinds.iter().map(|k| k.kind.as_str()).collect();
        assert_eq!(kinds, ["off_topic", "truncated", "shuffled"], "{}", m.mode);
        for k in &m.kinds {
            assert_eq!(k.passed + k.wrong + k.unscored, k.comparisons);
        }
        // The position probe ran where the judge sees answers side by side, and its rows
        // are stored with the sanity rows (the reference against itself).
        let probed = out
            .sanity_rows
            .iter()
            .any(|r| r.mode == m.mode && r.model.starts_with("probe_"));
        assert_eq!(probed, m.mode != Mode::Expected, "{}", m.mode);
        if let Some(p) = &m.position {
            assert!(p.effect.is_finite() && p.prompts == 2, "{p:?}");
            assert!(m.describe().contains("position probe"), "{}", m.describe());
        }
        // Graded damage where the judge scores one answer at a time: each kind that applies
        // to the two references, its drop from the judge's own totals.
        assert_eq!(m.graded.is_empty(), m.mode != Mode::Expected, "{}", m.mode);
        for g in &m.graded {
            assert!(g.prompts <= 2 && g.drop.is_finite(), "{g:?}");
            let damaged = out
                .sanity_rows
                .iter()
                .any(|r| r.mode == m.mode && r.model == g.kind.as_str());
            assert!(damaged, "{:?} has no rows", g.kind);
        }
    }
    // A flagged mode is flagged in the summary and comparison tables too.
    for r in &out.summary_rows {
        assert_eq!(r.judge_flagged, sanity.flagged(r.mode), "{}", r.mode);
    }
    assert!(out.summary.height() > 0);
    every_display_is_html_without_debug_syntax(&out);
}

#[test]
fn a_test_retest_and_a_joint_expected_total_in_one_run() {
    model_path(&bundled::SMOLLM2);
    let dir = TempDir::new("retest");
    let toml = tiny_toml(&dir.0, 2, "\"listwise\", \"expected\"", false);
    // The `[judge]` table is the file's last: each listwise verdict asked twice at
    // temperature 1, the expected total read jointly.
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("temperature = 1.0\nrepeats = 2\nexpected_total = \"joint\"\n");
    std::fs::write(&toml, text).unwrap();
    let out = run_file(&toml, &dir.0.join("o"));
    let js = judgments(&dir.0.join("o"));
    let listwise: Vec<&JudgmentRecord> = js.iter().filter(|j| j.mode == Mode::Listwise).collect();
    assert_eq!(
        listwise.len(),
        2 * 2 * 4 * 2,
        "2 prompts x 2 answers x 4 rows x 2 asks"
    );
    for r in 0..2 {
        assert_eq!(listwise.iter().filter(|j| j.repeat == r).count(), 16);
    }
    // Two asks of one prompt's verdict are two calls, sampled with their own seeds.
    let calls: std::collections::HashSet<&str> = listwise.iter().map(|j| j.call.as_str()).collect();
    assert_eq!(calls.len(), 4);
    // The joint total: one row per answer over the totals 3..=12, its expectation within.
    let expected: Vec<&JudgmentRecord> = js.iter().filter(|j| j.mode == Mode::Expected).collect();
    assert_eq!(expected.len(), 4, "a total per answer, no criterion rows");
    for r in &expected {
        assert_eq!(r.criterion, TOTAL);
        assert_eq!(r.repeat, 0, "a probability mode is read once");
        let p = r.probs.as_ref().unwrap();
        assert_eq!(p.len(), 10);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let e = r.expected_score.unwrap();
        assert!((3.0..=12.0).contains(&e), "{e}");
        let m = r.mass.unwrap();
        assert!(m > 0.0 && m <= 1.0 + 1e-9, "{m}");
    }
    // The test-retest is reported wherever an answer's listwise total parsed at both asks.
    let mut asks: std::collections::HashMap<&str, usize> = Default::default();
    for j in listwise
        .iter()
        .filter(|j| j.criterion == TOTAL && j.score.is_some())
    {
        *asks.entry(j.response_key.as_str()).or_default() += 1;
    }
    let retest = out.test_retest();
    assert_eq!(retest.len(), 1, "one comparison, p1 vs p2: {retest:?}");
    let r = &retest[0];
    assert_eq!((r.mode, r.repeats), (Mode::Listwise, 2));
    let twice = asks.values().filter(|&&n| n == 2).count() as u64;
    assert_eq!(r.answers, twice, "{r:?} {asks:?}");
    let findings = out.findings().to_string();
    assert!(
        findings.contains("Test-retest, listwise total (2 asks"),
        "{findings}"
    );
    // The dry run says what the judge will ask.
    let dry = run_cli(&["run", toml.to_str().unwrap(), "--dry-run"]);
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(said.contains("each verdict asked 2 times"), "{said}");
    assert!(said.contains("expected_total = \"joint\""), "{said}");
    every_display_is_html_without_debug_syntax(&out);
}

#[test]
fn the_notebooks_small_run_is_ci_s_readme_command_1() {
    // CI's command 1 writes notebook 01's small run into its folder, so that the notebook
    // reads what it judged: the two must be the same experiment, or the notebook would
    // judge everything again.
    use llm_judge::experiment::{config::Overrides, SMALL_VERDICT_TOKENS};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("data/experiments/writeup-offline.toml");
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        ci.contains("--limit 2 --max-tokens 48")
            && ci.contains(&format!("--judge-max-tokens {SMALL_VERDICT_TOKENS}"))
            && ci.contains("--out results/nb01-small"),
        "CI's command 1 is not notebook 01's small run"
    );
    let nb = std::fs::read_to_string(root.join("notebooks/01-reproduce-writeup.ipynb")).unwrap();
    assert!(nb.contains(".small(small, 2, 48)") && nb.contains("../results/nb01-small"));
    let notebook = llm_judge::Experiment::from_toml(&file)
        .unwrap()
        .small(true, 2, 48);
    let cli = ExperimentConfig::load(&file)
        .unwrap()
        .with_overrides(&Overrides {
            limit: Some(2),
            max_tokens: Some(48),
            judge_max_tokens: Some(SMALL_VERDICT_TOKENS),
            ..Default::default()
        });
    assert_eq!(notebook.config(), &cli);
    // The app's judge writes up to 512 tokens; a small run caps it, never raises one.
    let app = root.join("data/experiments/writeup-app-offline.toml");
    let judge_cap = |e: &llm_judge::Experiment| e.config().judge.as_ref().unwrap().max_tokens;
    let full = llm_judge::Experiment::from_toml(&app).unwrap();
    assert_eq!(judge_cap(&full), 512);
    assert_eq!(judge_cap(&full.small(true, 2, 48)), SMALL_VERDICT_TOKENS);
    assert_eq!(
        cli.judge.as_ref().unwrap().max_tokens,
        96,
        "below the cap: unchanged"
    );
}

/// `text` without each span that starts with `open` and ends before `close`.
fn without(text: &str, open: &str, close: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split(open).enumerate() {
        out.push_str(if i == 0 {
            part
        } else {
            part.split_once(close).map_or("", |p| p.1)
        });
    }
    out
}

/// Every value type a notebook shows renders as HTML with no Debug struct syntax, and the
/// report is self-contained (no external script, style, font or image).
fn every_display_is_html_without_debug_syntax(out: &llm_judge::RunOutput) {
    use llm_judge::RunOutput;
    let mut shown = vec![
        ("findings", out.findings().to_html()),
        ("summary", out.summary_table().to_html()),
        ("comparisons", out.comparisons_table().to_html()),
        ("position bias", out.position_bias().to_table().to_html()),
        (
            "length association",
            out.length_association(Mode::Expected).to_table().to_html(),
        ),
        ("sanity", out.sanity_table().to_html()),
        (
            "mode agreement",
            RunOutput::agreement_table(&out.mode_agreement()).to_html(),
        ),
        ("standings", out.standings_table(Mode::Pairwise).to_html()),
        ("reliability", out.reliability_table().to_html()),
        ("test-retest", out.retest_table().to_html()),
        ("unparsed", out.unparsed(Mode::Listwise).to_html()),
        ("self preference", out.self_preference(out).to_html()),
        ("charts", out.score_charts().to_html()),
    ];
    let report = out.report().expect("report written");
    shown.push(("report", std::fs::read_to_string(&*report).unwrap()));
    let debug_marks = [
        "Some(",
        "None",
        "PositionBias",
        "Estimate {",
        "LengthAssociation",
        "SanitySummary",
        "Agreement {",
        "Standing {",
        "Findings {",
        ": [",
        "NaN",
        "inf",
    ];
    for (what, html) in &shown {
        assert!(!html.trim().is_empty(), "{what} renders nothing");
        // Inline images (base64) and <pre> blocks (the run's JSON, the models' own words)
        // may hold anything: leave them out.
        let text = without(
            &without(html, "data:image/png;base64,", "\""),
            "<pre>",
            "</pre>",
        );
        for mark in debug_marks {
            // Words in prose (e.g. "information") are fine; a Debug mark is not.
            let hit = text
                .match_indices(mark)
                .find(|(i, _)| !text[..*i].ends_with(char::is_alphabetic));
            if let Some((i, _)) = hit {
                let around: String = text[i..].chars().take(200).collect();
                panic!("{what} shows {mark:?}: {around}…");
            }
        }
    }
    let report = &shown.last().unwrap().1;
    for external in ["<script src", "<link", "@import", "url(http", "src=\"http"] {
        assert!(
            !report.contains(external),
            "report loads {external}: not self-contained"
        );
    }
    assert!(report.contains("data:image/png;base64,"), "charts inline");
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
    let judge_line = "[judge]\nmodel = \"smollm2-135m-instruct\"";
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
                &prompts_file().display().to_string(),
                "no/such/prompts.jsonl",
            ),
            "prompts: cannot read the prompt file",
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
        (good.replace("name = \"p2\"", "name = \"p1\""), "duplicate setting name `p1`"),
        (good.replace("max_tokens = 16", "max_tokens = 0"), "max_tokens"),
        (good.replace("limit = 1", "limit = 0"), "limit"),
        (good.replace("max_tokens = 24", "max_tokens = 0"), "judge.max_tokens"),
        (
            good.replace(judge_line, &format!("{judge_line}\ntemperature = -1.0")),
            "temperature",
        ),
        (
            good.replace(judge_line, &format!("{judge_line}\ncriteria = [\"A\", \"A\"]")),
            "duplicate criterion `A`",
        ),
        (
            good.replace(judge_line, &format!("{judge_line}\ncriteria = [\"\"]")),
            "judge.criteria[0]",
        ),
        (
            good.replace(
                judge_line,
                &format!("{judge_line}\ncriteria = [\"Relevance\", \"Accuracy (1-4)\"]"),
            ),
            "judge.criteria[1]",
        ),
        (
            good.replace(
                "model = \"smollm2-135m-instruct\"",
                "model = \"missing/judge.gguf\"",
            ),
            "judge.model",
        ),
        (
            good.replace(
                "source = \"smollm2-135m-instruct\"",
                "source = \"smollm2-135m-instruct\"\n[models.endpoint]\nbase_urls = [\"http://127.0.0.1:9/v1\"]\nmodel = \"m\"",
            ),
            "has both `source` and `endpoint`",
        ),
        (
            good.replace(
                "source = \"smollm2-135m-instruct\"",
                "[models.endpoint]\nbase_urls = [\"http://127.0.0.1:9/v1\"]\nmodel = \"m\"\nbackoff_s = -1.0",
            ),
            "models[0].endpoint.backoff_s",
        ),
        (good.replace("seed = 7", "seed = 7\nsamples = 4294967295"), "more than the"),
    ];
    for (i, (text, needle)) in cases.into_iter().enumerate() {
        let p = dir.0.join(format!("case{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = dir.0.join(format!("out{i}"));
        let o = run_cli(&["run", p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "case {i} ({needle}): {err}");
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

#[test]
fn shipped_experiments_validate_offline() {
    // The write-up's own experiments name hub models and GPT-4: a dry run checks them and
    // says what it would download, without downloading or generating anything.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/experiments");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    for name in names.iter().map(String::as_str) {
        let p = root.join(name);
        let o = run_cli(&["run", p.to_str().unwrap(), "--dry-run"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains("dry run: nothing was generated or downloaded"),
            "{name}"
        );
        if name == "writeup-offline.toml" {
            // The power report, before anything runs: 10 prompts, 4 comparisons per mode.
            assert!(
                out.contains("power, expected: 4 comparisons over 10 prompts; the smallest p they could reach after Holm is 0.0078"),
                "{out}"
            );
            assert!(
                out.contains("power, listwise:") && out.contains("confounded"),
                "{out}"
            );
        }
        if name == "writeup-offline-balanced.toml" {
            assert!(!out.contains("confounded"), "{out}");
        }
        if name.starts_with("writeup.") || name == "writeup-app.toml" {
            assert!(out.contains("would download"), "{name}: {out}");
            assert!(out.contains("top_k 40, top_p 0.95"), "{name}: {out}");
        }
    }
    let _ = ExperimentConfig::load(&root.join("writeup.toml")).unwrap();
}

#[test]
fn a_second_run_on_the_same_folder_is_refused() {
    model_path(&bundled::SMOLLM2);
    let dir = TempDir::new("lock");
    let toml = tiny_toml(&dir.0, 4, "\"rubric\"", false);
    let out = dir.0.join("out");
    let mut first = spawn_run(&toml, &out);
    // Wait until the first run holds the folder (its log exists), then start a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !out.join("run.log").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "first run did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = run_cli(&[
        "run",
        toml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another llm-judge run is writing to this results folder"),
        "{err}"
    );
    assert!(first.wait().unwrap().success());
    // Nothing was done twice.
    let lines = std::fs::read_to_string(out.join("responses.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 8);
}

#[test]
fn a_context_beyond_training_is_warned_about_and_endless_re_asks_are_refused() {
    let dir = TempDir::new("context-warning");
    let toml = format!(
        r#"
name = "context"
prompts = "{prompts}"
max_tokens = 2
limit = 1
[[models]]
name = "smol"
source = "smollm2-135m-instruct"
context = 100000
[[settings]]
name = "greedy"
preset = "greedy"
"#,
        prompts = prompts_file().display()
    );
    let out = crate::common::run_toml(&dir.0, "context", &toml, "out");
    let w = out.warnings().join("\n");
    assert!(
        w.contains("smol") && w.contains("100000") && w.contains("8192"),
        "{w}"
    );
    assert_eq!(out.response_rows.len(), 1);
    assert!(out.response_rows[0].text.is_some());

    // A judge asked again and again: refused before anything runs, naming the field.
    let path = dir.0.join("retries.toml");
    std::fs::write(
        &path,
        format!("{toml}\n[judge]\nmodel = \"smollm2-135m-instruct\"\nretries = 1000\n"),
    )
    .unwrap();
    let err = ExperimentConfig::load(&path)
        .and_then(|c| c.plan())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("judge.retries") && err.contains("1000"),
        "{err}"
    );
}

#[test]
fn a_results_folder_written_before_the_typed_fields_still_loads() {
    use llm_judge::model::PromptFormat;
    use llm_judge::records::{Finish, Flag};
    // Written at commit 8ced4c1 (tests/data/results-8ced4c1/experiment.toml), when
    // finish_reason, prompt_format and flag were strings and run.json was untyped.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/results-8ced4c1");
    let dir = TempDir::new("old-results");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.0.join(p.file_name().unwrap())).unwrap();
    }
    let out = llm_judge::RunOutput::load(&dir.0).unwrap();
    assert_eq!(out.response_rows.len(), 4);
    assert!(out
        .response_rows
        .iter()
        .all(|r| r.finish_reason == Finish::Length));
    assert!(out
        .response_rows
        .iter()
        .all(|r| r.prompt_format == PromptFormat::Chat));
    assert_eq!(
        out.judgment_rows
            .iter()
            .filter(|r| r.flag == Some(Flag::LowMass))
            .count(),
        18
    );
    assert_eq!(out.meta.experiment.name, "old-results");
    assert!(out.meta.models["smol"]
        .id
        .as_deref()
        .unwrap()
        .starts_with("local:"));
    assert_eq!(out.sanity().unwrap().modes.len(), 3);
    // The summary and comparisons are computed now from the stored records: the same rows
    // and counts as stored, with this version's statistics (low-mass scores left out,
    // intervals at 95 %), so only the columns whose meaning did not change are compared.
    let same = [
        "model",
        "setting",
        "mode",
        "criterion",
        "n_null",
        "n_flagged",
    ];
    let then = llm_judge::table::load_table(&src, "summary").unwrap();
    let (now, then) = (
        out.summary.select(same).unwrap(),
        then.select(same).unwrap(),
    );
    assert!(now.equals_missing(&then), "summary: {now} vs {then}");
    // Every stored comparison paired low-mass scores (this tiny judge's are nearly all
    // low-mass): left out now, so nothing is left to compare.
    let then = llm_judge::table::load_table(&src, "comparisons").unwrap();
    assert!(then.height() > 0 && out.comparisons.height() == 0);
    let excluded: u64 = out.summary_rows.iter().map(|r| r.n_excluded).sum();
    assert!(
        excluded > 0,
        "the 18 low-mass rows are left out of the means"
    );
}

#[test]
fn two_runs_side_by_side() {
    model_path(&bundled::SMOLLM2);
    model_path(&bundled::GEMMA3);
    let dir = TempDir::new("diff");
    let toml = tiny_toml(&dir.0, 2, "\"expected\"", false);
    let text = std::fs::read_to_string(&toml).unwrap() + "low_mass_policy = \"include\"\n";
    std::fs::write(&toml, text).unwrap();
    let a = run_file(&toml, &dir.0.join("a"));
    // The same answers, judged by Gemma 3.
    let judge = llm_judge::results::rejudge_config(&a, "gemma3-270m", &[]);
    let b = a.rejudge(judge, dir.0.join("b")).unwrap();

    // Human labels on the same run: one pinned to its answers, one to answers it does not
    // have (stale, left out).
    let answer = |setting: &str, prompt: &str| {
        a.response_rows
            .iter()
            .find(|r| r.setting == setting && r.prompt_id == prompt)
            .unwrap()
            .key
            .clone()
    };
    let prompts: Vec<String> = {
        let mut p: Vec<String> = a
            .response_rows
            .iter()
            .map(|r| r.prompt_id.clone())
            .collect();
        p.dedup();
        p
    };
    let label = |prompt: &str, a_key: &str| {
        serde_json::json!({"prompt_id": prompt, "a": "smol/p1", "b": "smol/p2",
            "preferred": "b", "a_response": a_key, "b_response": answer("p2", prompt)})
        .to_string()
    };
    let labels = dir.0.join("labels.jsonl");
    std::fs::write(
        &labels,
        format!(
            "# test labels\n{}\n{}\n",
            label(&prompts[0], &answer("p1", &prompts[0])),
            label(&prompts[1], "not-this-run")
        ),
    )
    .unwrap();
    let c = a.calibrate(&labels).unwrap();
    assert_eq!((c.results.len(), c.left_out), (1, 1), "{c:?}");
    let r = &c.results[0];
    assert_eq!((r.prompts, r.labelled), (2, 1));
    assert_eq!(r.human_win_rate, 1.0);
    // One label says nothing about how the judge errs (no covariance): the corrected win
    // rate is the label's own, whatever the judge said on the other prompt.
    assert_eq!(r.corrected_win_rate, 1.0);
    // The labels named in the experiment are read when the run is planned: a label for a
    // cell the experiment does not have is refused before anything runs.
    std::fs::write(
        &labels,
        r#"{"prompt_id": "x", "a": "smol/p1", "b": "other/p2", "preferred": "a"}"#,
    )
    .unwrap();
    let bad = std::fs::read_to_string(&toml).unwrap().replacen(
        "[[models]]",
        "labels = \"labels.jsonl\"\n\n[[models]]",
        1,
    );
    std::fs::write(dir.0.join("bad.toml"), bad).unwrap();
    let err = ExperimentConfig::load(&dir.0.join("bad.toml"))
        .unwrap()
        .plan()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("labels.jsonl") && err.contains("`other/p2` is not a cell"),
        "{err}"
    );

    // What each stage read, wrote and took: the answers' generation and the judge's
    // calls, counted by the local backends; no price, so no cost.
    let stage = |run: &llm_judge::RunOutput, name: &str| {
        run.usage()
            .iter()
            .find(|u| u.stage == name)
            .cloned()
            .unwrap_or_else(|| panic!("no stage {name}: {:?}", run.usage()))
    };
    let g = stage(&a, "generate smol");
    assert_eq!((g.calls, g.reused, g.cost), (4, 0, None));
    assert!(g.prompt_tokens > 0 && g.completion_tokens > 0, "{g:?}");
    let j = stage(&a, "judge expected");
    assert_eq!(j.calls, 4, "one call per answer");
    assert!(
        j.prompt_tokens > g.prompt_tokens && j.seconds > 0.0,
        "{j:?}"
    );
    assert!(a
        .usage_lines()
        .last()
        .unwrap()
        .starts_with("usage, total: 8 calls"));
    // The dry run's estimate: the same calls, and completion tokens no more than it said.
    let plan = ExperimentConfig::load(&toml).unwrap().plan().unwrap();
    let est = plan.estimate();
    let e = |name: &str| est.iter().find(|e| e.stage == name).unwrap().clone();
    assert_eq!(
        (e("generate smol").calls, e("judge expected").calls),
        (4, 4)
    );
    assert_eq!(e("generate smol").completion_tokens, 4 * 16);
    assert!(g.completion_tokens <= e("generate smol").completion_tokens);
    assert_eq!(e("judge expected").completion_tokens, 0);
    assert!(plan.describe().contains("estimate, total: 8 calls"));
    // Run again into the same folder: everything is reused, nothing read.
    let again = run_file(&toml, &dir.0.join("a"));
    let j = stage(&again, "judge expected");
    assert_eq!((j.calls, j.reused, j.prompt_tokens), (0, 4, 0));
    // What the first run spent making those calls stays counted, and a third run adds
    // its nothing to the same figures.
    let first = stage(&a, "judge expected");
    let (all, spent) = (j.all(), first.spent());
    assert_eq!(
        (all.calls, all.prompt_tokens, all.completion_tokens),
        (spent.calls, spent.prompt_tokens, spent.completion_tokens),
        "{j:?}"
    );
    assert!(all.seconds >= spent.seconds);
    let third = run_file(&toml, &dir.0.join("a"));
    assert_eq!(
        stage(&third, "judge expected").all().prompt_tokens,
        first.prompt_tokens
    );
    assert!(
        third.usage_lines()[1].contains(&format!(
            "with the earlier runs into this folder 4 calls, {} prompt",
            first.prompt_tokens
        )),
        "{:?}",
        third.usage_lines()
    );

    // A run against itself: nothing moved.
    let same = a.diff(&a);
    assert_eq!(same.rows.len(), 2, "{same}");
    for r in &same.rows {
        assert_eq!((r.diff, r.scores_changed, r.answers_changed), (0.0, 0, 0));
        assert_eq!((r.ci_low, r.ci_high), (0.0, 0.0));
    }
    // Two judges of the same answers: the answers did not change, the scores did.
    let d = a.diff(&b);
    assert_eq!(d.rows.len(), 2, "{d}");
    for r in &d.rows {
        assert_eq!((r.mode, r.criterion.as_str()), (Mode::Expected, TOTAL));
        assert_eq!((r.prompts, r.answers_changed, r.unmatched), (2, 0, 0));
        assert!(r.scores_changed > 0, "{d}");
        // The difference is the per-prompt mean of B − A, read from the two tables.
        let mean_of = |run: &llm_judge::RunOutput| {
            run.judgment_rows
                .iter()
                .filter(|j| j.model == r.model && j.setting == r.setting && j.criterion == TOTAL)
                .filter_map(|j| j.value())
                .sum::<f64>()
                / 2.0
        };
        assert!((r.diff - (mean_of(&b) - mean_of(&a))).abs() < 1e-9, "{d}");
    }
    assert!(
        d.judge_a.contains("smollm2") && d.judge_b.contains("gemma"),
        "{d}"
    );
    // The CLI prints it and writes a self-contained page, a table and the chart.
    let out = dir.0.join("diff");
    let o = run_cli(&[
        "diff",
        dir.0.join("a").to_str().unwrap(),
        dir.0.join("b").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("smol/p1 expected total"), "{stdout}");
    let html = std::fs::read_to_string(out.join("diff.html")).unwrap();
    assert!(html.contains("data:image/png;base64,") && html.contains("answers_changed"));
    assert!(out.join("diff.csv").exists() && out.join("diff.png").exists());
}

#[test]
fn a_constrained_judge_writes_verdicts_that_always_parse() {
    // The write-up's design on the bundled small models, SmolLM2 judging listwise with the
    // shipped template: unconstrained, none of its 40 verdicts parse (see the README); held
    // to the verdict's language, every one does, and the totals are the judge's own, not a
    // constant.
    model_path(&bundled::SMOLLM2);
    model_path(&bundled::GEMMA3);
    let dir = TempDir::new("constrained");
    let toml = format!(
        r#"name = "constrained"
prompts = "{}"
seed = 2024
max_tokens = 48

[[models]]
name = "smol"
source = "smollm2-135m-instruct"

[[models]]
name = "gemma"
source = "gemma3-270m"

[[settings]]
name = "p1"
preset = "p1"

[[settings]]
name = "p2"
preset = "p2"

[judge]
model = "smollm2-135m-instruct"
modes = ["listwise"]
retries = 1
max_tokens = 160
sanity_check = false
"#,
        prompts_file().display()
    );
    let out = crate::common::run_toml(&dir.0, "c", &toml, "o");
    let totals: Vec<&JudgmentRecord> = out
        .judgment_rows
        .iter()
        .filter(|j| j.mode == Mode::Listwise && j.criterion == TOTAL)
        .collect();
    assert_eq!(totals.len(), 40, "10 prompts x 4 answers");
    let scores: Vec<f64> = totals.iter().filter_map(|j| j.score).collect();
    assert_eq!(scores.len(), 40, "every constrained verdict parses");
    assert!(totals
        .iter()
        .all(|j| j.parse_ok && j.attempts == 1 && j.flag.is_none()));
    let mut distinct = scores.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    assert!(
        distinct.len() > 1,
        "the totals are a constant: {distinct:?}"
    );
    assert!(
        scores.iter().all(|s| (3.0..=12.0).contains(s)),
        "{scores:?}"
    );
    // Each reply is exactly the verdict form: one line per answer, nothing else.
    let line = regex::Regex::new(
        r"^Answer [1-4]: Relevance \[\[[1-4]\]\], Coherence \[\[[1-4]\]\], Completeness \[\[[1-4]\]\]$",
    )
    .unwrap();
    for j in &totals {
        assert_eq!(j.raw.lines().count(), 4, "{}", j.raw);
        assert!(j.raw.lines().all(|l| line.is_match(l)), "{}", j.raw);
    }
    // run.json says the verdicts were constrained.
    let meta = std::fs::read_to_string(dir.0.join("o/run.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["judge"]["constrained"], true, "{}", meta["judge"]);
}
