//! A toy mode that exists only in tests: it scores every criterion of an answer by the
//! answer's length (one point per 15 words, from 1 to the scale) and asks the judge nothing.
//! It shows that a mode is this one file, its `Mode::Length` variant and its arm in
//! [`Mode::spec`]: the sanity check, the summary, the comparisons and the views pick it up
//! from its spec.

use super::call::{Asker, Call};
use super::spec::{no_check, ModeSpec, Pass, Shows};
use super::{Group, Judge, Mode, VerdictForm};

/// The toy mode: a rubric-shaped mode whose sanity pass is a margin of one point.
pub static SPEC: ModeSpec = ModeSpec {
    mode: Mode::Length,
    template: "rubric",
    template_modes: &[Mode::Length, Mode::Rubric],
    forms: &[VerdictForm::Criteria],
    placeholders: &["question", "answer"],
    check: no_check,
    shows: Shows::OneAnswer,
    pass: Pass::Margin(1.0),
    samples: false,
    calls,
};

/// One call per answer, answered without the judge.
pub fn calls<'a>(judge: &'a Judge, _: &'a Asker, groups: &[Group<'a>]) -> Vec<Call<'a>> {
    groups
        .iter()
        .flat_map(|g| g.answers.iter().copied())
        .map(|answer| {
            let key = judge.call_key(Mode::Length, &[&answer.key], serde_json::Value::Null);
            let words = answer
                .text
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .count();
            let score = (1 + words / 15).min(judge.cfg.scale as usize) as u32;
            let scores = vec![Some(score); judge.cfg.criteria.len()];
            let call = key.clone();
            Call {
                label: format!("{} {}", answer.cell(), answer.prompt_id),
                run: Box::pin(async move {
                    Ok(judge.criteria_rows(&call, Mode::Length, answer, &scores))
                }),
                key,
            }
        })
        .collect()
}

#[test]
fn a_mode_is_one_file_and_the_harness_picks_it_up() {
    use crate::backend::scripted::Scripted;
    use crate::experiment::{sanity, Judging, Outcome, Silent};
    use crate::records::{ResponseRecord, TOTAL};
    use crate::store::Store;
    use crate::{Experiment, JudgeConfig, RunOutput, SamplingParams};

    let dir = std::env::temp_dir().join(format!("llmj-toy-mode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let prompts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/prompts/writeup.jsonl");
    let plan = Experiment::new("toy", prompts)
        .model("terse", "smollm2-135m-instruct")
        .model("wordy", "gemma3-270m")
        .setting("p1", &SamplingParams::p1())
        .judge(JudgeConfig::new("smollm2-135m-instruct").with_modes(&[Mode::Length]))
        .limit(3)
        .plan()
        .unwrap();
    let mut responses = Vec::new();
    for (model, words) in [("terse", 10), ("wordy", 50)] {
        for (i, p) in plan.prompts.iter().enumerate() {
            responses.push(ResponseRecord {
                key: format!("{model}-{}", p.id),
                model: model.into(),
                setting: "p1".into(),
                prompt_id: p.id.clone(),
                prompt: p.prompt.clone(),
                text: Some(vec!["word"; words + i].join(" ")),
                ..Default::default()
            });
        }
    }
    let judge = Judge::new(
        plan.config.judge.clone().unwrap(),
        "length".into(),
        "toy:length".into(),
        plan.templates.clone(),
        plan.config.seed,
    );
    let store = Store::open(&dir).unwrap();
    // The toy asks the judge nothing; a backend that answered would fail the test.
    let mut backend = Scripted::new(|_, _| unreachable!(), |_| unreachable!());
    let mut failures = Vec::new();
    let mut judging = Judging {
        judge: &judge,
        backend: &mut backend,
        store: &store,
        progress: &mut Silent,
        failures: &mut failures,
        usage: &mut Vec::new(),
    };
    let groups = super::group_answers(&responses);
    let judgments = judging
        .mode(Mode::Length, &groups, "judgments", "judge length")
        .unwrap();
    assert_eq!(judgments.len(), 6 * 4, "3 criteria and a total per answer");

    // The sanity check: a truncated reference is shorter (a pass), a shuffled one is as long
    // (a fail), so the judge is flagged.
    let (summary, sanity_rows) = sanity::run(&plan, &mut judging).unwrap();
    let summary = summary.expect("the write-up's prompts have references");
    let m = summary
        .modes
        .iter()
        .find(|m| m.mode == Mode::Length)
        .unwrap();
    let rate = |kind: &str| {
        m.kinds
            .iter()
            .find(|k| k.kind.as_str() == kind)
            .unwrap()
            .pass_rate()
    };
    assert_eq!((rate("truncated"), rate("shuffled")), (1.0, 0.0));
    assert!(m.flagged);
    assert!(failures.is_empty(), "{failures:?}");

    let out = RunOutput::write(
        &plan,
        Outcome {
            responses,
            judgments,
            sanity_rows,
            sanity: Some(summary),
            judge: Some(("length".into(), "toy:length".into())),
            failures: Vec::new(),
            warnings: Vec::new(),
            device: "none".into(),
            usage: Vec::new(),
        },
        &dir,
    )
    .unwrap();
    // The summary and the comparisons, each marked with the flagged judge.
    let row = out
        .summary_rows
        .iter()
        .find(|r| r.model == "wordy" && r.mode == Mode::Length && r.criterion == TOTAL)
        .unwrap();
    assert_eq!((row.n, row.mean), (3, 12.0));
    assert_eq!(row.judge_flagged, Some(true));
    let cmp = out
        .comparison_rows
        .iter()
        .find(|c| c.mode == Mode::Length && c.criterion == TOTAL)
        .unwrap();
    assert_eq!(cmp.n, 3);
    assert!(cmp.mean_diff.abs() > 5.0, "{}", cmp.mean_diff);
    // The views.
    assert_eq!(out.scoring_modes(), vec![Mode::Length]);
    assert!(out.score_bars(Mode::Length).is_ok());
    assert!(out.prompt_heatmap(Mode::Length).is_ok());
    let sanity = out.sanity_table().to_html();
    assert!(sanity.contains("length"), "{sanity}");
    let findings = out.findings().to_string();
    assert!(
        findings.contains("do not trust this judge's length scores"),
        "{findings}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
