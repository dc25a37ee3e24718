//! Statistics over judgments: per model × setting × mode × criterion means with seeded
//! bootstrap confidence intervals, and pairwise win rates.

use crate::records::JudgmentRecord;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One line of the summary table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// Model name.
    pub model: String,
    /// Setting name.
    pub setting: String,
    /// Judge mode.
    pub mode: String,
    /// Criterion, `total`, or `win_rate` (pairwise).
    pub criterion: String,
    /// Number of scores.
    pub n: u64,
    /// Number of null (unparseable) scores left out.
    pub n_null: u64,
    /// Mean score.
    pub mean: f64,
    /// Sample standard deviation.
    pub std: f64,
    /// Lower end of the bootstrap 95 % CI of the mean.
    pub ci_low: f64,
    /// Upper end of the bootstrap 95 % CI of the mean.
    pub ci_high: f64,
}

/// Mean and sample standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, 0.0);
    }
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

/// Percentile bootstrap CI of the mean (`level` e.g. 0.95), reproducible from `seed`.
pub fn bootstrap_ci(xs: &[f64], iters: usize, level: f64, seed: u64) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = xs.len();
    let mut means: Vec<f64> = (0..iters)
        .map(|_| (0..n).map(|_| xs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let alpha = (1.0 - level) / 2.0;
    let at = |q: f64| means[((q * (iters - 1) as f64).round() as usize).min(iters - 1)];
    (at(alpha), at(1.0 - alpha))
}

/// The value a judgment contributes to means: the expected score when there is one.
fn value(j: &JudgmentRecord) -> Option<f64> {
    j.expected_score.or(j.score)
}

/// (model, setting, mode, criterion).
type GroupKey = (String, String, String, String);

/// Summary rows in first-seen order of (model, setting, mode, criterion).
pub fn summarize(judgments: &[JudgmentRecord], seed: u64) -> Vec<SummaryRow> {
    let mut groups: Vec<(GroupKey, Vec<Option<f64>>)> = Vec::new();
    let mut push = |k: GroupKey, v: Option<f64>| match groups.iter_mut().find(|(g, _)| *g == k) {
        Some((_, vs)) => vs.push(v),
        None => groups.push((k, vec![v])),
    };
    for j in judgments {
        if j.mode == "pairwise" {
            push(
                (
                    j.model.clone(),
                    j.setting.clone(),
                    j.mode.clone(),
                    "win_rate".into(),
                ),
                j.score,
            );
            if let (Some(m), Some(s)) = (&j.other_model, &j.other_setting) {
                push(
                    (m.clone(), s.clone(), j.mode.clone(), "win_rate".into()),
                    j.score.map(|x| 1.0 - x),
                );
            }
        } else {
            push(
                (
                    j.model.clone(),
                    j.setting.clone(),
                    j.mode.clone(),
                    j.criterion.clone(),
                ),
                value(j),
            );
        }
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, ((model, setting, mode, criterion), vs))| {
            let xs: Vec<f64> = vs.iter().flatten().copied().collect();
            let (mean, std) = mean_std(&xs);
            let (ci_low, ci_high) = bootstrap_ci(&xs, 2000, 0.95, seed.wrapping_add(i as u64));
            SummaryRow {
                model,
                setting,
                mode,
                criterion,
                n: xs.len() as u64,
                n_null: (vs.len() - xs.len()) as u64,
                mean,
                std,
                ci_low,
                ci_high,
            }
        })
        .collect()
}

/// Average ranks (1-based), ties sharing the mean of their ranks.
pub fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| {
        xs[a]
            .partial_cmp(&xs[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Pearson correlation; NaN when either side is constant or there are fewer than 2 pairs.
pub fn pearson(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        xs[..n].iter().sum::<f64>() / n as f64,
        ys[..n].iter().sum::<f64>() / n as f64,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (xs[i] - mx, ys[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman's rank correlation (Pearson on average ranks, so ties are handled).
pub fn spearman(xs: &[f64], ys: &[f64]) -> f64 {
    pearson(&ranks(xs), &ranks(ys))
}

/// Cohen's kappa between two raters' categorical labels.
pub fn cohen_kappa<T: PartialEq + Clone>(a: &[T], b: &[T]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return f64::NAN;
    }
    let mut cats: Vec<T> = Vec::new();
    for x in a[..n].iter().chain(b[..n].iter()) {
        if !cats.contains(x) {
            cats.push(x.clone());
        }
    }
    let po = (0..n).filter(|&i| a[i] == b[i]).count() as f64 / n as f64;
    let pe: f64 = cats
        .iter()
        .map(|c| {
            let pa = a[..n].iter().filter(|x| *x == c).count() as f64 / n as f64;
            let pb = b[..n].iter().filter(|x| *x == c).count() as f64 / n as f64;
            pa * pb
        })
        .sum();
    if pe == 1.0 {
        return if po == 1.0 { 1.0 } else { f64::NAN };
    }
    (po - pe) / (1.0 - pe)
}

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

/// Compares mode `a` with mode `b` on `criterion`, per response (expected scores count as
/// their expectation for Spearman and their argmax for kappa).
pub fn mode_agreement(js: &[JudgmentRecord], a: &str, b: &str, criterion: &str) -> Agreement {
    let pick = |mode: &str| -> Vec<(&str, f64, f64)> {
        js.iter()
            .filter(|j| j.mode == mode && j.criterion == criterion)
            .filter_map(|j| {
                j.score
                    .map(|s| (j.response_key.as_str(), value(j).unwrap_or(s), s))
            })
            .collect()
    };
    let (va, vb) = (pick(a), pick(b));
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut la = Vec::new();
    let mut lb = Vec::new();
    for (k, x, lx) in &va {
        if let Some((_, y, ly)) = vb.iter().find(|(kb, _, _)| kb == k) {
            xs.push(*x);
            ys.push(*y);
            la.push(lx.round() as i64);
            lb.push(ly.round() as i64);
        }
    }
    Agreement {
        label: format!("{a} vs {b}, {criterion}"),
        n: xs.len(),
        spearman: spearman(&xs, &ys),
        kappa: cohen_kappa(&la, &lb),
    }
}

/// Share of pairwise comparisons whose two orders agreed (position consistency), and how
/// many comparisons had both verdicts parsed.
pub fn pairwise_consistency(js: &[JudgmentRecord]) -> (f64, usize) {
    let c: Vec<bool> = js
        .iter()
        .filter(|j| j.mode == "pairwise")
        .filter_map(|j| j.consistent)
        .collect();
    let n = c.len();
    (c.iter().filter(|x| **x).count() as f64 / n.max(1) as f64, n)
}

/// One pairwise outcome between two players (e.g. model/setting pairs): `score` is 1 when
/// `a` wins, 0 when `b` wins, 0.5 for a tie.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// First player.
    pub a: String,
    /// Second player.
    pub b: String,
    /// Result for `a`.
    pub score: f64,
}

/// Win rate with ties counted as half a win, per player, in first-seen order.
pub fn win_rates(outcomes: &[Outcome]) -> Vec<(String, f64, usize)> {
    let mut acc: Vec<(String, f64, usize)> = Vec::new();
    let mut add = |p: &str, s: f64| match acc.iter_mut().find(|(n, _, _)| n == p) {
        Some((_, w, n)) => {
            *w += s;
            *n += 1;
        }
        None => acc.push((p.to_string(), s, 1)),
    };
    for o in outcomes {
        add(&o.a, o.score);
        add(&o.b, 1.0 - o.score);
    }
    acc.into_iter()
        .map(|(p, w, n)| (p, w / n as f64, n))
        .collect()
}

/// Bradley-Terry strengths (log scale, mean zero) by the MM algorithm (Hunter 2004); ties
/// count as half a win for each side. Players in first-seen order.
pub fn bradley_terry(outcomes: &[Outcome]) -> Vec<(String, f64)> {
    let mut players: Vec<String> = Vec::new();
    for o in outcomes {
        for p in [&o.a, &o.b] {
            if !players.contains(p) {
                players.push(p.clone());
            }
        }
    }
    let k = players.len();
    let idx = |p: &str| players.iter().position(|x| x == p).unwrap_or(0);
    let mut wins = vec![0.0f64; k];
    let mut games = vec![vec![0.0f64; k]; k];
    for o in outcomes {
        let (i, j) = (idx(&o.a), idx(&o.b));
        wins[i] += o.score;
        wins[j] += 1.0 - o.score;
        games[i][j] += 1.0;
        games[j][i] += 1.0;
    }
    // A small prior (one tie against a virtual average player) keeps strengths finite for
    // players who won or lost everything.
    let mut p = vec![1.0f64; k];
    for _ in 0..1000 {
        let mut next = vec![0.0; k];
        for i in 0..k {
            let mut denom = 1.0 / (p[i] + 1.0);
            for j in 0..k {
                if games[i][j] > 0.0 {
                    denom += games[i][j] / (p[i] + p[j]);
                }
            }
            next[i] = (wins[i] + 0.5) / denom;
        }
        let g = next.iter().map(|x| x.ln()).sum::<f64>() / k.max(1) as f64;
        let next: Vec<f64> = next.iter().map(|x| (x.ln() - g).exp()).collect();
        let delta = next
            .iter()
            .zip(&p)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        p = next;
        if delta < 1e-10 {
            break;
        }
    }
    players.into_iter().zip(p.iter().map(|x| x.ln())).collect()
}

/// Bradley-Terry strengths with percentile bootstrap 95 % CIs (resampling outcomes),
/// reproducible from `seed`: `(player, strength, ci_low, ci_high)`.
pub fn bradley_terry_ci(
    outcomes: &[Outcome],
    iters: usize,
    seed: u64,
) -> Vec<(String, f64, f64, f64)> {
    let point = bradley_terry(outcomes);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); point.len()];
    for _ in 0..iters {
        let resampled: Vec<Outcome> = (0..outcomes.len())
            .map(|_| outcomes[rng.random_range(0..outcomes.len())].clone())
            .collect();
        let bt = bradley_terry(&resampled);
        for (i, (name, _)) in point.iter().enumerate() {
            if let Some((_, s)) = bt.iter().find(|(n, _)| n == name) {
                samples[i].push(*s);
            }
        }
    }
    point
        .into_iter()
        .zip(samples)
        .map(|((name, s), mut v)| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            let at = |q: f64| {
                if v.is_empty() {
                    f64::NAN
                } else {
                    v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
                }
            };
            (name, s, at(0.025), at(0.975))
        })
        .collect()
}

/// The pairwise judgments as outcomes between `model/setting` players.
pub fn pairwise_outcomes(js: &[JudgmentRecord]) -> Vec<Outcome> {
    js.iter()
        .filter(|j| j.mode == "pairwise")
        .filter_map(|j| {
            let (m, s) = (j.other_model.as_ref()?, j.other_setting.as_ref()?);
            Some(Outcome {
                a: format!("{}/{}", j.model, j.setting),
                b: format!("{m}/{s}"),
                score: j.score?,
            })
        })
        .collect()
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

    #[test]
    fn bradley_terry_recovers_known_strengths() {
        // Simulate 3000 games between 4 players with known log-strengths.
        let truth: [(&str, f64); 4] = [("a", 1.0), ("b", 0.3), ("c", -0.2), ("d", -1.1)];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut outcomes = Vec::new();
        for _ in 0..3000 {
            let i = rng.random_range(0..4);
            let j = (i + rng.random_range(1..4)) % 4;
            let p = 1.0 / (1.0 + (truth[j].1 - truth[i].1).exp());
            let score = if rng.random::<f64>() < p { 1.0 } else { 0.0 };
            outcomes.push(Outcome {
                a: truth[i].0.into(),
                b: truth[j].0.into(),
                score,
            });
        }
        let bt = bradley_terry(&outcomes);
        let mean_truth = truth.iter().map(|t| t.1).sum::<f64>() / 4.0;
        for (name, s) in &bt {
            let t = truth.iter().find(|t| t.0 == name).unwrap().1 - mean_truth;
            assert!((s - t).abs() < 0.12, "{name}: {s} vs {t}");
        }
        let ci = bradley_terry_ci(&outcomes, 100, 3);
        assert_eq!(ci, bradley_terry_ci(&outcomes, 100, 3));
        for (name, s, lo, hi) in ci {
            assert!(lo <= s && s <= hi, "{name}");
        }
        let wr = win_rates(&outcomes);
        assert!(wr.iter().find(|w| w.0 == "a").unwrap().1 > 0.6);
        assert!(wr.iter().find(|w| w.0 == "d").unwrap().1 < 0.4);
    }

    #[test]
    fn spearman_textbook() {
        // Wikipedia's IQ / hours of TV example: rho = -29/165.
        let iq = [
            106.0, 86.0, 100.0, 101.0, 99.0, 103.0, 97.0, 113.0, 112.0, 110.0,
        ];
        let tv = [7.0, 0.0, 27.0, 50.0, 28.0, 29.0, 20.0, 12.0, 6.0, 17.0];
        assert!((spearman(&iq, &tv) - (-29.0 / 165.0)).abs() < 1e-9);
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), vec![2.0, 3.5, 3.5, 1.0]);
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kappa_textbook() {
        // Wikipedia's example: 50 proposals, 20 yes-yes, 5 yes-no, 10 no-yes, 15 no-no: 0.4.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (x, y, n) in [
            ("y", "y", 20),
            ("y", "n", 5),
            ("n", "y", 10),
            ("n", "n", 15),
        ] {
            for _ in 0..n {
                a.push(x);
                b.push(y);
            }
        }
        assert!((cohen_kappa(&a, &b) - 0.4).abs() < 1e-12);
        assert_eq!(cohen_kappa(&[1, 2, 3], &[1, 2, 3]), 1.0);
    }

    #[test]
    fn mean_std_hand_computed() {
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((s - 2.138089935).abs() < 1e-6);
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let xs = [1.31, 2.76, 3.19, 0.43, 5.97, 2.21, 3.36, 4.81, 1.12, 2.05];
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let a = bootstrap_ci(&xs, 2000, 0.95, 7);
        assert_eq!(a, bootstrap_ci(&xs, 2000, 0.95, 7));
        assert_ne!(a, bootstrap_ci(&xs, 2000, 0.95, 8));
        assert!(a.0 < mean && mean < a.1, "{a:?}");
        // Roughly mean +- 1.96 * sd / sqrt(n): sd 1.63, so a half-width near 1.0.
        assert!((a.1 - a.0) > 1.4 && (a.1 - a.0) < 2.6, "{a:?}");
        // The CI of a constant sample is that constant.
        assert_eq!(bootstrap_ci(&[2.0; 5], 100, 0.95, 1), (2.0, 2.0));
    }
}
