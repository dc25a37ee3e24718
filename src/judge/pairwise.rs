//! Pairwise mode: two answers to the same prompt, asked in both orders. The template says
//! what the judge writes: `[[A]]`/`[[B]]`/`[[C]]` (`verdict = "brackets"`), or a winner in
//! free text (`verdict = "winner"`, the write-up's live app).
//!
//! Row: one per pair (`criterion = overall`) from the view of the first answer: 1 when it
//! wins in both orders, 0 when it loses in both, 0.5 for a tie; when the two orders disagree
//! the pair counts as a tie and `consistent` is false ([`combine`]). Each order's verdict is
//! kept too ([`order_verdicts`]), for the first-position preference of text verdicts.

use super::call::{join, Asker, Call};
use super::parse::{bracket_verdict, strip_echo, winner_verdict, Verdict};
use super::spec::{no_check, ModeSpec, Pass, Shows};
use super::{answer_error, grammar, Group, Judge, Mode, ReplyForm, VerdictForm};
use crate::records::{JudgmentRecord, ResponseRecord, OVERALL};

/// The score of answer `a` and whether the two orders agreed, from the verdict with `a`
/// shown first and the verdict with `b` shown first. `None` unless both parsed.
pub fn combine(a_first: Option<Verdict>, b_first: Option<Verdict>) -> (Option<f64>, Option<bool>) {
    let from_a_first = a_first.map(|v| match v {
        Verdict::A => 1.0,
        Verdict::B => 0.0,
        Verdict::Tie => 0.5,
    });
    let from_b_first = b_first.map(|v| match v {
        Verdict::A => 0.0,
        Verdict::B => 1.0,
        Verdict::Tie => 0.5,
    });
    match (from_a_first, from_b_first) {
        (Some(x), Some(y)) if x == y => (Some(x), Some(true)),
        (Some(_), Some(_)) => (Some(0.5), Some(false)),
        _ => (None, None),
    }
}

/// Each order's verdict, stored as pairwise expected stores its probabilities: `A`, `B`,
/// tie with the row's answer shown first, then the same labels with it shown second, each
/// order's verdict as one 1 among zeros. `None` unless both orders parsed. From these the
/// text verdicts give a first-position preference, as the probabilities do.
pub fn order_verdicts(a_first: Option<Verdict>, b_first: Option<Verdict>) -> Option<Vec<f64>> {
    let one_hot = |v: Verdict| match v {
        Verdict::A => [1.0, 0.0, 0.0],
        Verdict::B => [0.0, 1.0, 0.0],
        Verdict::Tie => [0.0, 0.0, 1.0],
    };
    let (x, y) = (a_first?, b_first?);
    Some(one_hot(x).into_iter().chain(one_hot(y)).collect())
}

/// The verdicts [`order_verdicts`] stored: with the row's answer shown first, then shown
/// second, each as the label written (`A` is the answer shown first).
pub fn order_picks(probs: Option<&[f64]>) -> [Option<Verdict>; 2] {
    let pick = |o: &[f64]| {
        let i = (0..3).find(|&i| o[i] == 1.0)?;
        Some([Verdict::A, Verdict::B, Verdict::Tie][i])
    };
    match probs {
        Some(p) if p.len() == 6 => [pick(&p[..3]), pick(&p[3..])],
        _ => [None, None],
    }
}

/// Every pair of answers to the same prompt (and sample): one call each.
pub fn pairs<'a>(groups: &[Group<'a>]) -> Vec<(&'a ResponseRecord, &'a ResponseRecord)> {
    let mut out = Vec::new();
    for g in groups {
        for i in 0..g.answers.len() {
            for j in i + 1..g.answers.len() {
                out.push((g.answers[i], g.answers[j]));
            }
        }
    }
    out
}

/// Pairwise mode: two answers in both orders, a text verdict; its template family is shared
/// with pairwise expected. A pass in the sanity check is a win in both orders.
pub static SPEC: ModeSpec = ModeSpec {
    mode: Mode::Pairwise,
    template: "pairwise",
    template_modes: &[Mode::Pairwise, Mode::PairwiseExpected],
    forms: &[VerdictForm::Brackets, VerdictForm::Winner],
    placeholders: &["question", "answer_a", "answer_b"],
    check: no_check,
    shows: Shows::TwoAnswers,
    pass: Pass::Preference(1.0),
    samples: true,
    calls,
};

/// One call per pair.
pub fn calls<'a>(judge: &'a Judge, asker: &'a Asker, groups: &[Group<'a>]) -> Vec<Call<'a>> {
    pairs(groups)
        .into_iter()
        .map(|(a, b)| {
            let key = judge.call_key(Mode::Pairwise, &[&a.key, &b.key], serde_json::Value::Null);
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
    // Prompts: both orders.
    let t = judge.template(Mode::Pairwise);
    let (ta, tb) = (
        a.text.as_deref().unwrap_or(""),
        b.text.as_deref().unwrap_or(""),
    );
    let (format, language) = match t.verdict_form() {
        VerdictForm::Winner => (
            "Winner: Response A, Winner: Response B, or a draw",
            grammar::winner(t.tie),
        ),
        _ => ("[[A]], [[B]] or [[C]]", grammar::brackets(t.tie)),
    };
    let form = ReplyForm {
        shown: format.into(),
        language,
        free_text: t.justification,
    };
    let input = |first: &str, second: &str| {
        judge.input(
            Mode::Pairwise,
            &[
                ("question", &a.prompt),
                ("answer_a", first),
                ("answer_b", second),
                ("format", format),
            ],
        )
    };
    let instructions = t.instruction_fragments();
    let parse = |raw: &str| {
        let text = strip_echo(raw, &instructions, &[ta, tb]);
        let v = match t.verdict_form() {
            VerdictForm::Winner => winner_verdict(&text).filter(|v| t.tie || *v != Verdict::Tie),
            _ => bracket_verdict(&text, t.tie),
        };
        (v, v.is_some())
    };
    // Calls: both orders in the same round.
    let seed = judge.seed_for(&call);
    let max = judge.cfg.max_tokens;
    let (ab, ba) = join(
        judge.ask_verdict(asker, input(ta, tb), seed, max, &form, &parse),
        judge.ask_verdict(
            asker,
            input(tb, ta),
            seed.wrapping_add(1),
            max,
            &form,
            &parse,
        ),
    )
    .await;
    let (ab, ba) = match (ab, ba) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            let Some(reason) = answer_error(&e) else {
                return Err(e);
            };
            let mut r = judge.failed_rows(&call, Mode::Pairwise, a, &[OVERALL], &reason);
            for row in &mut r {
                row.other_key = Some(b.key.clone());
                row.other_model = Some(b.model.clone());
                row.other_setting = Some(b.setting.clone());
            }
            return Ok(r);
        }
    };
    // Row.
    let (score, consistent) = combine(ab.value, ba.value);
    let mut row = judge.row(&call, Mode::Pairwise, a, OVERALL, score);
    row.other_key = Some(b.key.clone());
    row.other_model = Some(b.model.clone());
    row.other_setting = Some(b.setting.clone());
    row.consistent = consistent;
    row.probs = order_verdicts(ab.value, ba.value);
    row.parse_ok = ab.parse_ok && ba.parse_ok;
    row.attempts = (ab.raw.len() + ba.raw.len()) as u32;
    row.raw = format!(
        "[A={} B={}]\n{}\n[A={} B={}]\n{}",
        a.cell(),
        b.cell(),
        ab.raw_text(),
        b.cell(),
        a.cell(),
        ba.raw_text()
    );
    Ok(vec![row])
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    #[test]
    fn each_order_is_stored() {
        assert_eq!(
            order_verdicts(Some(A), Some(Tie)),
            Some(vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
        );
        assert_eq!(order_verdicts(Some(B), None), None);
        let stored = order_verdicts(Some(B), Some(A));
        assert_eq!(order_picks(stored.as_deref()), [Some(B), Some(A)]);
        assert_eq!(order_picks(None), [None, None]);
    }

    #[test]
    fn both_orders_combine_into_one_score() {
        // (verdict with a first, verdict with b first) -> (score of a, consistent)
        let cases = [
            (Some(A), Some(B), (Some(1.0), Some(true))),
            (Some(B), Some(A), (Some(0.0), Some(true))),
            (Some(Tie), Some(Tie), (Some(0.5), Some(true))),
            (Some(A), Some(A), (Some(0.5), Some(false))),
            (Some(B), Some(B), (Some(0.5), Some(false))),
            (Some(A), Some(Tie), (Some(0.5), Some(false))),
            (Some(Tie), Some(A), (Some(0.5), Some(false))),
            (Some(B), Some(Tie), (Some(0.5), Some(false))),
            (Some(Tie), Some(B), (Some(0.5), Some(false))),
            (None, Some(B), (None, None)),
            (Some(A), None, (None, None)),
            (None, None, (None, None)),
        ];
        for (x, y, want) in cases {
            assert_eq!(combine(x, y), want, "{x:?} {y:?}");
        }
    }
}
