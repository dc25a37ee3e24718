//! Expected mode: no text is generated. The judge's reply is written up to each criterion's
//! score (`Relevance: [[`), and the score is read from its next-token probabilities over
//! `1..=scale` (every single-token spelling of a score counts): the argmax and the
//! expectation `Σ k·p(k)`. The next criterion's prefix follows the argmax, as if the judge
//! had written it.
//!
//! Rows: one per criterion and a `total` (sums of argmax and expectation), each with the
//! renormalised probabilities and the mass the score tokens held. A row whose mass is below
//! `low_mass` is flagged: the judge wanted to write something else there. An answer that
//! cannot be scored (no score token among the likely ones, a prompt over the context) gets
//! null rows with the reason.

use super::call::{Asker, Call};
use super::spec::{ModeSpec, Pass, Shows, EXPECTED_MARGIN};
use super::template::JudgeTemplate;
use super::{answer_error, Group, Judge, Mode, VerdictForm};
use crate::backend::LabelQuery;
use crate::records::{JudgmentRecord, ResponseRecord, TOTAL};

/// Expected mode: a rubric prompt, the scores read from token probabilities.
pub static SPEC: ModeSpec = ModeSpec {
    mode: Mode::Expected,
    template: "expected",
    template_modes: &[Mode::Expected, Mode::Rubric],
    forms: &[VerdictForm::Criteria],
    placeholders: &["question", "answer"],
    check,
    shows: Shows::OneAnswer,
    pass: Pass::Margin(EXPECTED_MARGIN),
    calls,
};

/// The score is read right after `score_prefix`, so it must say something.
fn check(t: &JudgeTemplate, origin: &str) -> crate::Result<()> {
    if t.score_prefix.trim().is_empty() {
        return Err(crate::Error::config(
            format!("{origin}: score_prefix"),
            "is empty: the expected mode reads the score token right after it",
        ));
    }
    Ok(())
}

/// One call per answered response.
pub fn calls<'a>(judge: &'a Judge, asker: &'a Asker, groups: &[Group<'a>]) -> Vec<Call<'a>> {
    groups
        .iter()
        .flat_map(|g| g.answers.iter().copied())
        .map(|answer| {
            let key = judge.call_key(Mode::Expected, &[&answer.key], serde_json::Value::Null);
            Call {
                label: format!("{} {}", answer.cell(), answer.prompt_id),
                run: Box::pin(judge_one(judge, asker, answer, key.clone())),
                key,
            }
        })
        .collect()
}

async fn judge_one(
    judge: &Judge,
    asker: &Asker,
    answer: &ResponseRecord,
    call: String,
) -> crate::Result<Vec<JudgmentRecord>> {
    // Prompt.
    let t = judge.template(Mode::Expected);
    let format = judge.criteria_format();
    let input = judge.input(
        Mode::Expected,
        &[
            ("question", &answer.prompt),
            ("answer", answer.text.as_deref().unwrap_or("")),
            ("format", &format),
        ],
    );
    let labels: Vec<String> = (1..=judge.cfg.scale).map(|k| k.to_string()).collect();
    let criteria = &judge.cfg.criteria;
    // Calls: one distribution per criterion, each after the previous argmax.
    let mut written = String::new();
    let mut rows = Vec::new();
    for c in criteria {
        let prefix = format!("{written}{}", t.score_prefix.replace("{criterion}", c));
        let query = LabelQuery {
            input: input.clone(),
            prefix: prefix.clone(),
            labels: labels.clone(),
        };
        let d = match asker.labels(query).await {
            Ok(d) => d,
            Err(e) => {
                let Some(reason) = answer_error(&e) else {
                    return Err(e);
                };
                let mut names: Vec<&str> = criteria.iter().map(String::as_str).collect();
                names.push(TOTAL);
                return Ok(judge.failed_rows(&call, Mode::Expected, answer, &names, &reason));
            }
        };
        let argmax = d.argmax() + 1;
        written = format!("{prefix}{argmax}{}", t.score_suffix);
        // Row.
        let mut r = judge.row(&call, Mode::Expected, answer, c, Some(argmax as f64));
        r.expected_score = Some(d.expectation());
        if !d.missing.is_empty() {
            // A remote top-20 without some score tokens: say how far off it could be.
            let (lo, hi) = d.expectation_bounds();
            r.expected_low = Some(lo);
            r.expected_high = Some(hi);
            r.labels_missing = Some(d.missing.len() as u32);
        }
        r.probs = Some(d.probs.clone());
        r.mass = Some(d.mass);
        rows.push(r);
    }
    // The total.
    let sum = |f: &dyn Fn(&JudgmentRecord) -> Option<f64>| rows.iter().map(f).sum::<Option<f64>>();
    let mut total = judge.row(&call, Mode::Expected, answer, TOTAL, sum(&|r| r.score));
    total.expected_score = sum(&|r| r.expected_score);
    if rows.iter().any(|r| r.labels_missing.is_some()) {
        total.expected_low = sum(&|r| r.expected_low.or(r.expected_score));
        total.expected_high = sum(&|r| r.expected_high.or(r.expected_score));
        total.labels_missing = Some(rows.iter().filter_map(|r| r.labels_missing).sum());
    }
    total.mass = rows.iter().filter_map(|r| r.mass).reduce(f64::min);
    rows.push(total);
    for r in &mut rows {
        if r.mass.is_some_and(|m| m < judge.cfg.low_mass) {
            r.flag = Some(crate::records::Flag::LowMass);
        }
    }
    Ok(rows)
}
