//! Pairwise expected mode: the pairwise prompt in both orders, but nothing is generated. The
//! judge's reply is written up to the verdict (`[[`), and its next-token probabilities of `A`,
//! `B` (and `C` for a tie, where the template allows one) give a continuous preference, even
//! from judges too small to write a parseable verdict.
//!
//! Row: one per pair (`criterion = overall`): the probability that the first answer is
//! preferred (a tie counts half), averaged over both orders; `consistent` when both orders
//! lean the same way; the probabilities of both orders and the lowest label mass (flagged
//! below `low_mass`).

use super::call::{join, Asker, Call};
use super::pairwise::pairs;
use super::spec::{no_check, ModeSpec, Pass, Shows, PREFERENCE_MARGIN};
use super::{answer_error, Group, Judge, Mode, VerdictForm};
use crate::backend::LabelQuery;
use crate::records::{JudgmentRecord, ResponseRecord, OVERALL};

/// The labels of the verdict position: `A`, `B`, and `C` when the template allows a tie
/// written as a bracket verdict.
pub fn labels(judge: &Judge) -> Vec<String> {
    let t = judge.template(Mode::PairwiseExpected);
    let mut l = vec!["A".to_string(), "B".to_string()];
    if t.tie && t.verdict_form() == VerdictForm::Brackets {
        l.push("C".into());
    }
    l
}

/// The probability that the answer shown at `first` (0 or 1) is preferred: its letter's
/// probability plus half the tie's.
pub fn preference(probs: &[f64], first: usize) -> f64 {
    probs[first] + probs.get(2).map_or(0.0, |t| t / 2.0)
}

/// Pairwise expected mode: a pairwise prompt in both orders, the preference read from token
/// probabilities.
pub static SPEC: ModeSpec = ModeSpec {
    mode: Mode::PairwiseExpected,
    template: "pairwise",
    template_modes: &[Mode::PairwiseExpected, Mode::Pairwise],
    forms: &[VerdictForm::Brackets, VerdictForm::Winner],
    placeholders: &["question", "answer_a", "answer_b"],
    check: no_check,
    shows: Shows::TwoAnswers,
    pass: Pass::Preference(0.5 + PREFERENCE_MARGIN),
    samples: false,
    calls,
};

/// One call per pair.
pub fn calls<'a>(judge: &'a Judge, asker: &'a Asker, groups: &[Group<'a>]) -> Vec<Call<'a>> {
    pairs(groups)
        .into_iter()
        .map(|(a, b)| {
            let key = judge.call_key(
                Mode::PairwiseExpected,
                &[&a.key, &b.key],
                serde_json::Value::Null,
            );
            Call {
                label: format!("{} vs {} {}", a.cell(), b.cell(), a.prompt_id),
                run: Box::pin(judge_pair(judge, asker, a, b, key.clone())),
                key,
            }
        })
        .collect()
}

async fn judge_pair(
    judge: &Judge,
    asker: &Asker,
    a: &ResponseRecord,
    b: &ResponseRecord,
    call: String,
) -> crate::Result<Vec<JudgmentRecord>> {
    // Prompts: both orders, written up to the verdict.
    let t = judge.template(Mode::PairwiseExpected);
    let (ta, tb) = (
        a.text.as_deref().unwrap_or(""),
        b.text.as_deref().unwrap_or(""),
    );
    let query = |first: &str, second: &str| LabelQuery {
        input: judge.input(
            Mode::PairwiseExpected,
            &[
                ("question", &a.prompt),
                ("answer_a", first),
                ("answer_b", second),
            ],
        ),
        prefix: t.verdict_prefix.clone(),
        labels: labels(judge),
    };
    // Calls: both orders in the same round.
    let (ab, ba) = join(asker.labels(query(ta, tb)), asker.labels(query(tb, ta))).await;
    let mut row = judge.row(&call, Mode::PairwiseExpected, a, OVERALL, None);
    row.other_key = Some(b.key.clone());
    row.other_model = Some(b.model.clone());
    row.other_setting = Some(b.setting.clone());
    let (ab, ba) = match (ab, ba) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            let Some(reason) = answer_error(&e) else {
                return Err(e);
            };
            row.error = Some(reason);
            return Ok(vec![row]);
        }
    };
    // Row: a's preference in each order (shown first, then second).
    let (p1, p2) = (preference(&ab.probs, 0), preference(&ba.probs, 1));
    row.score = Some((p1 + p2) / 2.0);
    row.parse_ok = true;
    row.consistent = Some((p1 > 0.5) == (p2 > 0.5));
    row.probs = Some(ab.probs.iter().chain(&ba.probs).copied().collect());
    row.mass = Some(ab.mass.min(ba.mass));
    if ab.mass.min(ba.mass) < judge.cfg.low_mass {
        row.flag = Some(crate::records::Flag::LowMass);
    }
    Ok(vec![row])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_count_half_in_either_order() {
        // A shown first: p(A) = 0.6, p(B) = 0.1, p(tie) = 0.3.
        assert!((preference(&[0.6, 0.1, 0.3], 0) - 0.75).abs() < 1e-12);
        // The same answer shown second: its letter is B.
        assert!((preference(&[0.6, 0.1, 0.3], 1) - 0.25).abs() < 1e-12);
        assert_eq!(preference(&[0.2, 0.8], 1), 0.8);
    }
}
