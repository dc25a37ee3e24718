//! Judge reliability: agreement between modes or judges, position bias, and how scores
//! go with answer length. Every interval resamples prompts.

use super::correlation::{
    cohen_kappa, krippendorff_alpha_interval, pearson, spearman, weighted_kappa,
};
use super::resample::{mean, Canonical, Clusters};
use crate::records::{JudgmentRecord, Mode, ResponseRecord, OVERALL, TOTAL};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Agreement between two modes (or judges) on the same answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// What was compared, e.g. `expected vs listwise, total`.
    pub label: String,
    /// Answers scored by both.
    pub n: usize,
    /// Spearman's rho.
    pub spearman: f64,
    /// Its 95 % CI (prompts resampled).
    pub spearman_ci: (f64, f64),
    /// Cohen's kappa of the rounded scores.
    pub kappa: f64,
    /// Quadratic-weighted kappa of the rounded scores (ordinal agreement).
    pub weighted_kappa: f64,
    /// Its 95 % CI.
    pub weighted_kappa_ci: (f64, f64),
    /// Krippendorff's alpha (interval) of the scores: agreement on the values themselves,
    /// where Spearman's rho reads only their order. NaN in records written before it.
    #[serde(default = "not_a_number")]
    pub alpha: f64,
    /// Its 95 % CI.
    #[serde(default = "no_interval")]
    pub alpha_ci: (f64, f64),
    /// Bootstrap resamples left out of the three intervals because their statistic was not
    /// a number (a resample where one side never varies).
    #[serde(default)]
    pub ci_nonfinite: u64,
}

/// One answer's scores under both: (rank value, label).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Paired {
    x: f64,
    y: f64,
    lx: i64,
    ly: i64,
}

impl Canonical for Paired {
    fn canonical_cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.x
            .total_cmp(&o.x)
            .then(self.y.total_cmp(&o.y))
            .then(self.lx.cmp(&o.lx))
            .then(self.ly.cmp(&o.ly))
    }
}

/// Per answer of `mode` and `criterion`: (answer key, prompt, value for ranks, rounded
/// label). Expected scores rank by their expectation and label by their argmax. With
/// several asks of each verdict (`judge.repeats`), the first ask's.
fn scored<'a>(
    js: &'a [JudgmentRecord],
    mode: Mode,
    criterion: &str,
) -> HashMap<&'a str, (&'a str, f64, i64)> {
    js.iter()
        .filter(|j| j.mode == mode && j.criterion == criterion && j.repeat == 0)
        .filter_map(|j| {
            let s = j.score?;
            Some((
                j.response_key.as_str(),
                (
                    j.prompt_id.as_str(),
                    j.value().unwrap_or(s),
                    s.round() as i64,
                ),
            ))
        })
        .collect()
}

fn not_a_number() -> f64 {
    f64::NAN
}

fn no_interval() -> (f64, f64) {
    (f64::NAN, f64::NAN)
}

fn agree(
    label: String,
    a: &HashMap<&str, (&str, f64, i64)>,
    b: &HashMap<&str, (&str, f64, i64)>,
) -> Agreement {
    let mut pairs = Vec::new();
    for (k, (p, x, lx)) in a {
        if let Some((_, y, ly)) = b.get(k) {
            pairs.push((
                p.to_string(),
                Paired {
                    x: *x,
                    y: *y,
                    lx: *lx,
                    ly: *ly,
                },
            ));
        }
    }
    let clusters = Clusters::from_pairs(pairs);
    let all = clusters.values();
    let rho = |v: &[Paired]| {
        spearman(
            &v.iter().map(|p| p.x).collect::<Vec<_>>(),
            &v.iter().map(|p| p.y).collect::<Vec<_>>(),
        )
    };
    let wk = |v: &[Paired]| {
        weighted_kappa(
            &v.iter().map(|p| p.lx).collect::<Vec<_>>(),
            &v.iter().map(|p| p.ly).collect::<Vec<_>>(),
        )
    };
    let alpha = |v: &[Paired]| {
        krippendorff_alpha_interval(&v.iter().map(|p| vec![p.x, p.y]).collect::<Vec<_>>())
    };
    let (rho_ci, wk_ci) = (clusters.interval(11, rho), clusters.interval(13, wk));
    let alpha_ci = clusters.interval(17, alpha);
    Agreement {
        label,
        n: all.len(),
        spearman: rho(&all),
        spearman_ci: rho_ci.bounds(),
        kappa: cohen_kappa(
            &all.iter().map(|p| p.lx).collect::<Vec<_>>(),
            &all.iter().map(|p| p.ly).collect::<Vec<_>>(),
        ),
        weighted_kappa: wk(&all),
        weighted_kappa_ci: wk_ci.bounds(),
        alpha: alpha(&all),
        alpha_ci: alpha_ci.bounds(),
        ci_nonfinite: rho_ci.nonfinite + wk_ci.nonfinite + alpha_ci.nonfinite,
    }
}

/// Compares mode `a` with mode `b` of one judge on `criterion`, per answer.
pub fn mode_agreement(js: &[JudgmentRecord], a: Mode, b: Mode, criterion: &str) -> Agreement {
    agree(
        format!("{a} vs {b}, {criterion}"),
        &scored(js, a, criterion),
        &scored(js, b, criterion),
    )
}

/// Compares two judges (their judgments of the same answers) in one mode on `criterion`.
pub fn judge_agreement(
    a: &[JudgmentRecord],
    b: &[JudgmentRecord],
    mode: Mode,
    criterion: &str,
) -> Agreement {
    let name = |js: &[JudgmentRecord]| js.first().map(|j| j.judge.clone()).unwrap_or_default();
    agree(
        format!("{} vs {}, {mode}, {criterion}", name(a), name(b)),
        &scored(a, mode, criterion),
        &scored(b, mode, criterion),
    )
}

/// A mean with its CI and sample size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// What is measured.
    pub label: String,
    /// Observations.
    pub n: usize,
    /// The mean of the per-prompt means.
    pub mean: f64,
    /// 95 % CI (prompts resampled; [`super::Clusters::mean_interval`]).
    pub ci: (f64, f64),
}

fn estimate(label: String, pairs: Vec<(String, f64)>, seed: u64) -> Estimate {
    let c = Clusters::from_pairs(pairs);
    let prompt_means: Vec<f64> = c.groups.iter().map(|(_, v)| mean(v)).collect();
    Estimate {
        label,
        n: c.values().len(),
        mean: mean(&prompt_means),
        ci: c.mean_interval(seed, |x| *x).bounds(),
    }
}

/// How the judge's verdicts depend on where an answer was shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionBias {
    /// Listwise: mean `total` at each position shown (1-based), with CIs.
    pub listwise: Vec<Estimate>,
    /// Pairwise: share of comparisons with the same verdict in both orders.
    pub pairwise_consistency: Option<Estimate>,
    /// Pairwise expected: mean probability of preferring the answer shown first (0.5 is no
    /// position bias).
    pub first_position_preference: Option<Estimate>,
    /// Pairwise expected: share of pairs whose two orders lean the same way.
    pub expected_consistency: Option<Estimate>,
    /// Pairwise (text verdicts): share of verdicts for the answer shown first, a tie
    /// counting half (0.5 is no position bias).
    #[serde(default)]
    pub text_first_position_preference: Option<Estimate>,
}

/// Position bias of the listwise, pairwise and pairwise-expected judgments in `js`.
pub fn position_bias(js: &[JudgmentRecord]) -> PositionBias {
    let mut by: Vec<(u32, Vec<(String, f64)>)> = Vec::new();
    for j in js
        .iter()
        .filter(|j| j.mode == Mode::Listwise && j.criterion == TOTAL)
    {
        let (Some(p), Some(v)) = (j.position, j.value()) else {
            continue;
        };
        match by.iter_mut().find(|(q, _)| *q == p) {
            Some((_, vs)) => vs.push((j.prompt_id.clone(), v)),
            None => by.push((p, vec![(j.prompt_id.clone(), v)])),
        }
    }
    by.sort_by_key(|(p, _)| *p);
    let share = |mode: Mode| -> Vec<(String, f64)> {
        js.iter()
            .filter(|j| j.mode == mode && j.criterion == OVERALL)
            .filter_map(|j| Some((j.prompt_id.clone(), f64::from(u8::from(j.consistent?)))))
            .collect()
    };
    // p(first shown preferred), per order, from the stored probabilities (or one-hot text
    // verdicts) of both orders.
    let first = |mode: Mode| -> Vec<(String, f64)> {
        js.iter()
            .filter(|j| j.mode == mode && j.criterion == OVERALL)
            .filter_map(|j| {
                let p = j.probs.as_ref()?;
                let half = p.len() / 2;
                if half < 2 {
                    return None;
                }
                let pref = |o: &[f64], letter: usize| o[letter] + o.get(2).map_or(0.0, |t| t / 2.0);
                let (o1, o2) = p.split_at(half);
                Some((j.prompt_id.clone(), (pref(o1, 0) + pref(o2, 0)) / 2.0))
            })
            .collect()
    };
    let opt = |label: &str, v: Vec<(String, f64)>, seed| {
        (!v.is_empty()).then(|| estimate(label.to_string(), v, seed))
    };
    PositionBias {
        listwise: by
            .into_iter()
            .map(|(p, vs)| {
                estimate(
                    format!("listwise mean total at position {p}"),
                    vs,
                    17 + p as u64,
                )
            })
            .collect(),
        pairwise_consistency: opt("pairwise position consistency", share(Mode::Pairwise), 19),
        first_position_preference: opt(
            "pairwise expected: p(first shown preferred)",
            first(Mode::PairwiseExpected),
            23,
        ),
        expected_consistency: opt(
            "pairwise expected: both orders lean the same way",
            share(Mode::PairwiseExpected),
            29,
        ),
        text_first_position_preference: opt(
            "pairwise: share of verdicts for the answer shown first",
            first(Mode::Pairwise),
            31,
        ),
    }
}

/// How a score goes with answer length (words, which count the same for every model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LengthAssociation {
    /// Mode and criterion.
    pub label: String,
    /// Scored answers.
    pub n: usize,
    /// Spearman's rho of score and length over all answers.
    pub pooled_spearman: f64,
    /// Pearson's r of score and length after subtracting each prompt's mean of both: the
    /// association among answers to the same prompt, free of prompts that are simply longer
    /// and easier.
    pub within_prompt_pearson: f64,
    /// Its 95 % CI (prompts resampled).
    pub within_prompt_ci: (f64, f64),
    /// Bootstrap resamples left out of that interval because their statistic was not a
    /// number.
    #[serde(default)]
    pub ci_nonfinite: u64,
}

/// Pearson's r after centring both variables per prompt.
fn within_prompt(v: &[(String, f64, f64)]) -> f64 {
    let mut sums: HashMap<&str, (f64, f64, f64)> = HashMap::new();
    for (p, l, s) in v {
        let e = sums.entry(p.as_str()).or_default();
        e.0 += l;
        e.1 += s;
        e.2 += 1.0;
    }
    let (mut ls, mut ss) = (Vec::new(), Vec::new());
    for (p, l, s) in v {
        let (sl, sy, n) = sums[p.as_str()];
        if n > 1.0 {
            ls.push(l - sl / n);
            ss.push(s - sy / n);
        }
    }
    pearson(&ls, &ss)
}

/// The association of `mode`'s `criterion` scores with answer length in words.
pub fn length_association(
    responses: &[ResponseRecord],
    js: &[JudgmentRecord],
    mode: Mode,
    criterion: &str,
) -> LengthAssociation {
    let words: HashMap<&str, f64> = responses
        .iter()
        .filter_map(|r| {
            Some((
                r.key.as_str(),
                r.text.as_deref()?.split_whitespace().count() as f64,
            ))
        })
        .collect();
    let mut rows: Vec<(String, (String, f64, f64))> = Vec::new();
    for (k, (p, v, _)) in scored(js, mode, criterion) {
        if let Some(l) = words.get(k) {
            rows.push((p.to_string(), (p.to_string(), *l, v)));
        }
    }
    let clusters = Clusters::from_pairs(rows);
    let all = clusters.values();
    let ci = clusters.interval(31, within_prompt);
    LengthAssociation {
        label: format!("{mode}, {criterion}"),
        n: all.len(),
        pooled_spearman: spearman(
            &all.iter().map(|r| r.1).collect::<Vec<_>>(),
            &all.iter().map(|r| r.2).collect::<Vec<_>>(),
        ),
        within_prompt_pearson: within_prompt(&all),
        within_prompt_ci: ci.bounds(),
        ci_nonfinite: ci.nonfinite,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(
        judge: &str,
        mode: Mode,
        key: &str,
        prompt: &str,
        score: f64,
        expected: Option<f64>,
    ) -> JudgmentRecord {
        let jj = crate::judge::Judge::new(
            crate::judge::JudgeConfig::new(judge),
            judge.into(),
            judge.into(),
            Default::default(),
            0,
        );
        let a = ResponseRecord {
            key: key.into(),
            prompt_id: prompt.into(),
            ..Default::default()
        };
        let mut r = jj.row("c", mode, &a, TOTAL, Some(score));
        r.expected_score = expected;
        r
    }

    #[test]
    fn text_verdicts_give_a_first_position_preference() {
        use crate::judge::{pairwise::order_verdicts, Verdict};
        // Five prompts; the judge picks whichever answer is shown first in 9 of the 10
        // orders, so the share is 0.9.
        let mut js = Vec::new();
        for (i, (x, y)) in [
            (Verdict::A, Verdict::A),
            (Verdict::A, Verdict::A),
            (Verdict::A, Verdict::A),
            (Verdict::A, Verdict::A),
            (Verdict::A, Verdict::B),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = j(
                "a",
                Mode::Pairwise,
                &format!("r{i}"),
                &format!("p{i}"),
                0.5,
                None,
            );
            r.criterion = OVERALL.into();
            r.probs = order_verdicts(Some(x), Some(y));
            js.push(r);
        }
        let pb = position_bias(&js);
        let e = pb
            .text_first_position_preference
            .expect("text verdicts of both orders");
        assert_eq!(e.n, 5);
        assert!((e.mean - 0.9).abs() < 1e-12, "{}", e.mean);
        assert_eq!(
            pb.first_position_preference, None,
            "no pairwise expected rows"
        );
    }

    #[test]
    fn judges_agree_by_hand() {
        // Judge a: 1 2 3 4 (5th unscored); judge b: 2 2 3 4 5. Shared: 4 answers.
        let a: Vec<_> = [1.0, 2.0, 3.0, 4.0]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                j(
                    "a",
                    Mode::Rubric,
                    &format!("r{i}"),
                    &format!("p{i}"),
                    *s,
                    None,
                )
            })
            .collect();
        let b: Vec<_> = [2.0, 2.0, 3.0, 4.0, 5.0]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                j(
                    "b",
                    Mode::Rubric,
                    &format!("r{i}"),
                    &format!("p{i}"),
                    *s,
                    None,
                )
            })
            .collect();
        let ag = judge_agreement(&a, &b, Mode::Rubric, TOTAL);
        assert_eq!(ag.n, 4);
        assert_eq!(ag.label, "a vs b, rubric, total");
        // Ranks a: 1 2 3 4; b: 1.5 1.5 3 4 -> rho = 4.5 / sqrt(5 * 4.5).
        assert!((ag.spearman - 4.5 / (5.0f64 * 4.5).sqrt()).abs() < 1e-12);
        assert!((ag.kappa - 2.0 / 3.0).abs() < 1e-12);
        assert!(ag.spearman_ci.0 <= ag.spearman_ci.1);
        // Krippendorff's alpha on units (1, 2), (2, 2), (3, 3), (4, 4): D_o = 2/8 (the one
        // disagreeing unit), D_e = 2·8·7.875 / 56 = 2.25, alpha = 1 − 0.25/2.25 = 8/9.
        assert!((ag.alpha - 8.0 / 9.0).abs() < 1e-12, "{}", ag.alpha);
        assert!(ag.alpha_ci.0 <= ag.alpha && ag.alpha <= ag.alpha_ci.1 + 1e-12);
    }

    #[test]
    fn expected_scores_rank_by_expectation_and_label_by_argmax() {
        let js = vec![
            j("a", Mode::Expected, "r0", "p0", 1.0, Some(1.4)),
            j("a", Mode::Expected, "r1", "p1", 2.0, Some(1.6)),
            j("a", Mode::Rubric, "r0", "p0", 1.0, None),
            j("a", Mode::Rubric, "r1", "p1", 2.0, None),
        ];
        let ag = mode_agreement(&js, Mode::Expected, Mode::Rubric, TOTAL);
        assert_eq!((ag.n, ag.kappa), (2, 1.0));
        assert!((ag.spearman - 1.0).abs() < 1e-12);
    }

    #[test]
    fn position_means_and_within_prompt_length() {
        let mut js = Vec::new();
        for (i, (pos, s)) in [(1, 10.0), (1, 12.0), (2, 6.0), (3, 8.0)]
            .iter()
            .enumerate()
        {
            let mut r = j(
                "a",
                Mode::Listwise,
                &format!("r{i}"),
                &format!("p{i}"),
                *s,
                None,
            );
            r.position = Some(*pos);
            js.push(r);
        }
        let pb = position_bias(&js);
        let means: Vec<(usize, f64)> = pb.listwise.iter().map(|e| (e.n, e.mean)).collect();
        assert_eq!(means, vec![(2, 11.0), (1, 6.0), (1, 8.0)]);
        assert_eq!(pb.pairwise_consistency, None);

        // Two prompts: longer prompts score higher overall, but within each prompt the
        // longer answer scores lower. Pooled: positive; within prompt: -1.
        let rs: Vec<ResponseRecord> = [("a1", 10), ("a2", 20), ("b1", 100), ("b2", 110)]
            .iter()
            .map(|(k, w)| ResponseRecord {
                key: k.to_string(),
                text: Some(vec!["w"; *w].join(" ")),
                ..Default::default()
            })
            .collect();
        let js = vec![
            j("a", Mode::Expected, "a1", "pa", 5.0, None),
            j("a", Mode::Expected, "a2", "pa", 4.0, None),
            j("a", Mode::Expected, "b1", "pb", 9.0, None),
            j("a", Mode::Expected, "b2", "pb", 8.0, None),
        ];
        let la = length_association(&rs, &js, Mode::Expected, TOTAL);
        assert_eq!(la.n, 4);
        assert!(la.pooled_spearman > 0.5, "{}", la.pooled_spearman);
        assert!(
            (la.within_prompt_pearson + 1.0).abs() < 1e-12,
            "{}",
            la.within_prompt_pearson
        );
    }
}
