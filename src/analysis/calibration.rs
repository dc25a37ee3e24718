//! Calibrating a judge against a few human labels.
//!
//! For one pair of cells A and B, a human said on some prompts which answer is better
//! (`1` for B, `0` for A, `0.5` for a tie), and the judge said it on every prompt. Two
//! things follow:
//!
//! - **Agreement** on the labelled prompts: accuracy, Cohen's kappa over the three verdicts,
//!   the judge's true-positive rate (it says B where the human said B) and true-negative
//!   rate (A where the human said A), with 95 % CIs over labelled prompts.
//! - **A corrected win rate of B over A** by prediction-powered inference (Angelopoulos et al.,
//!   *Science* 2023), power-tuned ([`ppi_mean`]): the judge's mean verdict over every
//!   prompt, with its error measured where a human looked taken off. The estimate is
//!   unbiased whatever the judge's error; its interval (labelled and all prompts resampled
//!   independently) narrows the more the judge agrees with the humans. With a perfect judge
//!   it is the judge's own win rate; with one that tells the humans nothing, the labels'.

use super::resample::{expanded_level, mean, percentile_interval, ITERS, LEVEL};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One prompt of a labelled comparison: the judge's verdict for B over A (0 for A, 0.5 for
/// a tie, 1 for B; see [`crate::results::calibrate`] for how scores become one), and the
/// human's when there is one.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    /// Prompt id.
    pub prompt: String,
    /// The judge's verdict for B over A: 0, 0.5 or 1.
    pub judge: f64,
    /// The human's verdict for B over A (0, 0.5 or 1), when labelled.
    pub human: Option<f64>,
}

/// A judge against human labels on one pair of cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Cell A, `model/setting`.
    pub a: String,
    /// Cell B.
    pub b: String,
    /// Prompts with a judge verdict.
    pub prompts: usize,
    /// Of those, prompts a human labelled.
    pub labelled: usize,
    /// Share of labelled prompts where the judge's verdict (A, tie or B) is the human's.
    pub accuracy: f64,
    /// Its 95 % CI (labelled prompts resampled).
    pub accuracy_ci: (f64, f64),
    /// Cohen's kappa of the two verdicts (A, tie, B); null where one of them never varies.
    pub kappa: f64,
    /// Its 95 % CI (resamples where kappa is not defined left out).
    pub kappa_ci: (f64, f64),
    /// P(judge says B | human says B).
    pub tpr: f64,
    /// Its 95 % CI.
    pub tpr_ci: (f64, f64),
    /// P(judge says A | human says A).
    pub tnr: f64,
    /// Its 95 % CI.
    pub tnr_ci: (f64, f64),
    /// The judge's win rate of B over every prompt.
    pub judge_win_rate: f64,
    /// The human labels' win rate of B, on the labelled prompts only.
    pub human_win_rate: f64,
    /// The prediction-powered win rate of B ([`ppi_mean`]): the labels' own, moved by the
    /// judge's verdicts on the prompts nobody labelled as far as the judge agrees with the
    /// labels. With every prompt labelled, it is the labels' win rate.
    pub corrected_win_rate: f64,
    /// Its 95 % CI (labelled and unlabelled prompts resampled independently).
    pub corrected_ci: (f64, f64),
}

/// A verdict as one of three: A (below 0.5), tie, B (above 0.5).
fn verdict(x: f64) -> i8 {
    if x > 0.5 + 1e-9 {
        1
    } else if x < 0.5 - 1e-9 {
        -1
    } else {
        0
    }
}

/// The power-tuned prediction-powered estimate (PPI++, Angelopoulos, Duchi and Zrnic 2023)
/// of the humans' mean verdict, from the (human, judge) pairs of the labelled prompts and
/// the judge's verdicts on the unlabelled ones:
/// `mean_L(human) + λ·(mean_U(judge) − mean_L(judge))`, with
/// `λ = Cov_L(human, judge) / ((1 + n/N)·Var(judge))` clipped to [0, 1] (n labelled, N
/// unlabelled). λ = 1 is plain PPI; a judge that tells nothing about the labels gets λ near
/// 0, and the estimate is the labels' own mean, never worse than ignoring the judge. With
/// no unlabelled prompt it is the labels' mean.
pub fn ppi_mean(unlabelled: &[f64], labelled: &[(f64, f64)]) -> f64 {
    let h: Vec<f64> = labelled.iter().map(|x| x.0).collect();
    let mh = mean(&h);
    if unlabelled.is_empty() {
        return mh;
    }
    let j: Vec<f64> = labelled.iter().map(|x| x.1).collect();
    let (n, big_n) = (labelled.len() as f64, unlabelled.len() as f64);
    let (mj, mu) = (mean(&j), mean(unlabelled));
    let cov = h
        .iter()
        .zip(&j)
        .map(|(a, b)| (a - mh) * (b - mj))
        .sum::<f64>()
        / n;
    let all: Vec<f64> = j.iter().chain(unlabelled).copied().collect();
    let ma = mean(&all);
    let var = all.iter().map(|x| (x - ma).powi(2)).sum::<f64>() / all.len() as f64;
    let lambda = if var > 1e-12 {
        (cov / ((1.0 + n / big_n) * var)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    mh + lambda * (mu - mj)
}

/// The statistics of one (re)sample of labelled pairs.
struct Agreement {
    accuracy: f64,
    kappa: f64,
    tpr: f64,
    tnr: f64,
}

fn agreement(l: &[(f64, f64)]) -> Agreement {
    let hv: Vec<i8> = l.iter().map(|(h, _)| verdict(*h)).collect();
    let jv: Vec<i8> = l.iter().map(|(_, j)| verdict(*j)).collect();
    let rate = |human: i8| {
        let given: Vec<usize> = (0..l.len()).filter(|&i| hv[i] == human).collect();
        if given.is_empty() {
            return f64::NAN;
        }
        given.iter().filter(|&&i| jv[i] == human).count() as f64 / given.len() as f64
    };
    Agreement {
        accuracy: (0..l.len()).filter(|&i| hv[i] == jv[i]).count() as f64 / l.len() as f64,
        kappa: super::cohen_kappa(&hv, &jv),
        tpr: rate(1),
        tnr: rate(-1),
    }
}

/// The judge against the human labels in `rows` (one per prompt of the comparison). `None`
/// without a labelled prompt.
pub fn calibrate(a: &str, b: &str, rows: &[Judged], seed: u64) -> Option<Calibration> {
    let labelled: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.human?, r.judge)))
        .collect();
    if labelled.is_empty() {
        return None;
    }
    let unlabelled: Vec<f64> = rows
        .iter()
        .filter(|r| r.human.is_none())
        .map(|r| r.judge)
        .collect();
    // Labelled and unlabelled prompts (disjoint) resampled independently; the level
    // expanded for the few labelled ones, which carry most of the uncertainty.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, m) = (labelled.len(), unlabelled.len());
    let mut stats: [Vec<f64>; 5] = Default::default();
    for _ in 0..ITERS {
        let l: Vec<(f64, f64)> = (0..n).map(|_| labelled[rng.random_range(0..n)]).collect();
        let u: Vec<f64> = (0..m).map(|_| unlabelled[rng.random_range(0..m)]).collect();
        let g = agreement(&l);
        for (k, v) in [g.accuracy, g.kappa, g.tpr, g.tnr, ppi_mean(&u, &l)]
            .into_iter()
            .enumerate()
        {
            if v.is_finite() {
                stats[k].push(v);
            }
        }
    }
    let level = expanded_level(n, LEVEL);
    let [acc_s, kappa_s, tpr_s, tnr_s, ppi_s] = stats;
    let ci = |s: Vec<f64>, defined: bool| {
        if defined {
            percentile_interval(s, level)
        } else {
            (f64::NAN, f64::NAN)
        }
    };
    let g = agreement(&labelled);
    let all: Vec<f64> = rows.iter().map(|r| r.judge).collect();
    let (lo, hi) = percentile_interval(ppi_s, level);
    Some(Calibration {
        a: a.into(),
        b: b.into(),
        prompts: rows.len(),
        labelled: n,
        accuracy: g.accuracy,
        accuracy_ci: ci(acc_s, true),
        kappa: g.kappa,
        kappa_ci: ci(kappa_s, g.kappa.is_finite()),
        tpr: g.tpr,
        tpr_ci: ci(tpr_s, g.tpr.is_finite()),
        tnr: g.tnr,
        tnr_ci: ci(tnr_s, g.tnr.is_finite()),
        judge_win_rate: mean(&all),
        human_win_rate: mean(&labelled.iter().map(|(h, _)| *h).collect::<Vec<_>>()),
        corrected_win_rate: ppi_mean(&unlabelled, &labelled).clamp(0.0, 1.0),
        corrected_ci: (lo.max(0.0), hi.min(1.0)),
    })
}

impl Calibration {
    /// One sentence.
    pub fn describe(&self) -> String {
        let unlabelled = if self.labelled == self.prompts {
            " (every prompt labelled: the labels' own)".to_string()
        } else {
            format!(" ({} prompts unlabelled)", self.prompts - self.labelled)
        };
        format!(
            "{b} vs {a}, judge against {n} human labels: agreement {acc:.0} % [{alo:.0}, \
             {ahi:.0}], kappa {k:.2} [{klo:.2}, {khi:.2}], TPR {tpr:.2}, TNR {tnr:.2}; win rate \
             of {b}: judge {jw:.2} over {m} prompts, humans {hw:.2} over {n}, corrected {cw:.2} \
             [{clo:.2}, {chi:.2}]{unlabelled}",
            a = self.a,
            b = self.b,
            n = self.labelled,
            m = self.prompts,
            acc = 100.0 * self.accuracy,
            alo = 100.0 * self.accuracy_ci.0,
            ahi = 100.0 * self.accuracy_ci.1,
            k = self.kappa,
            klo = self.kappa_ci.0,
            khi = self.kappa_ci.1,
            tpr = self.tpr,
            tnr = self.tnr,
            jw = self.judge_win_rate,
            hw = self.human_win_rate,
            cw = self.corrected_win_rate,
            clo = self.corrected_ci.0,
            chi = self.corrected_ci.1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_and_the_correction_by_hand() {
        // Four prompts, two labelled: the human says B then A; the judge says B on all four.
        let rows: Vec<Judged> = (0..4)
            .map(|i| Judged {
                prompt: format!("p{i}"),
                judge: 1.0,
                human: match i {
                    0 => Some(1.0),
                    1 => Some(0.0),
                    _ => None,
                },
            })
            .collect();
        let c = calibrate("a", "b", &rows, 1).unwrap();
        assert_eq!((c.prompts, c.labelled), (4, 2));
        assert_eq!(c.accuracy, 0.5);
        assert_eq!((c.tpr, c.tnr), (1.0, 0.0));
        // The judge never varies: kappa is not measurable, and the correction rests on the
        // labels alone (λ = 0): 0.5.
        assert!(c.kappa.is_nan() && c.kappa_ci.0.is_nan());
        assert_eq!(c.judge_win_rate, 1.0);
        assert_eq!(c.corrected_win_rate, 0.5);
        // By hand: labelled (1, 1) and (0, 0), unlabelled judged 1 and 1. Cov 0.25, Var of
        // the four judge verdicts 0.1875, 1 + n/N = 2: λ = 0.667; 0.5 + 0.667 · (1 − 0.5).
        let est = ppi_mean(&[1.0, 1.0], &[(1.0, 1.0), (0.0, 0.0)]);
        assert!(
            (est - (0.5 + 0.25 / (2.0 * 0.1875) * 0.5)).abs() < 1e-12,
            "{est}"
        );
        // Every prompt labelled: the labels' own mean, whatever the judge says.
        assert_eq!(
            ppi_mean(&[], &[(1.0, 0.0), (1.0, 0.0), (0.0, 1.0)]),
            2.0 / 3.0
        );
        assert!(c.corrected_ci.0 <= 0.5 && 0.5 <= c.corrected_ci.1);
        // No label: nothing to calibrate.
        let unlabelled: Vec<Judged> = rows
            .into_iter()
            .map(|r| Judged { human: None, ..r })
            .collect();
        assert!(calibrate("a", "b", &unlabelled, 1).is_none());
    }

    #[test]
    fn the_correction_recovers_a_known_truth_from_a_biased_judge() {
        // 300 prompts where B truly wins 70 %; the judge says B for 90 % of B's wins and
        // for 50 % of A's, so its own win rate is about 78 %. 60 prompts are labelled.
        let truth = 0.7;
        let mut covered = (0, 0);
        for set in 0..100u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(set);
            let rows: Vec<Judged> = (0..300)
                .map(|i| {
                    let b_wins = rng.random::<f64>() < truth;
                    let says_b = rng.random::<f64>() < if b_wins { 0.9 } else { 0.5 };
                    Judged {
                        prompt: format!("p{i}"),
                        judge: if says_b { 1.0 } else { 0.0 },
                        human: (i < 60).then_some(if b_wins { 1.0 } else { 0.0 }),
                    }
                })
                .collect();
            let c = calibrate("a", "b", &rows, set).unwrap();
            // The judge's own win rate with its binomial 95 % interval.
            let se = (c.judge_win_rate * (1.0 - c.judge_win_rate) / 300.0).sqrt();
            let judge_ci = (c.judge_win_rate - 1.96 * se, c.judge_win_rate + 1.96 * se);
            covered.0 += (c.corrected_ci.0 <= truth && truth <= c.corrected_ci.1) as usize;
            covered.1 += (judge_ci.0 <= truth && truth <= judge_ci.1) as usize;
        }
        // The corrected interval covers the truth about 95 % of the time; the judge's own
        // win rate, biased by 8 points, almost never does.
        assert!(covered.0 >= 90, "corrected covered {} of 100", covered.0);
        assert!(
            covered.1 <= 20,
            "the judge's own covered {} of 100",
            covered.1
        );
    }
}
