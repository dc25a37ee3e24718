//! Listwise mode: all answers to a prompt in one judge prompt, the write-up's GPT-4 form.
//!
//! The answers are shown in a seeded shuffle (recorded with each row), in the experiment's
//! order (`order = "fixed"`, the write-up's exact form), or in a Latin-square rotation over
//! prompts (`order = "balanced"`, for position bias). The template says what the judge
//! writes: per-criterion scores per answer (`verdict = "criteria"`), or one total per answer
//! (`verdict = "totals"`, the write-up's "Answer only with the total sum for each response").
//! Verdict labels are mapped back through the order to the answers they name.
//!
//! Rows per answer: criteria form, one per criterion and a `total` (their sum); totals form,
//! the `total` and any criterion scores the judge wrote next to it, with `total_mismatch`
//! flagged when the stated total is not their sum, and `conflict` when the judge wrote two
//! different totals for one answer (the total is then null, after the re-asks).

use super::call::{Asker, Call};
use super::parse::{listwise_criteria, listwise_totals, strip_echo, TotalVerdict};
use super::spec::{ModeSpec, Pass, Shows, TEXT_MARGIN};
use super::template::JudgeTemplate;
use super::{answer_error, grammar, Group, Judge, Mode, Order, ReplyForm, VerdictForm};
use crate::keys::derive_seed;
use crate::records::{JudgmentRecord, ResponseRecord, TOTAL};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The order answers are shown in: `shown[j]` is the index of the answer at position `j`,
/// with the shuffle seed when the order is a shuffle.
pub fn order(judge: &Judge, group: &Group<'_>) -> (Vec<usize>, Option<u64>) {
    let n = group.answers.len();
    let first = group.answers[0];
    match judge.cfg.order {
        Order::Fixed => ((0..n).collect(), None),
        Order::Balanced => {
            // Answer i at position (i + p) mod n.
            let mut shown = vec![0; n];
            for (i, s) in (0..n).map(|i| (i, (i + group.index) % n)) {
                shown[s] = i;
            }
            (shown, None)
        }
        Order::Shuffle => {
            let seed = derive_seed(
                judge.seed,
                &["listwise", &first.prompt_id, &first.sample.to_string()],
            );
            let mut shown: Vec<usize> = (0..n).collect();
            shown.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            (shown, Some(seed))
        }
    }
}

/// Listwise mode: every answer to a prompt in one prompt, each scored.
pub static SPEC: ModeSpec = ModeSpec {
    mode: Mode::Listwise,
    template: "listwise",
    template_modes: &[Mode::Listwise],
    forms: &[VerdictForm::Criteria, VerdictForm::Totals],
    placeholders: &["question", "answers"],
    check,
    shows: Shows::AllAnswers,
    pass: Pass::Margin(TEXT_MARGIN),
    samples: true,
    calls,
};

/// The verdict names each answer by its label, so the label must hold its number.
fn check(t: &JudgeTemplate, origin: &str) -> crate::Result<()> {
    if !t.answer_label.contains("{k}") {
        return Err(crate::Error::config(
            format!("{origin}: answer_label"),
            "must contain {k}, the answer's number",
        ));
    }
    Ok(())
}

/// One call per prompt (and sample).
pub fn calls<'a>(judge: &'a Judge, asker: &'a Asker, groups: &[Group<'a>]) -> Vec<Call<'a>> {
    groups
        .iter()
        .map(|g| {
            let (shown, seed) = order(judge, g);
            let answers: Vec<&'a ResponseRecord> = shown.iter().map(|&i| g.answers[i]).collect();
            let keys: Vec<&str> = answers.iter().map(|a| a.key.as_str()).collect();
            let key = judge.call_key(Mode::Listwise, &keys, serde_json::json!(seed));
            Call {
                label: answers[0].prompt_id.clone(),
                run: Box::pin(judge_group(judge, asker, answers, seed, key.clone())),
                key,
            }
        })
        .collect()
}

async fn judge_group(
    judge: &Judge,
    asker: &Asker,
    shown: Vec<&ResponseRecord>,
    order_seed: Option<u64>,
    call: String,
) -> crate::Result<Vec<JudgmentRecord>> {
    // Prompt.
    let t = judge.template(Mode::Listwise);
    let n = shown.len();
    let texts: Vec<&str> = shown
        .iter()
        .map(|r| r.text.as_deref().unwrap_or(""))
        .collect();
    let criteria = &judge.cfg.criteria;
    let form = t.verdict_form();
    let format = match form {
        VerdictForm::Totals => (1..=n)
            .map(|k| format!("{}: <total>", t.label(k)))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => {
            let line = criteria
                .iter()
                .map(|c| format!("{c} [[n]]"))
                .collect::<Vec<_>>()
                .join(", ");
            (1..=n)
                .map(|k| format!("{}: {line}, Total [[n]]", t.label(k)))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let (block, count) = (t.answers_block(&texts), n.to_string());
    let input = judge.input(
        Mode::Listwise,
        &[
            ("question", &shown[0].prompt),
            ("answers", &block),
            ("n", &count),
            ("format", &format),
        ],
    );
    let instructions = t.instruction_fragments();
    let (scale, m) = (judge.cfg.scale, criteria.len() as u32);
    let reply = ReplyForm {
        language: match form {
            VerdictForm::Totals => grammar::totals(&t, n, m, m * scale),
            _ => grammar::listwise_criteria(&t, n, criteria, scale),
        },
        shown: format,
        free_text: t.justification,
    };
    // Call, with re-asks; parse (per position).
    let verdict = judge
        .ask_verdict(
            asker,
            input,
            judge.seed_for(&call),
            judge.cfg.max_tokens.max(40 * n),
            &reply,
            |raw| {
                let text = strip_echo(raw, &instructions, &texts);
                let v: Vec<TotalVerdict> = match form {
                    VerdictForm::Totals => {
                        listwise_totals(&text, &t.answer_label, n, criteria, scale)
                    }
                    _ => listwise_criteria(&text, &t.answer_label, n, criteria, scale),
                };
                let ok = v.iter().all(|a| a.total.is_some());
                (v, ok)
            },
        )
        .await;
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            let Some(reason) = answer_error(&e) else {
                return Err(e);
            };
            let mut rows = Vec::new();
            for (pos, a) in shown.iter().enumerate() {
                for mut r in judge.failed_rows(&call, Mode::Listwise, a, &[TOTAL], &reason) {
                    r.position = Some(pos as u32 + 1);
                    r.order_seed = order_seed;
                    rows.push(r);
                }
            }
            return Ok(rows);
        }
    };
    // Rows, mapped back from positions to answers.
    let raw = verdict.raw_text();
    let mut rows = Vec::new();
    for (pos, (answer, v)) in shown.iter().zip(&verdict.value).enumerate() {
        let mut mine = match form {
            VerdictForm::Totals => {
                let mut r: Vec<JudgmentRecord> = criteria
                    .iter()
                    .zip(&v.criteria)
                    .filter(|(_, s)| s.is_some())
                    .map(|(c, s)| judge.row(&call, Mode::Listwise, answer, c, s.map(f64::from)))
                    .collect();
                let mut total =
                    judge.row(&call, Mode::Listwise, answer, TOTAL, v.total.map(f64::from));
                if v.conflict {
                    total.flag = Some(crate::records::Flag::Conflict);
                } else if v.mismatch {
                    total.flag = Some(crate::records::Flag::TotalMismatch);
                }
                r.push(total);
                r
            }
            // Every criterion (null where missing) and the total: the judge's stated one where
            // it wrote one, flagged when it is not the sum.
            _ => {
                let mut r = judge.criteria_rows(&call, Mode::Listwise, answer, &v.criteria);
                if let Some(total) = r.iter_mut().find(|x| x.criterion == TOTAL) {
                    total.score = v.total.map(f64::from);
                    total.parse_ok = total.score.is_some();
                    if v.mismatch {
                        total.flag = Some(crate::records::Flag::TotalMismatch);
                    }
                }
                r
            }
        };
        for r in &mut mine {
            r.position = Some(pos as u32 + 1);
            r.order_seed = order_seed;
            r.raw = raw.clone();
            r.attempts = verdict.raw.len() as u32;
        }
        rows.extend(mine);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::JudgeConfig;

    fn judge(order: Order) -> Judge {
        Judge::new(
            JudgeConfig::new("j").with_order(order),
            "j".into(),
            "local:x".into(),
            Default::default(),
            7,
        )
    }

    #[test]
    fn balanced_order_is_a_latin_square() {
        let answers: Vec<ResponseRecord> = (0..4)
            .map(|i| ResponseRecord {
                key: format!("r{i}"),
                prompt_id: "p".into(),
                ..Default::default()
            })
            .collect();
        let refs: Vec<&ResponseRecord> = answers.iter().collect();
        let j = judge(Order::Balanced);
        // Over 4 consecutive prompts, every answer is shown at every position exactly once.
        let mut seen = vec![vec![0; 4]; 4];
        for p in 0..4 {
            let (shown, seed) = order(
                &j,
                &Group {
                    index: p,
                    answers: refs.clone(),
                },
            );
            assert_eq!(seed, None);
            for (pos, &i) in shown.iter().enumerate() {
                seen[i][pos] += 1;
            }
        }
        assert!(
            seen.iter().all(|row| row.iter().all(|&c| c == 1)),
            "{seen:?}"
        );
        let (fixed, _) = order(
            &judge(Order::Fixed),
            &Group {
                index: 3,
                answers: refs.clone(),
            },
        );
        assert_eq!(fixed, vec![0, 1, 2, 3]);
        let (a, sa) = order(
            &judge(Order::Shuffle),
            &Group {
                index: 0,
                answers: refs.clone(),
            },
        );
        let (b, sb) = order(
            &judge(Order::Shuffle),
            &Group {
                index: 5,
                answers: refs,
            },
        );
        assert_eq!(
            (a, sa),
            (b, sb),
            "a shuffle depends on the prompt, not its index"
        );
        assert!(sa.is_some());
    }
}
