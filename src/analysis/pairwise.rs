//! Pairwise comparisons: position consistency, win rates with ties, and Bradley-Terry
//! strengths with bootstrap confidence intervals.

use crate::records::JudgmentRecord;
use rand::{Rng, SeedableRng};

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
}
