//! A panel of judges: their judgments of the same answers pooled into one pseudo-judge,
//! `panel` ([`pool`]), and how well they agree ([`panel_agreement`]).
//!
//! Pooling is per unit: one mode, criterion, answer (and answer B), sample and ask. A text
//! pairwise verdict (A, B or a tie) is the one most of the judges gave, a tie without a
//! majority; every other score is the mean of the judges' scores (for the expected modes,
//! of their expected scores and probabilities). A judge's null is left out, not read as 0;
//! a unit no judge scored is null in the pool too.

use super::correlation::{fleiss_kappa, krippendorff_alpha_interval};
use super::resample::{Canonical, Clusters};
use crate::judge::LowMassPolicy;
use crate::keys::key_of;
use crate::records::{Flag, JudgmentRecord, Mode, OVERALL, TOTAL};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::HashMap;

/// The pooled judge's name in the tables.
pub const PANEL: &str = "panel";

/// One judge's rows going into a pool.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its identity.
    pub id: &'a str,
    /// Its judgment rows.
    pub rows: &'a [JudgmentRecord],
}

/// The panel's identity: `panel:` and its judges' identities, in order.
pub fn panel_id<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    format!("{PANEL}:{}", ids.into_iter().collect::<Vec<_>>().join("+"))
}

fn unit(r: &JudgmentRecord) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        r.mode,
        r.criterion,
        r.response_key,
        r.other_key.as_deref().unwrap_or(""),
        r.sample,
        r.repeat
    )
}

/// Whether a row's score counts in a pool: it has one, and it is not a low-mass score the
/// policy leaves out of means.
fn counts(r: &JudgmentRecord, policy: LowMassPolicy) -> bool {
    r.score.is_some() && !(policy == LowMassPolicy::Exclude && r.flag == Some(Flag::LowMass))
}

/// Whether rows of `mode` and this criterion are sampled verdicts between two answers (A, B
/// or a tie), pooled by majority.
fn is_verdict(r: &JudgmentRecord) -> bool {
    r.mode.spec().samples && r.is_preference()
}

/// A verdict as a category: 0 for A (score 1), 1 for B (0), 2 for a tie.
fn category(score: f64) -> usize {
    if score > 0.75 {
        0
    } else if score < 0.25 {
        1
    } else {
        2
    }
}

/// The verdict most of `scores` give (more than half of them), else a tie.
pub fn majority(scores: &[f64]) -> f64 {
    let mut n = [0usize; 3];
    for &s in scores {
        n[category(s)] += 1;
    }
    if 2 * n[0] > scores.len() {
        1.0
    } else if 2 * n[1] > scores.len() {
        0.0
    } else {
        0.5
    }
}

fn mean_of(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in xs {
        s += x;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

/// Pools the members' rows of `mode` into the panel's, one row per unit in first-seen order
/// (members in order). Each row keeps the unit's coordinates (answer, cells, prompt,
/// criterion), is judged by [`PANEL`] with the identity of these members
/// ([`panel_id`]), and says in `raw` what each judge gave; low-mass scores are left out
/// when `policy` leaves them out of means.
pub fn pool(members: &[Member<'_>], mode: Mode, policy: LowMassPolicy) -> Vec<JudgmentRecord> {
    let id = panel_id(members.iter().map(|m| m.id));
    let mut order: Vec<String> = Vec::new();
    let mut by: HashMap<String, Vec<&JudgmentRecord>> = HashMap::new();
    for m in members {
        for r in m.rows.iter().filter(|r| r.mode == mode) {
            let u = unit(r);
            let e = by.entry(u.clone()).or_default();
            if e.is_empty() {
                order.push(u);
            }
            e.push(r);
        }
    }
    order
        .iter()
        .map(|u| {
            let rows = &by[u];
            let voting: Vec<&&JudgmentRecord> = rows.iter().filter(|r| counts(r, policy)).collect();
            let mut p = rows[0].clone();
            p.key = key_of(&serde_json::json!({
                "panel": id,
                "rows": rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            }));
            p.call = p.key.clone();
            p.judge = PANEL.to_string();
            p.judge_id = id.clone();
            let mut templates: Vec<&str> = Vec::new();
            for r in rows {
                if !templates.contains(&r.template.as_str()) {
                    templates.push(&r.template);
                }
            }
            p.template = templates.join("+");
            p.raw = rows
                .iter()
                .map(|r| {
                    let s = r.value().map_or("null".to_string(), |v| {
                        format!("{}", (v * 1e4).round() / 1e4)
                    });
                    let left = if r.score.is_some() && !counts(r, policy) {
                        " (low mass, left out)"
                    } else {
                        ""
                    };
                    format!("{}: {s}{left}", r.judge)
                })
                .collect::<Vec<_>>()
                .join("; ");
            (p.position, p.order_seed) = (None, None);
            (p.expected_low, p.expected_high, p.labels_missing) = (None, None, None);
            p.flag = None;
            p.attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(1);
            p.parse_ok = !voting.is_empty();
            p.mass = voting
                .iter()
                .filter_map(|r| r.mass)
                .min_by(|a, b| a.total_cmp(b));
            p.consistent = if voting.iter().any(|r| r.consistent.is_some()) {
                Some(voting.iter().all(|r| r.consistent != Some(false)))
            } else {
                None
            };
            p.error = voting
                .is_empty()
                .then(|| "no judge of the panel scored it".to_string());
            if voting.is_empty() {
                (p.score, p.expected_score, p.probs) = (None, None, None);
            } else if is_verdict(&p) {
                let scores: Vec<f64> = voting.iter().filter_map(|r| r.score).collect();
                p.score = Some(majority(&scores));
                p.expected_score = None;
                p.probs = None;
            } else {
                p.score = mean_of(voting.iter().filter_map(|r| r.score));
                p.expected_score = mean_of(voting.iter().filter_map(|r| r.expected_score));
                // Probabilities pool as their mean where every judge gave the same layout.
                let len = voting[0].probs.as_ref().map(Vec::len);
                p.probs = match len {
                    Some(n)
                        if voting
                            .iter()
                            .all(|r| r.probs.as_ref().map(Vec::len) == Some(n)) =>
                    {
                        Some(
                            (0..n)
                                .map(|i| {
                                    voting
                                        .iter()
                                        .map(|r| r.probs.as_ref().map_or(0.0, |v| v[i]))
                                        .sum::<f64>()
                                        / voting.len() as f64
                                })
                                .collect(),
                        )
                    }
                    _ => None,
                };
            }
            p
        })
        .collect()
}

/// How far a panel's judges agree in one mode: Krippendorff's alpha (interval) over the
/// scores, or Fleiss' kappa over text verdicts (A, B, tie), with a 95 % CI resampling
/// prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PanelAgreement {
    /// The mode.
    pub mode: Mode,
    /// Whose agreement: `all judges`, or `<judge> vs the others` (the others pooled).
    pub label: String,
    /// `krippendorff_alpha` or `fleiss_kappa`.
    pub statistic: String,
    /// Units (answers, or pairs of answers) at least two of them scored.
    pub n: usize,
    /// Prompts those units come from.
    pub prompts: usize,
    /// The statistic; NaN where it cannot be measured (fewer than two pairable values, or no
    /// variation at all).
    pub value: f64,
    /// Its 95 % CI (prompts resampled, BCa).
    pub ci: (f64, f64),
}

/// One unit's values, one per judge that scored it.
#[derive(Clone, Debug, PartialEq)]
struct Votes(Vec<f64>);

impl Canonical for Votes {
    fn canonical_cmp(&self, o: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(&o.0) {
            match a.total_cmp(b) {
                Ordering::Equal => {}
                c => return c,
            }
        }
        self.0.len().cmp(&o.0.len())
    }
}

/// Per unit of `mode` (first asks, on `total` or a preference's `overall`): its prompt and
/// each member's value, in member order (`None` where one did not score it).
fn units(
    members: &[Member<'_>],
    mode: Mode,
    policy: LowMassPolicy,
) -> Vec<(String, Vec<Option<f64>>)> {
    let mut order: Vec<String> = Vec::new();
    let mut by: HashMap<String, (String, Vec<Option<f64>>)> = HashMap::new();
    for (i, m) in members.iter().enumerate() {
        for r in m.rows {
            let wanted = r.mode == mode
                && r.repeat == 0
                && (r.criterion == TOTAL || (r.criterion == OVERALL && r.other_key.is_some()));
            if !wanted || !counts(r, policy) {
                continue;
            }
            let u = unit(r);
            let e = by.entry(u.clone()).or_insert_with(|| {
                order.push(u.clone());
                (r.prompt_id.clone(), vec![None; members.len()])
            });
            e.1[i] = r.value();
        }
    }
    order.into_iter().filter_map(|u| by.remove(&u)).collect()
}

fn statistic(mode: Mode) -> &'static str {
    if mode.spec().samples && mode.spec().compares_two() {
        "fleiss_kappa"
    } else {
        "krippendorff_alpha"
    }
}

fn measure(mode: Mode, label: String, units: Vec<(String, Vec<f64>)>) -> PanelAgreement {
    let verdicts = statistic(mode) == "fleiss_kappa";
    let stat = move |vs: &[Votes]| {
        if verdicts {
            fleiss_kappa(
                &vs.iter()
                    .map(|v| v.0.iter().map(|&s| category(s)).collect())
                    .collect::<Vec<_>>(),
            )
        } else {
            krippendorff_alpha_interval(&vs.iter().map(|v| v.0.clone()).collect::<Vec<_>>())
        }
    };
    let clusters = Clusters::from_pairs(
        units
            .into_iter()
            .filter(|(_, v)| v.len() >= 2)
            .map(|(p, v)| (p, Votes(v))),
    );
    let all = clusters.values();
    PanelAgreement {
        mode,
        label,
        statistic: statistic(mode).to_string(),
        n: all.len(),
        prompts: clusters.len(),
        value: if all.is_empty() { f64::NAN } else { stat(&all) },
        ci: clusters.interval(19, stat).bounds(),
    }
}

/// The panel's agreement in `mode`: every judge together, and with three judges or more,
/// each judge against the others pooled (their mean, or their majority verdict).
pub fn panel_agreement(
    members: &[Member<'_>],
    mode: Mode,
    policy: LowMassPolicy,
) -> Vec<PanelAgreement> {
    let us = units(members, mode, policy);
    let mut out = vec![measure(
        mode,
        "all judges".into(),
        us.iter()
            .map(|(p, v)| (p.clone(), v.iter().flatten().copied().collect()))
            .collect(),
    )];
    if members.len() > 2 {
        let verdicts = statistic(mode) == "fleiss_kappa";
        for (i, m) in members.iter().enumerate() {
            let pairs = us
                .iter()
                .filter_map(|(p, v)| {
                    let own = v[i]?;
                    let rest: Vec<f64> = v
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| *k != i)
                        .filter_map(|(_, x)| *x)
                        .collect();
                    if rest.is_empty() {
                        return None;
                    }
                    let pooled = if verdicts {
                        majority(&rest)
                    } else {
                        rest.iter().sum::<f64>() / rest.len() as f64
                    };
                    Some((p.clone(), vec![own, pooled]))
                })
                .collect();
            out.push(measure(mode, format!("{} vs the others", m.name), pairs));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        judge: &str,
        mode: Mode,
        answer: &str,
        other: Option<&str>,
        score: Option<f64>,
    ) -> JudgmentRecord {
        JudgmentRecord {
            key: format!("{judge}-{answer}-{}", other.unwrap_or("")),
            judge: judge.into(),
            judge_id: format!("local:{judge}"),
            mode,
            template: format!("t-{judge}"),
            response_key: answer.into(),
            other_key: other.map(Into::into),
            prompt_id: format!("p-{answer}"),
            criterion: if other.is_some() { OVERALL } else { TOTAL }.into(),
            score,
            attempts: 1,
            parse_ok: score.is_some(),
            ..Default::default()
        }
    }

    fn member<'a>(name: &'a str, rows: &'a [JudgmentRecord]) -> Member<'a> {
        Member {
            name,
            id: name,
            rows,
        }
    }

    #[test]
    fn a_majority_needs_more_than_half() {
        assert_eq!(majority(&[1.0, 1.0, 0.0]), 1.0);
        assert_eq!(majority(&[0.0, 0.0, 0.5, 1.0, 0.0]), 0.0);
        assert_eq!(majority(&[1.0, 0.0]), 0.5);
        assert_eq!(majority(&[1.0, 0.5]), 0.5);
        assert_eq!(majority(&[0.5, 0.5, 1.0]), 0.5);
    }

    #[test]
    fn scores_pool_as_their_mean_and_verdicts_by_majority() {
        let a = vec![
            row("a", Mode::Rubric, "x", None, Some(6.0)),
            row("a", Mode::Rubric, "y", None, None),
            row("a", Mode::Pairwise, "x", Some("y"), Some(1.0)),
        ];
        let b = vec![
            row("b", Mode::Rubric, "x", None, Some(9.0)),
            row("b", Mode::Rubric, "y", None, None),
            row("b", Mode::Pairwise, "x", Some("y"), Some(1.0)),
        ];
        let mut c = vec![
            row("c", Mode::Rubric, "x", None, Some(10.0)),
            row("c", Mode::Rubric, "y", None, Some(4.0)),
            row("c", Mode::Pairwise, "x", Some("y"), Some(0.0)),
        ];
        // A low-mass score is left out under the default policy.
        c[1].flag = Some(Flag::LowMass);
        let members = [member("a", &a), member("b", &b), member("c", &c)];
        let p = [Mode::Rubric, Mode::Pairwise]
            .into_iter()
            .flat_map(|m| pool(&members, m, LowMassPolicy::Exclude))
            .collect::<Vec<_>>();
        assert_eq!(p.len(), 3);
        assert!(p
            .iter()
            .all(|r| r.judge == PANEL && r.judge_id == "panel:a+b+c"));
        assert_eq!(p[0].score, Some(25.0 / 3.0));
        assert_eq!(p[0].template, "t-a+t-b+t-c");
        // Null is not 0: no judge's score counts, so the pool has none.
        assert_eq!(p[1].score, None);
        assert!(!p[1].parse_ok);
        assert!(
            p[1].raw.contains("c: 4 (low mass, left out)"),
            "{}",
            p[1].raw
        );
        assert_eq!(p[2].score, Some(1.0));
        // Kept when the policy keeps low-mass scores.
        let p = pool(&members, Mode::Rubric, LowMassPolicy::Include);
        assert_eq!(p[1].score, Some(4.0));
        // Distinct keys per unit, the same on every pooling.
        assert_ne!(p[0].key, p[1].key);
        assert_eq!(
            p[0].key,
            pool(&members, Mode::Rubric, LowMassPolicy::Exclude)[0].key
        );
    }

    #[test]
    fn agreement_is_alpha_for_scores_and_fleiss_for_verdicts() {
        // Two judges, four answers, each a prompt of its own: alpha over the pairs, as
        // `krippendorff_alpha_interval` (hand-tested in `correlation`) gives it.
        let xs = [(1.0, 2.0), (2.0, 2.0), (3.0, 3.0), (4.0, 3.0)];
        let a: Vec<_> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| row("a", Mode::Expected, &i.to_string(), None, Some(x.0)))
            .collect();
        let b: Vec<_> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| row("b", Mode::Expected, &i.to_string(), None, Some(x.1)))
            .collect();
        let members = [member("a", &a), member("b", &b)];
        let ag = panel_agreement(&members, Mode::Expected, LowMassPolicy::Exclude);
        assert_eq!(ag.len(), 1);
        assert_eq!(ag[0].statistic, "krippendorff_alpha");
        assert_eq!((ag[0].n, ag[0].prompts), (4, 4));
        let want =
            krippendorff_alpha_interval(&xs.iter().map(|x| vec![x.0, x.1]).collect::<Vec<_>>());
        assert!((ag[0].value - want).abs() < 1e-12);
        assert!(ag[0].value > 0.5 && ag[0].value < 1.0, "{}", ag[0].value);

        // Verdicts: three judges; Fleiss' kappa over A/B/tie, and each judge against the
        // others' majority.
        let v = |j: &str, s: [f64; 4]| -> Vec<JudgmentRecord> {
            s.iter()
                .enumerate()
                .map(|(i, &x)| row(j, Mode::Pairwise, &i.to_string(), Some("z"), Some(x)))
                .collect()
        };
        let (a, b, c) = (
            v("a", [1.0, 0.0, 1.0, 0.5]),
            v("b", [1.0, 0.0, 1.0, 0.0]),
            v("c", [1.0, 0.0, 0.0, 0.5]),
        );
        let members = [member("a", &a), member("b", &b), member("c", &c)];
        let ag = panel_agreement(&members, Mode::Pairwise, LowMassPolicy::Exclude);
        assert_eq!(ag.len(), 4);
        assert_eq!(ag[0].statistic, "fleiss_kappa");
        let want = fleiss_kappa(&[vec![0, 0, 0], vec![1, 1, 1], vec![0, 0, 1], vec![2, 1, 2]]);
        assert!((ag[0].value - want).abs() < 1e-12);
        assert_eq!(ag[1].label, "a vs the others");
        // a against the majority of b and c: (A, A) (B, B) (A, tie) (tie, tie).
        let want = fleiss_kappa(&[vec![0, 0], vec![1, 1], vec![0, 2], vec![2, 2]]);
        assert!((ag[1].value - want).abs() < 1e-12);
    }
}
