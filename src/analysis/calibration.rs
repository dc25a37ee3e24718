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

/// One prompt of a labelled comparison: the judge's verdict for B over A (0, 0.5 or 1, or
/// a preference in between), and the human's when there is one.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    /// Prompt id.
    pub prompt: String,
    /// The judge's verdict for B over A, 0 to 1.
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
    /// Share of labelled prompts where the judge's verdict (rounded to A, tie or B) is the
    /// human's.
    pub accuracy: f64,
    /// Its 95 % CI (labelled prompts resampled).
    pub accuracy_ci: (f64, f64),
    /// Cohen's kappa of the two verdicts (A, tie, B); null where one of them never varies.
    pub kappa: f64,
    /// P(judge says B | human says B).
    pub tpr: f64,
    /// P(judge says A | human says A).
    pub tnr: f64,
    /// The judge's win rate of B over every prompt.
    pub judge_win_rate: f64,
    /// The human labels' win rate of B, on the labelled prompts only.
    pub human_win_rate: f64,
    /// The prediction-powered win rate of B ([`ppi_mean`]): the judge's over every prompt,
    /// corrected by its error on the labelled ones.
    pub corrected_win_rate: f64,
    /// Its 95 % CI.
    pub corrected_ci: (f64, f64),
}

/// A verdict as one of three: A (< 0.5), tie, B (> 0.5).
fn verdict(x: f64) -> i8 {
    if x > 0.5 + 1e-9 {
        1
    } else if x < 0.5 - 1e-9 {
        -1
    } else {
        0
    }
}

/// The prediction-powered estimate from the judge's verdicts on every prompt and the
/// (human, judge) pairs of the labelled ones, power-tuned (PPI++, Angelopoulos, Duchi and
/// Zrnic 2023): `mean_L(human) + λ·(mean_all(judge) − mean_L(judge))`, with
/// `λ = Cov_L(human, judge) / ((1 + n/N)·Var_all(judge))` clipped to [0, 1]. λ = 1 is plain
/// PPI; a judge that tells the human nothing gets λ near 0, and the estimate is then the
/// labels' own mean, never worse than ignoring the judge.
pub fn ppi_mean(all_judge: &[f64], labelled: &[(f64, f64)]) -> f64 {
    let (n, big_n) = (labelled.len() as f64, all_judge.len() as f64);
    let h: Vec<f64> = labelled.iter().map(|x| x.0).collect();
    let j: Vec<f64> = labelled.iter().map(|x| x.1).collect();
    let (mh, mj, ma) = (mean(&h), mean(&j), mean(all_judge));
    let cov = h
        .iter()
        .zip(&j)
        .map(|(a, b)| (a - mh) * (b - mj))
        .sum::<f64>()
        / n;
    let var = all_judge.iter().map(|x| (x - ma).powi(2)).sum::<f64>() / big_n;
    let lambda = if var > 1e-12 {
        (cov / ((1.0 + n / big_n) * var)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    mh + lambda * (ma - mj)
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
    let all: Vec<f64> = rows.iter().map(|r| r.judge).collect();
    let agree = |l: &[(f64, f64)]| {
        l.iter().filter(|(h, j)| verdict(*h) == verdict(*j)).count() as f64 / l.len() as f64
    };
    let rate = |l: &[(f64, f64)], human: i8| {
        let given: Vec<_> = l.iter().filter(|(h, _)| verdict(*h) == human).collect();
        if given.is_empty() {
            return f64::NAN;
        }
        given.iter().filter(|(_, j)| verdict(*j) == human).count() as f64 / given.len() as f64
    };
    let hv: Vec<i8> = labelled.iter().map(|(h, _)| verdict(*h)).collect();
    let jv: Vec<i8> = labelled.iter().map(|(_, j)| verdict(*j)).collect();
    // Labelled and all prompts resampled independently; the level expanded for the few
    // labelled ones, which carry most of the uncertainty.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, m) = (labelled.len(), all.len());
    let mut acc_s = Vec::with_capacity(ITERS);
    let mut ppi_s = Vec::with_capacity(ITERS);
    for _ in 0..ITERS {
        let l: Vec<(f64, f64)> = (0..n).map(|_| labelled[rng.random_range(0..n)]).collect();
        let j: Vec<f64> = (0..m).map(|_| all[rng.random_range(0..m)]).collect();
        acc_s.push(agree(&l));
        ppi_s.push(ppi_mean(&j, &l));
    }
    let level = expanded_level(n, LEVEL);
    let clamp = |(lo, hi): (f64, f64)| (lo.max(0.0), hi.min(1.0));
    Some(Calibration {
        a: a.into(),
        b: b.into(),
        prompts: m,
        labelled: n,
        accuracy: agree(&labelled),
        accuracy_ci: percentile_interval(acc_s, level),
        kappa: super::cohen_kappa(&hv, &jv),
        tpr: rate(&labelled, 1),
        tnr: rate(&labelled, -1),
        judge_win_rate: mean(&all),
        human_win_rate: mean(&labelled.iter().map(|(h, _)| *h).collect::<Vec<_>>()),
        corrected_win_rate: ppi_mean(&all, &labelled).clamp(0.0, 1.0),
        corrected_ci: clamp(percentile_interval(ppi_s, level)),
    })
}

impl Calibration {
    /// One sentence.
    pub fn describe(&self) -> String {
        format!(
            "{b} vs {a}, judge against {n} human labels: agreement {acc:.0} % [{alo:.0}, \
             {ahi:.0}], kappa {k:.2}, TPR {tpr:.2}, TNR {tnr:.2}; win rate of {b}: judge {jw:.2} \
             over {m} prompts, humans {hw:.2} over {n}, corrected {cw:.2} [{clo:.2}, {chi:.2}]",
            a = self.a,
            b = self.b,
            n = self.labelled,
            m = self.prompts,
            acc = 100.0 * self.accuracy,
            alo = 100.0 * self.accuracy_ci.0,
            ahi = 100.0 * self.accuracy_ci.1,
            k = self.kappa,
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
        assert!(c.kappa.is_nan());
        assert_eq!(c.judge_win_rate, 1.0);
        assert_eq!(c.corrected_win_rate, 0.5);
        // By hand, λ = 1 when the judge is the human on the labelled prompts: labelled
        // (1, 1), (0, 0) of four prompts judged 1, 0, 1, 1. Cov 0.25, Var 0.1875, 1 + n/N
        // 1.5: λ = 0.89; 0.5 + 0.89 · (0.75 − 0.5) = 0.722.
        let est = ppi_mean(&[1.0, 0.0, 1.0, 1.0], &[(1.0, 1.0), (0.0, 0.0)]);
        assert!(
            (est - (0.5 + 0.25 / (1.5 * 0.1875) * 0.25)).abs() < 1e-12,
            "{est}"
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
