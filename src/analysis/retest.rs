//! Judge test-retest: with `judge.repeats = k`, each sampled verdict (rubric, listwise,
//! pairwise) is asked k times, each ask with its own seed at the judge's temperature. Two
//! figures say how much of what the run measures is the judge's own noise:
//!
//! - the **intraclass correlation** of an answer's headline score over its asks, ICC(1) of a
//!   one-way random-effects model (Shrout and Fleiss's ICC(1,1); with unequal asks per
//!   answer, the usual `k0` in place of k): the share of a single verdict's variance that
//!   lies between answers rather than between asks of the same answer. 1 means the judge
//!   gives an answer the same score every time; 0, that its scores say nothing about the
//!   answer. Its 95 % CI resamples prompts (BCa, [`Clusters::interval`]).
//! - for each comparison, the **variance of its per-prompt difference split** between the
//!   prompts and the judge. For each prompt the difference B − A at each ask; a one-way
//!   analysis of variance over prompts gives the variance between asks of the same prompt,
//!   σ²_judge, and the variance of the prompts' true differences, σ²_prompt = max(0,
//!   (MSB − MSW)/k0). A prompt's difference averages k asks, so the judge's share of its
//!   variance is (σ²_judge/k) / (σ²_prompt + σ²_judge/k), and the prompts' share the rest. A
//!   large judge share says more asks (or a steadier judge) would narrow the comparison's
//!   interval; a large prompt share, that only more prompts would.
//!
//! Rows are the headline criterion (`total` or `overall`) of each mode that has asks beyond
//! the first; `low_mass` and null scores are left out as in the other statistics. Every ask
//! shows the judge the same prompt (a listwise order is seeded by the prompt, not the ask),
//! so what varies between asks is the judge's sampling alone.

use super::paired::{cell_pairs, families, observations, Design};
use super::resample::{Canonical, Clusters, Interval};
use super::summary::excluded;
use crate::keys::derive_seed;
use crate::records::{JudgmentRecord, Mode};
use std::collections::{BTreeMap, HashMap};

/// A mode's test-retest figures for one comparison of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Retest {
    /// The mode.
    pub mode: Mode,
    /// Its headline criterion.
    pub criterion: String,
    /// Most asks of one judgment in the mode.
    pub repeats: u32,
    /// Answers (or, for a preference, pairs of answers) scored at least twice.
    pub answers: u64,
    /// ICC(1) of a single verdict; NaN when no answer was scored twice or nothing varies.
    pub icc: f64,
    /// Its 95 % CI (prompts resampled).
    pub icc_ci: Interval,
    /// Cell A of the comparison, `model/setting` (empty, with the shares NaN, for a mode
    /// with no comparison: the ICC alone).
    pub a: String,
    /// Cell B.
    pub b: String,
    /// Prompts with a difference at two asks or more.
    pub prompts: u64,
    /// Variance of one ask's difference within a prompt (σ²_judge).
    pub judge_var: f64,
    /// Variance of the prompts' true differences (σ²_prompt).
    pub prompt_var: f64,
    /// The judge's share of the variance of a prompt's difference, averaged over its asks.
    pub judge_share: f64,
}

impl Retest {
    /// The prompts' share: 1 − the judge's.
    pub fn prompt_share(&self) -> f64 {
        1.0 - self.judge_share
    }
}

/// One answer's scores over its asks, for the resampling (in canonical order).
#[derive(Clone, Debug, PartialEq)]
struct Asks(Vec<f64>);

impl Canonical for Asks {
    fn canonical_cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.len().cmp(&o.0.len()).then_with(|| {
            self.0
                .iter()
                .zip(&o.0)
                .map(|(x, y)| x.total_cmp(y))
                .find(|c| c.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    }
}

/// One-way analysis of variance over groups of two values or more: (MSB, MSW, k0), where
/// k0 is the mean group size corrected for unequal sizes. `None` with fewer than two
/// groups.
fn anova(groups: &[&[f64]]) -> Option<(f64, f64, f64)> {
    let groups: Vec<&[f64]> = groups.iter().copied().filter(|g| g.len() >= 2).collect();
    let a = groups.len();
    if a < 2 {
        return None;
    }
    let n: usize = groups.iter().map(|g| g.len()).sum();
    let grand = groups.iter().flat_map(|g| g.iter()).sum::<f64>() / n as f64;
    let (mut ssb, mut ssw) = (0.0, 0.0);
    for g in &groups {
        let m = g.iter().sum::<f64>() / g.len() as f64;
        ssb += g.len() as f64 * (m - grand).powi(2);
        ssw += g.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    }
    let squares: f64 = groups.iter().map(|g| (g.len() * g.len()) as f64).sum();
    let k0 = (n as f64 - squares / n as f64) / (a - 1) as f64;
    Some((ssb / (a - 1) as f64, ssw / (n - a) as f64, k0))
}

/// ICC(1) of groups of repeated scores; NaN when undefined (fewer than two groups scored
/// twice, or no variance at all).
pub fn icc1(groups: &[&[f64]]) -> f64 {
    match anova(groups) {
        Some((msb, msw, k0)) => {
            let den = msb + (k0 - 1.0) * msw;
            if den > 1e-12 {
                ((msb - msw) / den).clamp(-1.0, 1.0)
            } else {
                f64::NAN
            }
        }
        None => f64::NAN,
    }
}

/// (σ²_judge, σ²_prompt, the judge's share) from each prompt's differences at its asks.
pub fn variance_shares(prompts: &[&[f64]]) -> (f64, f64, f64) {
    let Some((msb, msw, k0)) = anova(prompts) else {
        return (f64::NAN, f64::NAN, f64::NAN);
    };
    let prompt_var = ((msb - msw) / k0).max(0.0);
    // A prompt's difference averages its k_i asks: the judge's part of its variance is
    // σ²_judge / k_i, averaged over the prompts.
    let inverse: Vec<f64> = prompts
        .iter()
        .filter(|p| p.len() >= 2)
        .map(|p| 1.0 / p.len() as f64)
        .collect();
    let judge = msw * inverse.iter().sum::<f64>() / inverse.len() as f64;
    let share = if judge + prompt_var > 1e-12 {
        judge / (judge + prompt_var)
    } else {
        f64::NAN
    };
    (msw, prompt_var, share)
}

/// The test-retest figures of every comparison of a mode whose verdicts were asked more than
/// once, in the order of the run's comparisons.
pub fn test_retest(judgments: &[JudgmentRecord], design: Design, seed: u64) -> Vec<Retest> {
    let mut out = Vec::new();
    for (mode, criterion, cells) in families(judgments) {
        if criterion != mode.spec().headline() {
            continue;
        }
        let js: Vec<&JudgmentRecord> = judgments.iter().filter(|j| j.mode == mode).collect();
        let repeats = js.iter().map(|j| j.repeat + 1).max().unwrap_or(1);
        if repeats < 2 {
            continue;
        }
        // Each answer's (or pair's) scores over its asks, grouped by prompt.
        let mut asks: BTreeMap<(&str, &str, Option<&str>), Vec<f64>> = BTreeMap::new();
        for j in js.iter().filter(|j| j.criterion == criterion) {
            if excluded(j.flag, design.low_mass) {
                continue;
            }
            if let Some(v) = j.value() {
                let key = (j.prompt_id.as_str(), j.response_key.as_str());
                asks.entry((key.0, key.1, j.other_key.as_deref()))
                    .or_default()
                    .push(v);
            }
        }
        let items = Clusters::from_pairs(
            asks.into_iter()
                .filter(|(_, v)| v.len() >= 2)
                .map(|((p, _, _), v)| (p.to_string(), Asks(v))),
        );
        let icc_of = |xs: &[Asks]| icc1(&xs.iter().map(|a| a.0.as_slice()).collect::<Vec<_>>());
        let answers = items.values();
        let icc = icc_of(&answers);
        let icc_ci = if icc.is_finite() {
            items.interval(
                derive_seed(seed, &["retest", mode.as_str(), &criterion]),
                icc_of,
            )
        } else {
            Interval::NONE
        };
        // A row of the mode's ICC and one comparison's split (none: empty cells, NaN).
        let row =
            |a: String, b: String, prompts: u64, (judge_var, prompt_var, judge_share)| Retest {
                mode,
                criterion: criterion.clone(),
                repeats,
                answers: answers.len() as u64,
                icc,
                icc_ci,
                a,
                b,
                prompts,
                judge_var,
                prompt_var,
                judge_share,
            };
        let no_words = HashMap::new();
        let pairs = cell_pairs(&cells, design.pairs);
        if pairs.is_empty() {
            // No comparison to split: the ICC alone.
            let none = (f64::NAN, f64::NAN, f64::NAN);
            out.push(row(String::new(), String::new(), 0, none));
        }
        for (i, k) in pairs {
            let (a, b) = (&cells[i], &cells[k]);
            let (clusters, _) = observations(&js, &criterion, a, b, &no_words, design.low_mass);
            // Per prompt, the difference at each ask (samples of the prompt averaged).
            let per_prompt: Vec<Vec<f64>> = clusters
                .groups
                .iter()
                .map(|(_, obs)| {
                    let mut by: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
                    for o in obs {
                        let e = by.entry(o.repeat).or_default();
                        e.0 += o.d;
                        e.1 += 1.0;
                    }
                    by.values().map(|(s, n)| s / n).collect()
                })
                .collect();
            let groups: Vec<&[f64]> = per_prompt.iter().map(Vec::as_slice).collect();
            out.push(row(
                format!("{}/{}", a.0, a.1),
                format!("{}/{}", b.0, b.1),
                groups.iter().filter(|g| g.len() >= 2).count() as u64,
                variance_shares(&groups),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Pairs;
    use crate::judge::LowMassPolicy;
    use crate::records::TOTAL;

    #[test]
    fn icc_and_variance_shares_by_hand() {
        // Three answers asked twice: (1, 3), (5, 7), (9, 11). Means 2, 6, 10, grand 6.
        // SSB = 2·(16 + 0 + 16) = 64, MSB = 32; SSW = 3·2 = 6, MSW = 2; k0 = 2.
        // ICC = (32 − 2) / (32 + 2) = 30/34.
        let g: [&[f64]; 3] = [&[1.0, 3.0], &[5.0, 7.0], &[9.0, 11.0]];
        assert!((icc1(&g) - 30.0 / 34.0).abs() < 1e-12);
        // As prompts' differences: σ²_judge = 2, σ²_prompt = (32 − 2)/2 = 15; a prompt's
        // difference averages 2 asks, so the judge's share is 1 / (1 + 15).
        let (j, p, share) = variance_shares(&g);
        assert_eq!((j, p), (2.0, 15.0));
        assert!((share - 1.0 / 16.0).abs() < 1e-12);
        // A judge that gives every answer the same score every time: ICC 1, no judge share.
        let steady: [&[f64]; 2] = [&[4.0, 4.0, 4.0], &[7.0, 7.0, 7.0]];
        assert_eq!(icc1(&steady), 1.0);
        assert_eq!(variance_shares(&steady).2, 0.0);
        // A judge whose asks vary as much as its answers: ICC near 0 (here below it), and
        // the judge's noise is all there is.
        let noise: [&[f64]; 2] = [&[1.0, 9.0], &[9.0, 1.0]];
        assert!(icc1(&noise) <= 0.0);
        assert_eq!(variance_shares(&noise).2, 1.0);
        // Nothing asked twice: undefined, not 0.
        let once: [&[f64]; 2] = [&[1.0], &[2.0]];
        assert!(icc1(&once).is_nan() && variance_shares(&once).2.is_nan());
        // Unequal asks: k0 = (7 − (9 + 4 + 4)/7) / 2 = 16/7 (Shrout and Fleiss).
        let uneven: [&[f64]; 3] = [&[1.0, 2.0, 3.0], &[5.0, 5.0], &[8.0, 9.0]];
        let (msb, msw, k0) = anova(&uneven).unwrap();
        assert!((k0 - 16.0 / 7.0).abs() < 1e-12);
        assert!((icc1(&uneven) - (msb - msw) / (msb + (k0 - 1.0) * msw)).abs() < 1e-12);
    }

    fn row(cell: &str, prompt: &str, repeat: u32, v: f64) -> JudgmentRecord {
        JudgmentRecord {
            key: format!("{cell}-{prompt}-{repeat}"),
            mode: Mode::Listwise,
            model: cell.into(),
            setting: "p1".into(),
            prompt_id: prompt.into(),
            response_key: format!("{cell}-{prompt}"),
            repeat,
            criterion: TOTAL.into(),
            score: Some(v),
            parse_ok: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_noisy_judge_shows_in_the_comparison_a_steady_one_does_not() {
        let design = Design {
            pairs: Pairs::All,
            low_mass: LowMassPolicy::Exclude,
            primary: None,
        };
        // B beats A by a different amount on each prompt (1 to 11 points); the steady judge
        // says so at every ask, the noisy one adds ±2 at alternate asks.
        let rows = |noise: f64| -> Vec<JudgmentRecord> {
            let mut v = Vec::new();
            for p in 0..6 {
                for r in 0..3u32 {
                    let e = if r % 2 == 0 { noise } else { -noise };
                    v.push(row("a", &format!("q{p}"), r, 5.0));
                    v.push(row("b", &format!("q{p}"), r, 6.0 + 2.0 * p as f64 + e));
                }
            }
            v
        };
        let steady = test_retest(&rows(0.0), design, 1);
        assert_eq!(steady.len(), 1);
        let s = &steady[0];
        assert_eq!((s.repeats, s.prompts, s.answers), (3, 6, 12));
        assert_eq!(s.judge_share, 0.0);
        assert!(s.icc > 0.99, "{}", s.icc);
        let noisy = test_retest(&rows(2.0), design, 1);
        let n = &noisy[0];
        assert!(n.judge_share > 0.05 && n.judge_share < 0.5, "{n:?}");
        assert!(
            n.icc < s.icc && n.icc_ci.low <= n.icc && n.icc <= n.icc_ci.high,
            "{n:?}"
        );
        // Asked once: no test-retest to report.
        let once: Vec<JudgmentRecord> = rows(2.0).into_iter().filter(|r| r.repeat == 0).collect();
        assert!(test_retest(&once, design, 1).is_empty());
    }
}
