//! Each mode's rows for given verdicts, from a scripted judge: no model, milliseconds.

use super::*;
use crate::backend::scripted::{user_text, Scripted};
use crate::backend::LabelQuery;
use crate::records::{Flag, OVERALL};

/// Two answers to one prompt: a good one and a bad one, told apart by their text.
fn answers() -> Vec<ResponseRecord> {
    ["good", "bad"]
        .iter()
        .map(|&which| ResponseRecord {
            key: format!("key-{which}"),
            model: format!("model-{which}"),
            setting: "p1".into(),
            prompt_id: "tent".into(),
            prompt: "How do I pitch a tent in the wind?".into(),
            text: Some(format!("the {which} answer")),
            ..Default::default()
        })
        .collect()
}

fn judge(mode: Mode, retries: u32) -> Judge {
    let mut cfg = JudgeConfig::new("scripted").with_modes(&[mode]);
    cfg.retries = retries;
    let templates = cfg.validate("test", Path::new(".")).unwrap();
    Judge::new(cfg, "scripted".into(), "scripted".into(), templates, 7)
}

/// Runs `mode`'s calls on `answers`: the rows of the calls that finished, and the errors of
/// those that failed.
fn judge_all(
    judge: &Judge,
    mode: Mode,
    answers: &[ResponseRecord],
    backend: &mut Scripted,
) -> (Vec<JudgmentRecord>, Vec<String>) {
    let groups = group_answers(answers);
    let asker = Asker::default();
    let calls = calls_for(judge, &asker, mode, &groups);
    let (mut rows, mut errors) = (Vec::new(), Vec::new());
    run_calls(backend, &asker, calls, &mut |_, r| {
        match r {
            Ok(r) => rows.extend(r),
            Err(e) => errors.push(e.to_string()),
        }
        Ok(())
    })
    .unwrap();
    (rows, errors)
}

fn row<'a>(rows: &'a [JudgmentRecord], model: &str, criterion: &str) -> &'a JudgmentRecord {
    rows.iter()
        .find(|r| r.model == model && r.criterion == criterion)
        .unwrap_or_else(|| panic!("no {model} {criterion} row in {rows:#?}"))
}

/// Which answer the judge's prompt shows first.
fn good_first(text: &str) -> bool {
    let good = text.find("the good answer").unwrap();
    let bad = text.find("the bad answer").unwrap();
    good < bad
}

fn no_labels(_: &LabelQuery) -> Result<Vec<f64>> {
    Err(Error::NoLogprobs("a text judge".into()))
}

#[test]
fn rubric_rows_are_the_criteria_and_their_total() {
    let mut backend = Scripted::new(
        |input, _| {
            Ok(if user_text(input).contains("the good answer") {
                "Relevance: [[4]]\nCoherence: [[3]]\nCompleteness: [[4]]".into()
            } else {
                "Relevance: [[1]]\nCoherence: [[2]]\nCompleteness: [[1]]".into()
            })
        },
        no_labels,
    );
    let j = judge(Mode::Rubric, 2);
    let (rows, errors) = judge_all(&j, Mode::Rubric, &answers(), &mut backend);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 8, "three criteria and a total per answer");
    assert_eq!(row(&rows, "model-good", "Coherence").score, Some(3.0));
    assert_eq!(row(&rows, "model-good", TOTAL).score, Some(11.0));
    assert_eq!(row(&rows, "model-bad", TOTAL).score, Some(4.0));
    assert!(rows.iter().all(|r| r.parse_ok && r.attempts == 1));
    assert_eq!(backend.generated, 2);
}

#[test]
fn an_unparseable_verdict_is_asked_again_then_left_null_not_zero() {
    // The first reply to each answer has no verdict; the second has one.
    let mut asked: std::collections::HashMap<String, u32> = Default::default();
    let mut backend = Scripted::new(
        move |input, _| {
            let Input::Chat(messages) = input else {
                panic!("a chat judge")
            };
            let n = asked.entry(messages[0..2].iter().map(|m| m.content.clone()).collect());
            let n = n.or_default();
            *n += 1;
            if *n == 1 {
                assert_eq!(messages.last().unwrap().role, "user");
                return Ok("It is a fine answer.".into());
            }
            // The re-ask continues the conversation with a reminder of the format.
            let last = &messages[messages.len() - 1].content;
            assert!(
                last.contains("did not follow the required format"),
                "{last}"
            );
            assert_eq!(messages[messages.len() - 2].content, "It is a fine answer.");
            Ok("Relevance: [[3]]\nCoherence: [[3]]\nCompleteness: [[2]]".into())
        },
        no_labels,
    );
    let (rows, _) = judge_all(
        &judge(Mode::Rubric, 2),
        Mode::Rubric,
        &answers(),
        &mut backend,
    );
    let total = row(&rows, "model-good", TOTAL);
    assert_eq!(
        (total.score, total.attempts, total.parse_ok),
        (Some(8.0), 2, true)
    );
    assert!(
        total.raw.contains("It is a fine answer.\n---\nRelevance"),
        "{}",
        total.raw
    );

    // Without re-asks the score is null, and the reply is kept.
    let mut backend = Scripted::new(|_, _| Ok("It is a fine answer.".into()), no_labels);
    let (rows, errors) = judge_all(
        &judge(Mode::Rubric, 0),
        Mode::Rubric,
        &answers(),
        &mut backend,
    );
    assert!(errors.is_empty());
    let total = row(&rows, "model-good", TOTAL);
    assert_eq!((total.score, total.parse_ok), (None, false));
    assert_eq!(total.raw, "It is a fine answer.");
    assert_eq!(backend.generated, 2);
}

#[test]
fn expected_scores_are_the_label_expectations_and_low_mass_is_flagged() {
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let mut backend = Scripted::new(
        |_, _| panic!("expected mode generates nothing"),
        move |q| {
            let good = user_text(&q.input).contains("the good answer");
            seen.lock().unwrap().push((good, q.prefix.clone()));
            Ok(if good {
                vec![0.1, 0.1, 0.2, 0.6]
            } else {
                // Little mass on the score tokens: the judge wanted to write something else.
                vec![0.1, 0.1, 0.05, 0.05]
            })
        },
    );
    let j = judge(Mode::Expected, 2);
    let (rows, errors) = judge_all(&j, Mode::Expected, &answers(), &mut backend);
    assert!(errors.is_empty(), "{errors:?}");
    let good = row(&rows, "model-good", "Relevance");
    assert_eq!(good.score, Some(4.0));
    assert!((good.expected_score.unwrap() - 3.3).abs() < 1e-9);
    let total = row(&rows, "model-good", TOTAL);
    assert_eq!(total.score, Some(12.0));
    assert!((total.expected_score.unwrap() - 9.9).abs() < 1e-9);
    assert!(total.flag.is_none());
    let bad = row(&rows, "model-bad", TOTAL);
    assert!((bad.mass.unwrap() - 0.3).abs() < 1e-9);
    assert_eq!(bad.flag, Some(Flag::LowMass));
    // Renormalised to 1/3, 1/3, 1/6, 1/6: 13/6 per criterion.
    assert!((bad.expected_score.unwrap() - 3.0 * 13.0 / 6.0).abs() < 1e-9);
    assert_eq!(backend.queried, 6, "one query per criterion and answer");
    // Each criterion's prefix follows the previous ones' most likely scores.
    let asked = asked.lock().unwrap();
    let last = &asked.iter().rfind(|(good, _)| *good).unwrap().1;
    assert!(
        last.ends_with("Relevance: [[4]]\nCoherence: [[4]]\nCompleteness: [["),
        "{last}"
    );
}

#[test]
fn pairwise_verdicts_in_both_orders_make_one_row_and_position_bias_is_a_tie() {
    // A judge that prefers the good answer wherever it is shown.
    let mut fair = Scripted::new(
        |input, _| {
            Ok(if good_first(user_text(input)) {
                "[[A]]".into()
            } else {
                "[[B]]".into()
            })
        },
        no_labels,
    );
    let j = judge(Mode::Pairwise, 0);
    let (rows, _) = judge_all(&j, Mode::Pairwise, &answers(), &mut fair);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.criterion, OVERALL);
    let good_score = if r.model == "model-good" {
        r.score
    } else {
        r.score.map(|s| 1.0 - s)
    };
    assert_eq!((good_score, r.consistent), (Some(1.0), Some(true)));
    assert!(r.other_key.is_some() && r.other_model.is_some() && r.other_setting.is_some());
    assert_eq!(fair.generated, 2, "both orders");

    // A judge that always picks the answer shown first: the orders disagree, a tie.
    let mut biased = Scripted::new(|_, _| Ok("[[A]]".into()), no_labels);
    let (rows, _) = judge_all(&j, Mode::Pairwise, &answers(), &mut biased);
    assert_eq!(
        (rows[0].score, rows[0].consistent),
        (Some(0.5), Some(false))
    );
}

#[test]
fn pairwise_expected_averages_the_preference_over_both_orders() {
    let mut backend = Scripted::new(
        |_, _| panic!("pairwise expected generates nothing"),
        |q| {
            // p(A), p(B), p(tie): 0.7 for the good answer's letter, 0.1 for a tie.
            Ok(if good_first(user_text(&q.input)) {
                vec![0.7, 0.2, 0.1]
            } else {
                vec![0.2, 0.7, 0.1]
            })
        },
    );
    let j = judge(Mode::PairwiseExpected, 0);
    let (rows, errors) = judge_all(&j, Mode::PairwiseExpected, &answers(), &mut backend);
    assert!(errors.is_empty(), "{errors:?}");
    let r = &rows[0];
    let good = if r.model == "model-good" {
        r.score.unwrap()
    } else {
        1.0 - r.score.unwrap()
    };
    assert!((good - 0.75).abs() < 1e-9, "{good}");
    assert_eq!(r.consistent, Some(true));
    assert_eq!(r.probs.as_ref().map(Vec::len), Some(6));
}

#[test]
fn an_answer_too_long_for_the_judge_gets_null_rows_and_a_server_error_fails_the_call() {
    let mut backend = Scripted::new(
        |_, _| panic!("expected mode generates nothing"),
        |q| {
            if user_text(&q.input).contains("the bad answer") {
                Err(Error::ContextOverflow {
                    prompt: 5000,
                    context: 2048,
                })
            } else {
                Ok(vec![0.0, 0.0, 1.0, 0.0])
            }
        },
    );
    let j = judge(Mode::Expected, 0);
    let (rows, errors) = judge_all(&j, Mode::Expected, &answers(), &mut backend);
    assert!(errors.is_empty(), "{errors:?}");
    let bad = row(&rows, "model-bad", TOTAL);
    assert_eq!(bad.score, None);
    assert!(bad.error.as_deref().unwrap().contains("5000"), "{bad:?}");
    assert_eq!(row(&rows, "model-good", TOTAL).score, Some(9.0));

    // A server error concerns the call, not the answer: no rows, an error to retry.
    let mut backend = Scripted::new(
        |_, _| {
            Err(Error::Remote(crate::error::RemoteError {
                url: "http://judge".into(),
                status: Some(503),
                kind: None,
                message: "overloaded".into(),
                attempts: 3,
            }))
        },
        no_labels,
    );
    let j = judge(Mode::Rubric, 0);
    let (rows, errors) = judge_all(&j, Mode::Rubric, &answers(), &mut backend);
    assert!(rows.is_empty());
    assert_eq!(errors.len(), 2);
    assert!(errors[0].contains("503"), "{errors:?}");
}

#[test]
fn a_missing_template_file_is_named_with_its_key() {
    let cfg = JudgeConfig::new("j")
        .with_modes(&[Mode::Listwise])
        .with_template(Mode::Listwise, "no-such-template.toml");
    let e = cfg
        .validate("exp.toml", Path::new("/nonexistent-folder"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("judge.templates.listwise") && e.contains("no-such-template.toml"),
        "{e}"
    );
}

#[test]
fn listwise_rows_follow_the_shuffled_order_back_to_each_answer() {
    // The judge scores by content: wherever the good answer is shown, it gets 4s. It states
    // a total that is not the sum for the good answer (11, not 12), which is kept and flagged.
    let mut backend = Scripted::new(
        |input, _| {
            let text = user_text(input);
            let mut lines = Vec::new();
            for k in 1..=2 {
                let at = text.find(&format!("[Answer {k}]\n")).unwrap();
                let good = text[at..].starts_with(&format!("[Answer {k}]\nthe good answer"));
                lines.push(if good {
                    format!("Answer {k}: Relevance [[4]], Coherence [[4]], Completeness [[4]], Total [[11]]")
                } else {
                    format!("Answer {k}: Relevance [[1]], Coherence [[2]], Completeness [[1]], Total [[4]]")
                });
            }
            Ok(lines.join("\n"))
        },
        no_labels,
    );
    let j = judge(Mode::Listwise, 0);
    let (rows, errors) = judge_all(&j, Mode::Listwise, &answers(), &mut backend);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(backend.generated, 1, "both answers in one prompt");
    let good = row(&rows, "model-good", TOTAL);
    assert_eq!(good.score, Some(11.0));
    assert_eq!(good.flag, Some(Flag::TotalMismatch));
    assert_eq!(row(&rows, "model-good", "Coherence").score, Some(4.0));
    let bad = row(&rows, "model-bad", TOTAL);
    assert_eq!((bad.score, bad.flag), (Some(4.0), None));
    // Each row records where its answer was shown and the seed of that order.
    let mut shown: Vec<u32> = [good, bad].iter().map(|r| r.position.unwrap()).collect();
    shown.sort_unstable();
    assert_eq!(shown, vec![1, 2]);
    assert!(good.order_seed.is_some());
}

#[test]
fn a_joint_expected_total_is_read_digit_by_digit() {
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let mut backend = Scripted::new(
        |_, _| panic!("expected mode generates nothing"),
        move |q| {
            let prompt = user_text(&q.input).to_string();
            seen.lock()
                .unwrap()
                .push((prompt, q.prefix.clone(), q.labels.clone()));
            Ok(if q.prefix.ends_with("[[1") {
                // After a `1`: 10 or 11, evenly.
                let mut p = vec![0.0; 10];
                p[0] = 0.4;
                p[1] = 0.4;
                p
            } else {
                // At the total: `1` (a two-digit total) 0.5, `9` 0.3, `1`..`9` otherwise 0.
                let mut p = vec![0.0; 9];
                p[0] = 0.5;
                p[8] = 0.3;
                p
            })
        },
    );
    let mut j = judge(Mode::Expected, 0);
    let sum_key = j.call_key(Mode::Expected, &["key-good"], serde_json::Value::Null);
    j.cfg.expected_total = ExpectedTotal::Joint;
    assert_ne!(
        j.call_key(Mode::Expected, &["key-good"], serde_json::Value::Null),
        sum_key,
        "a joint total is not the stored sum"
    );
    let (rows, errors) = judge_all(&j, Mode::Expected, &answers()[..1], &mut backend);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 1, "a total and no criterion rows: {rows:#?}");
    let t = &rows[0];
    assert_eq!(t.criterion, TOTAL);
    // p(9) = 0.3, p(10) = p(11) = 0.5 · 0.4 = 0.2: mass 0.7.
    assert!((t.mass.unwrap() - 0.7).abs() < 1e-12);
    let by_hand = (9.0 * 0.3 + 10.0 * 0.2 + 11.0 * 0.2) / 0.7;
    assert!((t.expected_score.unwrap() - by_hand).abs() < 1e-12);
    assert_eq!(t.score, Some(9.0), "the most likely total");
    assert_eq!(t.probs.as_ref().unwrap().len(), 10, "3..=12");
    assert!(t.flag.is_none());
    let asked = asked.lock().unwrap();
    assert_eq!(asked.len(), 2, "the first digit, then the second after a 1");
    assert!(asked[0].0.contains("Total: [[n]]") && asked[0].0.contains("from 3 to 12"));
    assert_eq!(asked[0].1, "Total: [[");
    assert_eq!(asked[1].1, "Total: [[1");
    assert_eq!(asked[1].2.len(), 10, "0..=9 after the 1");
}

#[test]
fn repeats_and_joint_totals_are_validated() {
    let check = |cfg: JudgeConfig| cfg.validate("exp.toml", Path::new(".")).map(|_| ());
    let text = JudgeConfig::new("j").with_modes(&[Mode::Listwise, Mode::Expected]);
    // Asked again, a greedy judge writes the same verdict.
    let e = check(text.clone().with_repeats(3)).unwrap_err().to_string();
    assert!(
        e.contains("judge.repeats") && e.contains("temperature 0"),
        "{e}"
    );
    let mut warm = text.clone().with_repeats(3);
    warm.temperature = 0.7;
    check(warm.clone()).unwrap();
    assert_eq!(
        (
            warm.repeats_of(Mode::Listwise),
            warm.repeats_of(Mode::Expected)
        ),
        (3, 1)
    );
    // Probability modes read the same distribution at every ask.
    let mut probs = JudgeConfig::new("j")
        .with_modes(&[Mode::Expected, Mode::PairwiseExpected])
        .with_repeats(2);
    probs.temperature = 0.7;
    let e = check(probs).unwrap_err().to_string();
    assert!(
        e.contains("judge.repeats") && e.contains("no listed mode samples"),
        "{e}"
    );
    let e = check(text.clone().with_repeats(0)).unwrap_err().to_string();
    assert!(e.contains("judge.repeats"), "{e}");
    // `judge_repeats` is the same field.
    let cfg: JudgeConfig = toml::from_str("model = \"j\"\njudge_repeats = 4").unwrap();
    assert_eq!(cfg.repeats, 4);
    // A joint total needs the expected mode, and totals of at most two digits up to 19.
    let e = check(
        JudgeConfig::new("j")
            .with_modes(&[Mode::Listwise])
            .with_expected_total(ExpectedTotal::Joint),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("judge.expected_total"), "{e}");
    let mut wide = text.with_expected_total(ExpectedTotal::Joint);
    check(wide.clone()).unwrap();
    wide.criteria = (1..=5).map(|i| format!("C{i}")).collect();
    let e = check(wide).unwrap_err().to_string();
    assert!(e.contains("reach 20"), "{e}");
}
