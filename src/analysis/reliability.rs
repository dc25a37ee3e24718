//! Judge reliability: agreement between modes or judges, position bias, and the
//! correlation of scores with answer length.

use super::correlation::{cohen_kappa, pearson, spearman};
use super::pairwise::{bradley_terry_ci, pairwise_consistency, pairwise_outcomes, win_rates};
use super::value;
use crate::records::{JudgmentRecord, ResponseRecord};
use serde::{Deserialize, Serialize};

/// Agreement between two modes (or judges) on the same responses and criterion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// What was compared, e.g. `expected vs listwise, total`.
    pub label: String,
    /// Responses scored by both.
    pub n: usize,
    /// Spearman's rho of the scores.
    pub spearman: f64,
    /// Cohen's kappa of the rounded scores.
    pub kappa: f64,
}

/// Per response: (response key, value for Spearman, label for kappa) of one mode and
/// criterion. Expected scores count as their expectation for Spearman and their argmax for
/// kappa; unparsed scores are left out.
fn scored<'a>(js: &'a [JudgmentRecord], mode: &str, criterion: &str) -> Vec<(&'a str, f64, f64)> {
    js.iter()
        .filter(|j| j.mode == mode && j.criterion == criterion)
        .filter_map(|j| {
            j.score
                .map(|s| (j.response_key.as_str(), value(j).unwrap_or(s), s))
        })
        .collect()
}

fn agree(label: String, va: &[(&str, f64, f64)], vb: &[(&str, f64, f64)]) -> Agreement {
    let (mut xs, mut ys, mut la, mut lb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, x, lx) in va {
        if let Some((_, y, ly)) = vb.iter().find(|(kb, _, _)| kb == k) {
            xs.push(*x);
            ys.push(*y);
            la.push(lx.round() as i64);
            lb.push(ly.round() as i64);
        }
    }
    Agreement {
        label,
        n: xs.len(),
        spearman: spearman(&xs, &ys),
        kappa: cohen_kappa(&la, &lb),
    }
}

/// Compares mode `a` with mode `b` of one judge on `criterion`, per response.
pub fn mode_agreement(js: &[JudgmentRecord], a: &str, b: &str, criterion: &str) -> Agreement {
    agree(
        format!("{a} vs {b}, {criterion}"),
        &scored(js, a, criterion),
        &scored(js, b, criterion),
    )
}

/// Compares two judges (their judgments of the same responses) in one mode on `criterion`.
pub fn judge_agreement(
    a: &[JudgmentRecord],
    b: &[JudgmentRecord],
    mode: &str,
    criterion: &str,
) -> Agreement {
    let name = |js: &[JudgmentRecord]| js.first().map(|j| j.judge.clone()).unwrap_or_default();
    agree(
        format!("{} vs {}, {mode}, {criterion}", name(a), name(b)),
        &scored(a, mode, criterion),
        &scored(b, mode, criterion),
    )
}

/// How scores depend on where an answer was shown to the judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionBias {
    /// Listwise `total` scores by 1-based position: (position, n, mean).
    pub listwise: Vec<(u32, usize, f64)>,
    /// Pairwise: share of comparisons with the same verdict in both orders, and their count.
    pub pairwise_consistency: Option<(f64, usize)>,
}

/// Position bias of the listwise and pairwise judgments in `js`.
pub fn position_bias(js: &[JudgmentRecord]) -> PositionBias {
    let mut by: Vec<(u32, Vec<f64>)> = Vec::new();
    for j in js
        .iter()
        .filter(|j| j.mode == "listwise" && j.criterion == "total")
    {
        let (Some(p), Some(v)) = (j.position, value(j)) else {
            continue;
        };
        match by.iter_mut().find(|(q, _)| *q == p) {
            Some((_, vs)) => vs.push(v),
            None => by.push((p, vec![v])),
        }
    }
    by.sort_by_key(|(p, _)| *p);
    let (c, n) = pairwise_consistency(js);
    PositionBias {
        listwise: by
            .into_iter()
            .map(|(p, vs)| (p, vs.len(), vs.iter().sum::<f64>() / vs.len() as f64))
            .collect(),
        pairwise_consistency: (n > 0).then_some((c, n)),
    }
}

/// Correlation of a score with answer length (generated tokens).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LengthCorrelation {
    /// Mode and criterion.
    pub label: String,
    /// Scored answers.
    pub n: usize,
    /// Pearson's r of score and token count.
    pub pearson: f64,
    /// Spearman's rho of score and token count.
    pub spearman: f64,
}

/// How strongly the judge's `criterion` scores in `mode` follow answer length; a high value
/// is a sign of verbosity bias.
pub fn length_correlation(
    responses: &[ResponseRecord],
    js: &[JudgmentRecord],
    mode: &str,
    criterion: &str,
) -> LengthCorrelation {
    let (mut len, mut score) = (Vec::new(), Vec::new());
    for (k, v, _) in scored(js, mode, criterion) {
        if let Some(r) = responses.iter().find(|r| r.key == k && r.text.is_some()) {
            len.push(r.completion_tokens as f64);
            score.push(v);
        }
    }
    LengthCorrelation {
        label: format!("{mode}, {criterion}"),
        n: len.len(),
        pearson: pearson(&len, &score),
        spearman: spearman(&len, &score),
    }
}

/// Human-readable agreement lines: each pair of scoring modes on `total`, and the pairwise
/// position consistency.
pub fn agreement_report(js: &[JudgmentRecord]) -> Vec<String> {
    let mut modes: Vec<&str> = Vec::new();
    for j in js {
        if j.mode != "pairwise" && !modes.contains(&j.mode.as_str()) {
            modes.push(&j.mode);
        }
    }
    let mut out = Vec::new();
    for i in 0..modes.len() {
        for k in i + 1..modes.len() {
            let a = mode_agreement(js, modes[i], modes[k], "total");
            out.push(format!(
                "agreement {}: n={}, Spearman rho={:.3}, Cohen kappa={:.3}",
                a.label, a.n, a.spearman, a.kappa
            ));
        }
    }
    let outcomes = pairwise_outcomes(js);
    if !outcomes.is_empty() {
        for (p, w, n) in win_rates(&outcomes) {
            out.push(format!(
                "pairwise win rate {p}: {:.1}% of {n} (ties count half)",
                w * 100.0
            ));
        }
        for (p, s, lo, hi) in bradley_terry_ci(&outcomes, 500, 0) {
            out.push(format!(
                "Bradley-Terry strength {p}: {s:.3} [{lo:.3}, {hi:.3}]"
            ));
        }
    }
    let (c, n) = pairwise_consistency(js);
    if n > 0 {
        out.push(format!(
            "pairwise position consistency: {:.1}% of {n} comparisons gave the same verdict in both orders",
            c * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(judge: &str, mode: &str, key: &str, score: f64, expected: Option<f64>) -> JudgmentRecord {
        JudgmentRecord {
            judge: judge.into(),
            mode: mode.into(),
            criterion: "total".into(),
            response_key: key.into(),
            score: Some(score),
            expected_score: expected,
            ..Default::default()
        }
    }

    #[test]
    fn judges_agree_by_hand() {
        // Judge a: 1 2 3 4 (5 unparsed); judge b: 2 2 3 4 5. Shared: 4 answers.
        let a: Vec<_> = [1.0, 2.0, 3.0, 4.0]
            .iter()
            .enumerate()
            .map(|(i, s)| j("a", "rubric", &format!("r{i}"), *s, None))
            .collect();
        let b: Vec<_> = [2.0, 2.0, 3.0, 4.0, 5.0]
            .iter()
            .enumerate()
            .map(|(i, s)| j("b", "rubric", &format!("r{i}"), *s, None))
            .collect();
        let ag = judge_agreement(&a, &b, "rubric", "total");
        assert_eq!(ag.n, 4);
        assert_eq!(ag.label, "a vs b, rubric, total");
        // Ranks a: 1 2 3 4; b: 1.5 1.5 3 4 -> rho = 4.5 / sqrt(5 * 4.5).
        assert!((ag.spearman - 4.5 / (5.0f64 * 4.5).sqrt()).abs() < 1e-12);
        // Agreement 3/4; chance: p(2)=1/4*2/4 + p(3)=1/16 + p(4)=1/16 = 1/4 -> (3/4-1/4)/(3/4).
        assert!((ag.kappa - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn expected_scores_use_expectation_for_rho_and_argmax_for_kappa() {
        let js = vec![
            j("a", "expected", "r0", 1.0, Some(1.4)),
            j("a", "expected", "r1", 2.0, Some(1.6)),
            j("a", "rubric", "r0", 1.0, None),
            j("a", "rubric", "r1", 2.0, None),
        ];
        let ag = mode_agreement(&js, "expected", "rubric", "total");
        assert_eq!((ag.n, ag.kappa), (2, 1.0));
        assert!((ag.spearman - 1.0).abs() < 1e-12);
    }

    #[test]
    fn position_means_and_length_correlation() {
        let mut js = Vec::new();
        for (i, (pos, s)) in [(1, 10.0), (1, 12.0), (2, 6.0), (3, 8.0)]
            .iter()
            .enumerate()
        {
            let mut r = j("a", "listwise", &format!("r{i}"), *s, None);
            r.position = Some(*pos);
            js.push(r);
        }
        let pb = position_bias(&js);
        assert_eq!(pb.listwise, vec![(1, 2, 11.0), (2, 1, 6.0), (3, 1, 8.0)]);
        assert_eq!(pb.pairwise_consistency, None);

        let responses: Vec<ResponseRecord> = [100, 300, 50, 80]
            .iter()
            .enumerate()
            .map(|(i, t)| ResponseRecord {
                key: format!("r{i}"),
                text: Some("x".into()),
                completion_tokens: *t,
                ..Default::default()
            })
            .collect();
        let lc = length_correlation(&responses, &js, "listwise", "total");
        assert_eq!(lc.n, 4);
        // Lengths rank 3 4 1 2, scores rank 3 4 1 2: rho = 1.
        assert!((lc.spearman - 1.0).abs() < 1e-12);
        // Pearson by hand: length mean 132.5, score mean 9.
        let (l, s) = ([100.0, 300.0, 50.0, 80.0], [10.0, 12.0, 6.0, 8.0]);
        let sxy: f64 = (0..4).map(|i| (l[i] - 132.5) * (s[i] - 9.0)).sum();
        let sxx: f64 = l.iter().map(|x| (x - 132.5f64).powi(2)).sum();
        let syy: f64 = s.iter().map(|x| (x - 9.0f64).powi(2)).sum();
        assert!((lc.pearson - sxy / (sxx * syy).sqrt()).abs() < 1e-12);
        assert!(lc.pearson > 0.8 && lc.pearson < 1.0);
    }
}
