//! Pairwise comparisons between cells: win rates with ties, and Bradley-Terry strengths, with
//! intervals that resample prompts (all comparisons of a prompt together).

use super::resample::{percentile_interval, Canonical, Clusters, ITERS, LEVEL};
use crate::records::{JudgmentRecord, Mode};
use rand::SeedableRng;

/// One pairwise outcome between two players (cells): `score` is 1 when `a` wins, 0 when `b`
/// wins, 0.5 for a tie (or a probability, for pairwise expected).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The prompt the comparison was made on.
    pub prompt: String,
    /// First player.
    pub a: String,
    /// Second player.
    pub b: String,
    /// Result for `a`.
    pub score: f64,
}

impl Canonical for Outcome {
    fn canonical_cmp(&self, o: &Self) -> std::cmp::Ordering {
        (&self.prompt, &self.a, &self.b)
            .cmp(&(&o.prompt, &o.a, &o.b))
            .then(self.score.total_cmp(&o.score))
    }
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

/// A player's win rate and Bradley-Terry strength, each with a 95 % CI from resampling
/// prompts.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standing {
    /// The player (cell).
    pub player: String,
    /// Comparisons it took part in.
    pub n: usize,
    /// Win rate (ties count half).
    pub win_rate: f64,
    /// CI of the win rate.
    pub win_ci: (f64, f64),
    /// Bradley-Terry strength (log scale, mean zero).
    pub strength: f64,
    /// CI of the strength.
    pub strength_ci: (f64, f64),
}

/// Win rates and Bradley-Terry strengths with intervals that resample prompts: a prompt's
/// comparisons are drawn together, since a cell meets every other cell on each prompt.
pub fn standings(outcomes: &[Outcome], seed: u64) -> Vec<Standing> {
    let wr = win_rates(outcomes);
    let bt = bradley_terry(outcomes);
    let clusters = Clusters::from_pairs(outcomes.iter().map(|o| (o.prompt.clone(), o.clone())));
    // The resampling keeps all of a prompt's outcomes: draw prompts, not outcomes.
    let by_prompt: Vec<Vec<Outcome>> = clusters.groups.iter().map(|(_, v)| v.clone()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let k = wr.len();
    let (mut win_s, mut bt_s) = (vec![Vec::new(); k], vec![Vec::new(); k]);
    if !by_prompt.is_empty() {
        for _ in 0..ITERS {
            let draw: Vec<Outcome> = (0..by_prompt.len())
                .flat_map(|_| {
                    use rand::Rng;
                    by_prompt[rng.random_range(0..by_prompt.len())].clone()
                })
                .collect();
            let w = win_rates(&draw);
            let b = bradley_terry(&draw);
            for (i, (p, _, _)) in wr.iter().enumerate() {
                if let Some((_, r, _)) = w.iter().find(|(q, _, _)| q == p) {
                    win_s[i].push(*r);
                }
                if let Some((_, s)) = b.iter().find(|(q, _)| q == p) {
                    bt_s[i].push(*s);
                }
            }
        }
    }
    wr.into_iter()
        .enumerate()
        .map(|(i, (player, win_rate, n))| Standing {
            strength: bt
                .iter()
                .find(|(p, _)| *p == player)
                .map_or(f64::NAN, |x| x.1),
            player,
            n,
            win_rate,
            win_ci: percentile_interval(std::mem::take(&mut win_s[i]), LEVEL),
            strength_ci: percentile_interval(std::mem::take(&mut bt_s[i]), LEVEL),
        })
        .collect()
}

/// The pairwise judgments of `mode` as outcomes between `model/setting` players.
pub fn pairwise_outcomes(js: &[JudgmentRecord], mode: Mode) -> Vec<Outcome> {
    js.iter()
        .filter(|j| j.mode == mode)
        .filter_map(|j| {
            Some(Outcome {
                prompt: j.prompt_id.clone(),
                a: j.cell(),
                b: j.other_cell()?,
                score: j.score?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

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
                prompt: format!("p{}", outcomes.len() / 6),
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
        let st = standings(&outcomes, 3);
        assert_eq!(st, standings(&outcomes, 3));
        for s in &st {
            assert!(
                s.strength_ci.0 <= s.strength && s.strength <= s.strength_ci.1,
                "{}",
                s.player
            );
            assert!(
                s.win_ci.0 <= s.win_rate && s.win_rate <= s.win_ci.1,
                "{}",
                s.player
            );
        }
        let wr = win_rates(&outcomes);
        assert!(wr.iter().find(|w| w.0 == "a").unwrap().1 > 0.6);
        assert!(wr.iter().find(|w| w.0 == "d").unwrap().1 < 0.4);
    }
}

#[cfg(test)]
mod resampling_tests {
    use super::*;

    #[test]
    fn win_rate_intervals_widen_when_prompts_are_resampled() {
        // 3 cells meet on every prompt; on each prompt one cell wins all its comparisons,
        // so a prompt's outcomes are strongly tied together.
        let cells = ["x", "y", "z"];
        let mut outcomes = Vec::new();
        for p in 0..12 {
            let winner = if p % 3 == 0 { "y" } else { "x" };
            for i in 0..3 {
                for j in i + 1..3 {
                    let (a, b) = (cells[i], cells[j]);
                    let score = if a == winner {
                        1.0
                    } else if b == winner {
                        0.0
                    } else {
                        0.5
                    };
                    outcomes.push(Outcome {
                        prompt: format!("p{p:02}"),
                        a: a.into(),
                        b: b.into(),
                        score,
                    });
                }
            }
        }
        let by_prompt = standings(&outcomes, 5);
        // The same outcomes as if every comparison were its own prompt.
        let single: Vec<Outcome> = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| Outcome {
                prompt: format!("{i:03}"),
                ..o.clone()
            })
            .collect();
        let by_outcome = standings(&single, 5);
        let width = |s: &[Standing], p: &str| {
            let s = s.iter().find(|s| s.player == p).unwrap();
            s.win_ci.1 - s.win_ci.0
        };
        assert!(
            width(&by_prompt, "x") > 1.15 * width(&by_outcome, "x"),
            "{} vs {}",
            width(&by_prompt, "x"),
            width(&by_outcome, "x")
        );
    }
}
