//! Per-cell summaries: one row per model × setting × mode × criterion, with a bootstrap CI
//! that resamples prompts (and samples within them).

use super::resample::{mean_std, Clusters};
use crate::keys::derive_seed;
use crate::records::{JudgmentRecord, Mode, WIN_RATE};
use serde::{Deserialize, Serialize};

/// One line of the summary table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// Model name.
    pub model: String,
    /// Setting name.
    pub setting: String,
    /// Judge mode.
    pub mode: Mode,
    /// Criterion, `total`, or `win_rate` (pairwise modes).
    pub criterion: String,
    /// Number of scores.
    pub n: u64,
    /// Prompts the scores come from.
    pub prompts: u64,
    /// Number of null scores left out (unparsed verdicts, failed answers).
    pub n_null: u64,
    /// Scores flagged as doubtful (`low_mass`, `total_mismatch`).
    pub n_flagged: u64,
    /// Mean score.
    pub mean: f64,
    /// Sample standard deviation.
    pub std: f64,
    /// Lower end of the bootstrap 95 % CI of the mean (prompts resampled).
    pub ci_low: f64,
    /// Upper end of the bootstrap 95 % CI of the mean.
    pub ci_high: f64,
    /// Whether the judge sanity check flagged this mode (`None` when it did not run).
    pub judge_flagged: Option<bool>,
}

/// (model, setting, mode, criterion).
type CellKey = (String, String, Mode, String);

/// A cell's values: `(prompt, value or null, flagged)`.
type CellValues = Vec<(String, Option<f64>, bool)>;

/// The values of every cell, in first-seen order. Pairwise modes give each side of a
/// comparison its win share under [`WIN_RATE`].
pub fn cells(judgments: &[JudgmentRecord]) -> Vec<(CellKey, CellValues)> {
    let mut out: Vec<(CellKey, CellValues)> = Vec::new();
    let mut index: std::collections::HashMap<CellKey, usize> = Default::default();
    let mut push = |k: CellKey, prompt: &str, v: Option<f64>, flagged: bool| {
        let i = *index.entry(k.clone()).or_insert_with(|| {
            out.push((k, Vec::new()));
            out.len() - 1
        });
        out[i].1.push((prompt.to_string(), v, flagged));
    };
    for j in judgments {
        let flagged = j.flag.is_some();
        if j.is_preference() {
            push(
                (j.model.clone(), j.setting.clone(), j.mode, WIN_RATE.into()),
                &j.prompt_id,
                j.score,
                flagged,
            );
            if let (Some(m), Some(s)) = (&j.other_model, &j.other_setting) {
                push(
                    (m.clone(), s.clone(), j.mode, WIN_RATE.into()),
                    &j.prompt_id,
                    j.score.map(|x| 1.0 - x),
                    flagged,
                );
            }
        } else {
            push(
                (
                    j.model.clone(),
                    j.setting.clone(),
                    j.mode,
                    j.criterion.clone(),
                ),
                &j.prompt_id,
                j.value(),
                flagged,
            );
        }
    }
    out
}

/// Summary rows in first-seen order of (model, setting, mode, criterion). Intervals are
/// seeded from `seed` and the row's names, and resample prompts.
pub fn summarize(judgments: &[JudgmentRecord], seed: u64) -> Vec<SummaryRow> {
    cells(judgments)
        .into_iter()
        .map(|((model, setting, mode, criterion), vs)| {
            let scored: Vec<(String, f64)> = vs
                .iter()
                .filter_map(|(p, v, _)| v.map(|x| (p.clone(), x)))
                .collect();
            let clusters = Clusters::from_pairs(scored);
            let xs = clusters.values();
            let (mean, std) = mean_std(&xs);
            // Seeded by the row's names, so a row's interval does not depend on the others.
            let row_seed = derive_seed(seed, &[&model, &setting, mode.as_str(), &criterion]);
            let (ci_low, ci_high) = clusters.interval(row_seed, super::resample::mean);
            SummaryRow {
                model,
                setting,
                mode,
                criterion,
                n: xs.len() as u64,
                prompts: clusters.len() as u64,
                n_null: (vs.len() - xs.len()) as u64,
                n_flagged: vs.iter().filter(|(_, _, f)| *f).count() as u64,
                mean,
                std,
                ci_low,
                ci_high,
                judge_flagged: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::TOTAL;

    fn row(model: &str, prompt: &str, v: Option<f64>) -> JudgmentRecord {
        let j = crate::judge::Judge::new(
            crate::judge::JudgeConfig::new("j"),
            "j".into(),
            "j".into(),
            Default::default(),
            0,
        );
        let a = crate::records::ResponseRecord {
            key: format!("{model}{prompt}"),
            model: model.into(),
            setting: "s".into(),
            prompt_id: prompt.into(),
            ..Default::default()
        };
        j.row("c", Mode::Rubric, &a, TOTAL, v)
    }

    #[test]
    fn nulls_are_counted_not_averaged() {
        let js = vec![
            row("m", "p1", Some(6.0)),
            row("m", "p2", Some(8.0)),
            row("m", "p3", None),
        ];
        let s = summarize(&js, 1);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].n, s[0].n_null, s[0].prompts), (2, 1, 2));
        assert_eq!(s[0].mean, 7.0);
        assert!(s[0].ci_low >= 6.0 && s[0].ci_high <= 8.0);
        // All null: no mean, and no interval.
        let s = summarize(&[row("m", "p1", None)], 1);
        assert!(s[0].mean.is_nan() && s[0].ci_low.is_nan());
        assert_eq!(s[0].n, 0);
    }
}
