//! Statistics over judgments, all seeded and reproducible: per model × setting × mode ×
//! criterion means with bootstrap confidence intervals ([`summarize`]), correlation and
//! agreement measures ([`correlation`]), pairwise win rates and Bradley-Terry strengths
//! ([`pairwise`]), and judge reliability checks ([`reliability`]).

pub mod correlation;
pub mod pairwise;
pub mod reliability;

pub use correlation::{cohen_kappa, pearson, ranks, spearman};
pub use pairwise::{
    bradley_terry, bradley_terry_ci, pairwise_consistency, pairwise_outcomes, win_rates, Outcome,
};
pub use reliability::{
    agreement_report, judge_agreement, length_correlation, mode_agreement, position_bias,
    Agreement, LengthCorrelation, PositionBias,
};

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
pub(crate) fn value(j: &JudgmentRecord) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
