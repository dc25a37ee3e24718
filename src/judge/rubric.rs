//! Rubric mode: each answer alone; the judge writes `Criterion: [[n]]` for every criterion.
//!
//! Rows: one per criterion and a `total` (null unless every criterion parsed). An
//! unparseable verdict is re-asked; a verdict still unparseable after the retries gives null
//! scores with the raw replies kept.

use super::call::{Asker, Call};
use super::parse::{criteria_scores, strip_echo};
use super::spec::{no_check, ModeSpec, Pass, Shows, TEXT_MARGIN};
use super::{answer_error, grammar, Group, Judge, Mode, ReplyForm, VerdictForm};
use crate::records::{ResponseRecord, TOTAL};

/// Rubric mode: one answer per prompt, the criteria scored in text; its template family is
/// shared with expected mode.
pub static SPEC: ModeSpec = ModeSpec {
    mode: Mode::Rubric,
    template: "rubric",
    template_modes: &[Mode::Rubric, Mode::Expected],
    forms: &[VerdictForm::Criteria],
    placeholders: &["question", "answer"],
    check: no_check,
    shows: Shows::OneAnswer,
    pass: Pass::Margin(TEXT_MARGIN),
    samples: true,
    calls,
};

/// One call per answered response.
pub fn calls<'a>(judge: &'a Judge, asker: &'a Asker, groups: &[Group<'a>]) -> Vec<Call<'a>> {
    groups
        .iter()
        .flat_map(|g| g.answers.iter().copied())
        .map(|answer| {
            let key = judge.call_key(Mode::Rubric, &[&answer.key], serde_json::Value::Null);
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
) -> crate::Result<Vec<crate::records::JudgmentRecord>> {
    // Prompt.
    let text = answer.text.as_deref().unwrap_or("");
    let format = judge.criteria_format();
    let input = judge.input(
        Mode::Rubric,
        &[
            ("question", &answer.prompt),
            ("answer", text),
            ("format", &format),
        ],
    );
    let t = judge.template(Mode::Rubric);
    let instructions = t.instruction_fragments();
    let criteria = &judge.cfg.criteria;
    let form = ReplyForm {
        language: grammar::criteria(criteria, judge.cfg.scale),
        shown: format,
        free_text: t.justification,
    };
    // Call, with re-asks; parse.
    let verdict = judge
        .ask_verdict(
            asker,
            input,
            judge.seed_for(&call),
            judge.cfg.max_tokens,
            &form,
            |raw| {
                let s = criteria_scores(
                    &strip_echo(raw, &instructions, &[text]),
                    criteria,
                    judge.cfg.scale,
                );
                let ok = s.iter().all(Option::is_some);
                (s, ok)
            },
        )
        .await;
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            let Some(reason) = answer_error(&e) else {
                return Err(e);
            };
            let mut names: Vec<&str> = criteria.iter().map(String::as_str).collect();
            names.push(TOTAL);
            return Ok(judge.failed_rows(&call, Mode::Rubric, answer, &names, &reason));
        }
    };
    // Rows.
    let raw = verdict.raw_text();
    Ok(judge
        .criteria_rows(&call, Mode::Rubric, answer, &verdict.value)
        .into_iter()
        .map(|mut r| {
            r.raw = raw.clone();
            r.attempts = verdict.raw.len() as u32;
            r
        })
        .collect())
}
