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
//!
//! With `expected_total = "joint"` the judge is asked for the total alone (`Total: [[`), and
//! the total is read from its distribution over the totals themselves (3..=12 for three
//! criteria on 1-4): a single-digit total is its digit's probability, a two-digit one the
//! product of its two tokens' (`1`, then `0`..`9` after it). The rows are a `total` only.

use super::call::{Asker, Call};
use super::spec::{ModeSpec, Pass, Shows, EXPECTED_MARGIN};
use super::template::JudgeTemplate;
use super::{answer_error, ExpectedTotal, Group, Judge, Mode, VerdictForm};
use crate::backend::{LabelDistribution, LabelQuery};
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
    samples: false,
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
    if judge.cfg.expected_total == ExpectedTotal::Joint {
        return judge_total(judge, asker, answer, call).await;
    }
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

/// The lowest and highest total of the criteria.
fn total_range(judge: &Judge) -> (u32, u32) {
    let n = judge.cfg.criteria.len() as u32;
    (n, n * judge.cfg.scale)
}

/// The digits as labels: `first..=9`.
fn digits(first: u32) -> Vec<String> {
    (first..=9).map(|d| d.to_string()).collect()
}

/// The distribution over the totals `lo..=hi` (at most 19) from the judge's digit
/// distributions: `first` over `1`..`9` at the total, and `second` over `0`..`9` after a
/// `1` (needed when `hi` ≥ 10). A two-digit total's probability is the product of its
/// digits'. Digits a remote top-20 did not show leave the totals they spell missing.
pub(crate) fn joint_totals(
    first: &LabelDistribution,
    second: Option<&LabelDistribution>,
    lo: u32,
    hi: u32,
) -> crate::Result<LabelDistribution> {
    let raw = |d: &LabelDistribution, i: usize| d.probs.get(i).map_or(0.0, |p| p * d.mass);
    let missing_in = |d: &LabelDistribution, i: usize| d.missing.contains(&i);
    let mut probs = Vec::new();
    let mut missing = Vec::new();
    let mut at_most: f64 = 0.0;
    for (index, total) in (lo..=hi).enumerate() {
        let (p, gone) = if total < 10 {
            let i = total as usize - 1;
            (raw(first, i), missing_in(first, i))
        } else {
            let second = second.ok_or_else(|| {
                crate::Error::NoLabelToken(format!("total {total} needs its second digit"))
            })?;
            let j = (total - 10) as usize;
            (
                raw(first, 0) * raw(second, j),
                missing_in(first, 0) || missing_in(second, j),
            )
        };
        if gone {
            missing.push(index);
        }
        probs.push(p);
    }
    if !missing.is_empty() {
        at_most = first
            .missing_at_most
            .max(second.map_or(0.0, |s| s.missing_at_most));
    }
    Ok(LabelDistribution::from_raw(probs)?.with_missing(missing, at_most))
}

/// The reply format the judge is shown for a joint total (its `{format}`).
pub fn joint_format(judge: &Judge) -> String {
    let (lo, hi) = total_range(judge);
    format!(
        "{TOTAL_LABEL}: [[n]]\n(One line only, instead of a line per criterion: n is the sum \
         of the criteria's scores, from {lo} to {hi}.)"
    )
}

/// Expected mode, `expected_total = "joint"`: the total read at once.
async fn judge_total(
    judge: &Judge,
    asker: &Asker,
    answer: &ResponseRecord,
    call: String,
) -> crate::Result<Vec<JudgmentRecord>> {
    // Prompt: the criteria as usual, the reply a total.
    let t = judge.template(Mode::Expected);
    let (lo, hi) = total_range(judge);
    let format = joint_format(judge);
    let input = judge.input(
        Mode::Expected,
        &[
            ("question", &answer.prompt),
            ("answer", answer.text.as_deref().unwrap_or("")),
            ("format", &format),
        ],
    );
    let prefix = t.score_prefix.replace("{criterion}", TOTAL_LABEL);
    // Calls: the first digit at the total, and the second after a `1`.
    let first = asker.labels(LabelQuery {
        input: input.clone(),
        prefix: prefix.clone(),
        labels: digits(1),
    });
    let second = (hi >= 10).then(|| {
        asker.labels(LabelQuery {
            input,
            prefix: format!("{prefix}1"),
            labels: digits(0),
        })
    });
    let read = async {
        let first = first.await?;
        let second = match second {
            Some(s) => Some(match s.await {
                Ok(d) => d,
                // No second digit among a remote judge's top 20: the two-digit totals are
                // missing (bounded), not the answer's whole score.
                Err(crate::Error::NoLabelToken(_)) => LabelDistribution {
                    probs: vec![0.0; 10],
                    mass: 0.0,
                    missing: (0..10).collect(),
                    missing_at_most: first.missing_at_most,
                },
                Err(e) => return Err(e),
            }),
            None => None,
        };
        joint_totals(&first, second.as_ref(), lo, hi)
    };
    let d = match read.await {
        Ok(d) => d,
        Err(e) => {
            let Some(reason) = answer_error(&e) else {
                return Err(e);
            };
            return Ok(judge.failed_rows(&call, Mode::Expected, answer, &[TOTAL], &reason));
        }
    };
    // The row: the argmax total, the expectation, and the share of the judge's next
    // token the totals held.
    let shift = f64::from(lo) - 1.0;
    let mut r = judge.row(
        &call,
        Mode::Expected,
        answer,
        TOTAL,
        Some(d.argmax() as f64 + f64::from(lo)),
    );
    r.expected_score = Some(d.expectation() + shift);
    if !d.missing.is_empty() {
        let (low, high) = d.expectation_bounds();
        r.expected_low = Some(low + shift);
        r.expected_high = Some(high + shift);
        r.labels_missing = Some(d.missing.len() as u32);
    }
    r.probs = Some(d.probs.clone());
    r.mass = Some(d.mass);
    if d.mass < judge.cfg.low_mass {
        r.flag = Some(crate::records::Flag::LowMass);
    }
    Ok(vec![r])
}

/// What the judge writes before a joint total.
const TOTAL_LABEL: &str = "Total";

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(raw: &[f64]) -> LabelDistribution {
        LabelDistribution::from_raw(raw.to_vec()).unwrap()
    }

    #[test]
    fn joint_totals_multiply_the_two_digits_of_a_total() {
        // p(1) = 0.2, p(3) = 0.1, p(9) = 0.3 at the total; after a `1`: p(0) = 0.5,
        // p(2) = 0.25. Totals 3..=12: 3 → 0.1, 9 → 0.3, 10 → 0.2 · 0.5, 12 → 0.2 · 0.25.
        let mut first = vec![0.0; 9];
        first[0] = 0.2;
        first[2] = 0.1;
        first[8] = 0.3;
        let mut second = vec![0.0; 10];
        second[0] = 0.5;
        second[2] = 0.25;
        let d = joint_totals(&dist(&first), Some(&dist(&second)), 3, 12).unwrap();
        let mass = 0.1 + 0.3 + 0.1 + 0.05;
        assert!((d.mass - mass).abs() < 1e-12);
        assert_eq!(d.probs.len(), 10);
        let want = [0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.1, 0.0, 0.05];
        for (p, w) in d.probs.iter().zip(want) {
            assert!((p - w / mass).abs() < 1e-12);
        }
        // The expectation over the totals: labels 1..=10 stand for 3..=12.
        let e = d.expectation() + 2.0;
        let by_hand = (3.0 * 0.1 + 9.0 * 0.3 + 10.0 * 0.1 + 12.0 * 0.05) / mass;
        assert!((e - by_hand).abs() < 1e-12);
        assert_eq!(d.argmax() + 3, 9);
        // Up to 9, no second digit is read; a two-digit range without one is an error.
        let low = joint_totals(&dist(&first), None, 3, 9).unwrap();
        assert!((low.mass - 0.4).abs() < 1e-12);
        assert!(joint_totals(&dist(&first), None, 3, 12).is_err());
        // A digit a remote top-20 missed leaves every total it spells missing: a missing
        // `1` hides 10, 11 and 12.
        let remote = dist(&first).with_missing(vec![0], 0.01);
        let d = joint_totals(&remote, Some(&dist(&second)), 3, 12).unwrap();
        assert_eq!(d.missing, vec![7, 8, 9]);
        assert_eq!(d.missing_at_most, 0.01);
    }
}
