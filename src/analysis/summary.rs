//! Per-cell summaries: one row per model × setting × mode × criterion, with a bootstrap CI
//! that resamples prompts (and samples within them).

use super::resample::{mean, mean_std, Clusters};
use crate::judge::LowMassPolicy;
use crate::keys::derive_seed;
use crate::records::{Flag, JudgmentRecord, Mode, WIN_RATE};
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
    /// Scores flagged as doubtful (`low_mass`, `total_mismatch`, `conflict`), excluded
    /// ones included.
    pub n_flagged: u64,
    /// `low_mass` scores left out of the mean and interval (`low_mass_policy = "exclude"`,
    /// the default).
    #[serde(default)]
    pub n_excluded: u64,
    /// Mean score: the mean of the per-prompt means, every prompt weighing the same.
    pub mean: f64,
    /// Sample standard deviation of the scores.
    pub std: f64,
    /// Lower end of the 95 % CI of the mean (prompts resampled; BCa at the level expanded
    /// for few prompts, [`Clusters::mean_interval`]).
    pub ci_low: f64,
    /// Upper end of the bootstrap 95 % CI of the mean.
    pub ci_high: f64,
    /// Whether the judge sanity check flagged this mode (`None` when it did not run).
    pub judge_flagged: Option<bool>,
}

/// (model, setting, mode, criterion).
type CellKey = (String, String, Mode, String);

/// A cell's values: `(prompt, value or null, flag)`.
type CellValues = Vec<(String, Option<f64>, Option<Flag>)>;

/// The values of every cell, in first-seen order. Pairwise modes give each side of a
/// comparison its win share under [`WIN_RATE`].
pub fn cells(judgments: &[JudgmentRecord]) -> Vec<(CellKey, CellValues)> {
    let mut out: Vec<(CellKey, CellValues)> = Vec::new();
    let mut index: std::collections::HashMap<CellKey, usize> = Default::default();
    let mut push = |k: CellKey, prompt: &str, v: Option<f64>, flagged: Option<Flag>| {
        let i = *index.entry(k.clone()).or_insert_with(|| {
            out.push((k, Vec::new()));
            out.len() - 1
        });
        out[i].1.push((prompt.to_string(), v, flagged));
    };
    for j in judgments {
        let flagged = j.flag;
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

/// Whether `policy` leaves a score with `flag` out of the statistics.
pub fn excluded(flag: Option<Flag>, policy: LowMassPolicy) -> bool {
    flag == Some(Flag::LowMass) && policy == LowMassPolicy::Exclude
}

/// Summary rows in first-seen order of (model, setting, mode, criterion). Intervals are
/// seeded from `seed` and the row's names, and resample prompts; `policy` says whether
/// `low_mass` scores count.
pub fn summarize(
    judgments: &[JudgmentRecord],
    seed: u64,
    policy: LowMassPolicy,
) -> Vec<SummaryRow> {
    cells(judgments)
        .into_iter()
        .map(|((model, setting, mode, criterion), vs)| {
            let n_excluded = vs
                .iter()
                .filter(|(_, v, f)| v.is_some() && excluded(*f, policy))
                .count();
            let scored: Vec<(String, f64)> = vs
                .iter()
                .filter(|(_, _, f)| !excluded(*f, policy))
                .filter_map(|(p, v, _)| v.map(|x| (p.clone(), x)))
                .collect();
            let clusters = Clusters::from_pairs(scored);
            let xs = clusters.values();
            let (_, std) = mean_std(&xs);
            let prompt_means: Vec<f64> = clusters.groups.iter().map(|(_, v)| mean(v)).collect();
            // Seeded by the row's names, so a row's interval does not depend on the others.
            let row_seed = derive_seed(seed, &[&model, &setting, mode.as_str(), &criterion]);
            let ci = clusters.mean_interval(row_seed, |x| *x);
            SummaryRow {
                model,
                setting,
                mode,
                criterion,
                n: xs.len() as u64,
                prompts: clusters.len() as u64,
                n_null: vs.iter().filter(|(_, v, _)| v.is_none()).count() as u64,
                n_flagged: vs.iter().filter(|(_, _, f)| f.is_some()).count() as u64,
                n_excluded: n_excluded as u64,
                mean: mean(&prompt_means),
                std,
                ci_low: ci.low,
                ci_high: ci.high,
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
        let s = summarize(&js, 1, LowMassPolicy::Exclude);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].n, s[0].n_null, s[0].prompts), (2, 1, 2));
        assert_eq!(s[0].mean, 7.0);
        assert!(s[0].ci_low >= 6.0 && s[0].ci_high <= 8.0);
        // All null: no mean, and no interval.
        let s = summarize(&[row("m", "p1", None)], 1, LowMassPolicy::Exclude);
        assert!(s[0].mean.is_nan() && s[0].ci_low.is_nan());
        assert_eq!(s[0].n, 0);
    }

    #[test]
    fn low_mass_scores_are_left_out_unless_included() {
        let mut js: Vec<JudgmentRecord> = (1..=4)
            .map(|i| row("m", &format!("p{i}"), Some(i as f64 * 2.0)))
            .collect();
        js[3].flag = Some(Flag::LowMass);
        js[2].flag = Some(Flag::TotalMismatch);
        let s = summarize(&js, 1, LowMassPolicy::Exclude);
        assert_eq!((s[0].n, s[0].n_excluded, s[0].n_flagged), (3, 1, 2));
        assert_eq!(s[0].mean, 4.0);
        let s = summarize(&js, 1, LowMassPolicy::Include);
        assert_eq!((s[0].n, s[0].n_excluded), (4, 0));
        assert_eq!(s[0].mean, 5.0);
    }

    #[test]
    fn every_prompt_weighs_the_same_in_the_mean() {
        // p1 has three scores of 2, p2 one of 8: the mean is 5, not 3.5.
        let mut js = vec![row("m", "p2", Some(8.0))];
        for s in 0..3 {
            let mut r = row("m", "p1", Some(2.0));
            r.sample = s;
            js.push(r);
        }
        let s = summarize(&js, 1, LowMassPolicy::Exclude);
        assert_eq!(s[0].mean, 5.0);
    }
}
