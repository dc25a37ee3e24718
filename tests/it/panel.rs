//! A panel of judges on the real bundled models: SmolLM2 and Gemma 3 judge the same answers,
//! the panel pools them (mean scores, majority verdicts), leaves flagged judges out unless
//! told otherwise, and reports their agreement; a bad panel is refused before anything runs.

use crate::common::{model_path, prompts_file, run_file, TempDir};
use llm_judge::experiment::ExperimentConfig;
use llm_judge::model::bundled;
use llm_judge::records::{JudgmentRecord, Mode, OVERALL, TOTAL};
use llm_judge::store::Store;
use std::path::{Path, PathBuf};

const SMOL: &str = "smollm2-135m-instruct";
const GEMMA: &str = "gemma3-270m";

fn judge_table(model: &str) -> String {
    format!(
        r#"
[[judges]]
model = "{model}"
modes = ["expected", "pairwise"]
max_tokens = 24
retries = 0
low_mass_policy = "include"
"#
    )
}

fn panel_toml(dir: &Path, include_flagged: bool) -> PathBuf {
    let text = format!(
        r#"name = "panel"
prompts = "{}"
seed = 11
max_tokens = 16
limit = 2

[[models]]
name = "smol"
source = "{SMOL}"

[[settings]]
name = "p1"
preset = "p1"

[[settings]]
name = "p2"
preset = "p2"
{}{}
[panel]
include_flagged = {include_flagged}
"#,
        prompts_file().display(),
        judge_table(SMOL),
        judge_table(GEMMA)
    );
    let p = dir.join("panel.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn rows_of<'a>(
    rows: &'a [JudgmentRecord],
    mode: Mode,
    criterion: &str,
) -> impl Iterator<Item = &'a JudgmentRecord> + 'a {
    let criterion = criterion.to_string();
    rows.iter()
        .filter(move |r| r.mode == mode && r.criterion == criterion && r.repeat == 0)
}

fn stored_calls(dir: &Path) -> usize {
    Store::open(dir)
        .unwrap()
        .load::<llm_judge::records::CallRecord>("judgments")
        .unwrap()
        .len()
}

#[test]
fn a_panel_pools_two_judges_of_the_same_answers() {
    model_path(&bundled::SMOLLM2);
    model_path(&bundled::GEMMA3);
    let dir = TempDir::new("panel");
    let out = dir.0.join("out");
    let run = run_file(&panel_toml(&dir.0, true), &out);
    assert!(run.is_panel());
    let judges = run.panel_runs().unwrap();
    let names: Vec<&str> = judges.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [SMOL, GEMMA]);
    for (name, j) in &judges {
        assert!(out.join("judges").join(name).join("run.json").is_file());
        // Each judge judged the panel's answers, none generated again.
        assert_eq!(j.response_rows.len(), 4);
        let keys: Vec<&str> = j.response_rows.iter().map(|r| r.key.as_str()).collect();
        let top: Vec<&str> = run.response_rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, top);
        assert!(j.judgment_rows.iter().all(|r| r.judge == *name));
    }
    let (a, b) = (&judges[0].1, &judges[1].1);
    assert!(!run.judgment_rows.is_empty());
    assert!(run.judgment_rows.iter().all(|r| r.judge == "panel"));
    assert!(run.judgments.column("judge").is_ok());

    // Expected totals: the mean of the two judges' expected scores, answer by answer
    // (`include_flagged`: both pooled whatever their sanity checks said).
    let total = |j: &llm_judge::RunOutput, key: &str| {
        rows_of(&j.judgment_rows, Mode::Expected, TOTAL)
            .find(|r| r.response_key == key)
            .and_then(|r| r.expected_score)
    };
    let pooled: Vec<&JudgmentRecord> = rows_of(&run.judgment_rows, Mode::Expected, TOTAL).collect();
    assert_eq!(pooled.len(), 4);
    for p in &pooled {
        let (x, y) = (total(a, &p.response_key), total(b, &p.response_key));
        let want = match (x, y) {
            (Some(x), Some(y)) => Some((x + y) / 2.0),
            (Some(v), None) | (None, Some(v)) => Some(v),
            (None, None) => None,
        };
        assert_eq!(p.expected_score, want, "{}", p.raw);
        assert!(p.raw.contains(SMOL) && p.raw.contains(GEMMA), "{}", p.raw);
    }
    // Pairwise verdicts: the majority of two, so a disagreement is a tie.
    let verdict = |j: &llm_judge::RunOutput, r: &JudgmentRecord| {
        rows_of(&j.judgment_rows, Mode::Pairwise, OVERALL)
            .find(|x| x.response_key == r.response_key && x.other_key == r.other_key)
            .and_then(|x| x.score)
    };
    let pairs: Vec<&JudgmentRecord> =
        rows_of(&run.judgment_rows, Mode::Pairwise, OVERALL).collect();
    assert!(!pairs.is_empty());
    for p in &pairs {
        let want = match (verdict(a, p), verdict(b, p)) {
            (Some(x), Some(y)) if x == y => Some(x),
            (Some(_), Some(_)) => Some(0.5),
            (Some(v), None) | (None, Some(v)) => Some(v),
            (None, None) => None,
        };
        assert_eq!(p.score, want, "{}", p.raw);
    }
    // The panel's own sanity check, from the judges' pooled sanity rows.
    let s = run.sanity().expect("the panel's sanity check");
    assert!(s.modes.iter().any(|m| m.mode == Mode::Expected));

    // Agreement: alpha over the four expected totals, Fleiss' kappa over the verdicts.
    let ag = run.panel_agreement().unwrap();
    let e = ag.iter().find(|g| g.mode == Mode::Expected).unwrap();
    assert_eq!(
        (e.statistic.as_str(), e.n, e.prompts),
        ("krippendorff_alpha", 4, 2)
    );
    let v = ag.iter().find(|g| g.mode == Mode::Pairwise).unwrap();
    assert_eq!(v.statistic, "fleiss_kappa");
    assert_eq!(
        v.n,
        pairs
            .iter()
            .filter(|p| verdict(a, p).is_some() && verdict(b, p).is_some())
            .count()
    );
    let t = run.panel_table().to_html();
    assert!(
        t.contains(SMOL) && t.contains(GEMMA) && t.contains("in_panel"),
        "{t}"
    );
    let report = std::fs::read_to_string(&run.report().unwrap().path).unwrap();
    assert!(
        report.contains("Judge panel") && report.contains("fleiss_kappa"),
        "{report}"
    );
    assert!(run.findings().to_string().contains("a panel of 2 judges"));

    // The folder loads like any other run: the same pooled rows, tables and findings.
    let loaded = llm_judge::RunOutput::load(&out).unwrap();
    let keys = |r: &llm_judge::RunOutput| -> Vec<String> {
        r.judgment_rows.iter().map(|j| j.key.clone()).collect()
    };
    assert_eq!(keys(&loaded), keys(&run));
    assert_eq!(loaded.summary_rows.len(), run.summary_rows.len());
    assert_eq!(loaded.sanity_rows.len(), run.sanity_rows.len());

    // The same panel from the two judges' runs (as a notebook pools a run and its
    // rejudge): nothing is judged again, and the pool is the same.
    let again = judges[0]
        .1
        .panel_with(&[&judges[1].1], dir.0.join("pooled"))
        .unwrap();
    for (n, _) in &judges {
        assert_eq!(
            stored_calls(&dir.0.join("pooled/judges").join(n)),
            stored_calls(&out.join("judges").join(n))
        );
    }
    let scores = |r: &llm_judge::RunOutput| -> Vec<Option<f64>> {
        r.judgment_rows.iter().map(|j| j.value()).collect()
    };
    // (`include_flagged` is off there: compare the modes no judge is flagged in.)
    if judges.iter().all(|(_, j)| {
        j.sanity()
            .is_none_or(|s| s.modes.iter().all(|m| !m.flagged))
    }) {
        assert_eq!(scores(&again), scores(&run));
    }
    // Nothing generated again either.
    assert!(again
        .meta
        .usage
        .iter()
        .filter(|u| u.stage.starts_with("generate"))
        .all(|u| u.calls == 0));
    for (n, j) in &judges {
        let usage = &again
            .panel_runs()
            .unwrap()
            .into_iter()
            .find(|(m, _)| m == n)
            .unwrap()
            .1
            .meta
            .usage;
        assert!(
            usage
                .iter()
                .filter(|u| u.stage.starts_with("judge"))
                .all(|u| u.calls == 0),
            "{n}: {usage:?}"
        );
        assert!(j
            .meta
            .usage
            .iter()
            .any(|u| u.stage.starts_with("judge") && u.calls > 0));
    }

    // Again without `include_flagged`: nothing is judged again, and a judge its sanity
    // check flagged in a mode is out of that mode's pool, with a warning that says so.
    let calls: Vec<usize> = judges
        .iter()
        .map(|(n, _)| stored_calls(&out.join("judges").join(n)))
        .collect();
    let run = run_file(&panel_toml(&dir.0, false), &out);
    let again: Vec<usize> = judges
        .iter()
        .map(|(n, _)| stored_calls(&out.join("judges").join(n)))
        .collect();
    assert_eq!(calls, again);
    for mode in [Mode::Expected, Mode::Pairwise] {
        let passed: Vec<&str> = judges
            .iter()
            .filter(|(_, j)| j.flagged(mode) != Some(true))
            .map(|(n, _)| n.as_str())
            .collect();
        let criterion = if mode == Mode::Pairwise {
            OVERALL
        } else {
            TOTAL
        };
        let rows: Vec<&JudgmentRecord> = rows_of(&run.judgment_rows, mode, criterion).collect();
        if passed.is_empty() {
            assert!(rows.is_empty(), "{mode}: pooled with every judge flagged");
            assert!(run
                .warnings()
                .iter()
                .any(|w| w.contains(&format!("no judge passed the sanity check in {mode}"))));
        } else {
            for r in rows {
                for (n, _) in &judges {
                    assert_eq!(
                        r.raw.contains(n.as_str()),
                        passed.contains(&n.as_str()),
                        "{}",
                        r.raw
                    );
                }
            }
        }
        for (n, j) in &judges {
            if j.flagged(mode) == Some(true) {
                assert!(run.warnings().iter().any(|w| w.contains(&format!(
                    "judge {n} is flagged in {mode} by its sanity check and left out"
                ))));
            }
        }
    }
}

#[test]
fn a_bad_panel_is_refused_before_anything_runs() {
    let dir = TempDir::new("panel-bad");
    let base = std::fs::read_to_string(panel_toml(&dir.0, false)).unwrap();
    let err = |text: &str| {
        let p = dir.0.join("bad.toml");
        std::fs::write(&p, text).unwrap();
        ExperimentConfig::load(&p)
            .unwrap()
            .plan()
            .unwrap_err()
            .to_string()
    };
    let e = err(&format!("{base}\n[judge]\nmodel = \"{SMOL}\"\n"));
    assert!(e.contains("judges") && e.contains("not both"), "{e}");
    let one = base.replace(&judge_table(GEMMA), "");
    let e = err(&one);
    assert!(e.contains("at least two judges"), "{e}");
    let e = err(&base.replace(GEMMA, SMOL));
    assert!(
        e.contains("judges[1].model") && e.contains("earlier judge"),
        "{e}"
    );
    let e = err(&base.replacen("retries = 0\n", "retries = 0\ncriteria = []\n", 1));
    assert!(e.contains("judges[0].criteria"), "{e}");
    let e = err(&base.replacen(
        "low_mass_policy = \"include\"\n\n[panel]",
        "low_mass_policy = \"include\"\nscale = 5\n\n[panel]",
        1,
    ));
    assert!(
        e.contains("judges[1].criteria") && e.contains("one scale"),
        "{e}"
    );
    // The estimate counts both judges' stages.
    let plan = ExperimentConfig::load(&panel_toml(&dir.0, false))
        .unwrap()
        .plan()
        .unwrap();
    let stages = plan.estimate();
    for m in [SMOL, GEMMA] {
        assert!(
            stages
                .iter()
                .any(|s| s.model == m && s.stage == "judge expected"),
            "{stages:?}"
        );
    }
}
