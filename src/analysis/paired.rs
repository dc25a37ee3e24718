//! Paired comparisons: is cell B better than cell A on the same prompts?
//!
//! Two cells that answered the same prompts (p1 and p2 of one model, or two models under one
//! setting) are compared by their per-prompt differences B − A, not by their separate
//! intervals: prompts differ far more than the cells do, and pairing removes that. For each
//! pair of cells, mode and criterion:
//!
//! - the mean of the per-prompt differences, with a bootstrap CI that resamples prompts (and
//!   samples within; BCa at the level expanded for few prompts): the quantity the
//!   sign-flip test is about;
//! - a paired sign-flip permutation p-value (exact up to 16 prompts), and a Holm-adjusted
//!   p-value over the comparisons of the same mode and criterion;
//! - wins, ties and losses of B over A per prompt;
//! - the difference at equal answer length (AlpacaEval 2's length control): a least-squares
//!   fit of the per-prompt difference on the difference in length (words), read at zero.
//!
//! Pairwise modes compare the two cells directly: the difference is B's preference minus
//! A's (−1 to 1; 1 when B always wins).

use super::resample::{expanded_level, mean, Canonical, Clusters, LEVEL};
use super::summary::excluded;
use crate::judge::LowMassPolicy;
use crate::keys::derive_seed;
use crate::records::{JudgmentRecord, Mode, ResponseRecord, OVERALL};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which pairs of cells to compare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairs {
    /// Settings within each model, and models within each setting (the default).
    #[default]
    WithinModelOrSetting,
    /// Every pair of cells.
    All,
}

/// One paired comparison: B − A.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Judge mode.
    pub mode: Mode,
    /// Criterion (`total`, a criterion, or `overall` for pairwise modes).
    pub criterion: String,
    /// Cell A, `model/setting`.
    pub a: String,
    /// Cell B.
    pub b: String,
    /// Prompts with at least one complete pair.
    pub n: u64,
    /// Pairs (prompt, sample) left out because a score was null, or `low_mass` under
    /// `low_mass_policy = "exclude"`.
    pub n_dropped: u64,
    /// Mean over prompts of the per-prompt mean of B − A.
    pub mean_diff: f64,
    /// Lower end of the 95 % CI of the mean difference (prompts resampled;
    /// [`Clusters::mean_interval`]).
    pub ci_low: f64,
    /// Upper end.
    pub ci_high: f64,
    /// Two-sided paired sign-flip permutation p-value over prompts.
    pub p_value: f64,
    /// Holm-adjusted p-value over the comparisons of the same mode and criterion.
    pub p_holm: f64,
    /// Prompts where B scored higher.
    pub wins: u64,
    /// Prompts where they scored the same.
    pub ties: u64,
    /// Prompts where A scored higher.
    pub losses: u64,
    /// The difference at equal answer length (intercept of B − A on the length difference).
    pub lc_diff: f64,
    /// Lower end of its 95 % CI.
    pub lc_ci_low: f64,
    /// Upper end.
    pub lc_ci_high: f64,
    /// Whether the judge sanity check flagged this mode (`None` when it did not run).
    pub judge_flagged: Option<bool>,
    /// A lower bound on the Holm-adjusted p-value this design could give the comparison:
    /// the larger of its own smallest raw p (every non-zero per-prompt difference with the
    /// same sign, [`smallest_p`]) and `m` times the family's smallest ([`family_floor`]).
    /// Above 0.05, no outcome of these prompts could resolve it.
    #[serde(default = "no_value")]
    pub p_min: f64,
    /// Listwise: each cell was shown at one fixed position on every prompt (and the two at
    /// different ones), so B − A is also a difference between two positions and cannot be
    /// told apart from the judge's position bias (`order = "fixed"`).
    #[serde(default)]
    pub confounded_with_position: bool,
    /// Not one of the primary mode's headline comparisons (`primary_mode`): reported, never
    /// a finding, so that several modes and criteria do not get several chances at one
    /// claim.
    #[serde(default)]
    pub exploratory: bool,
    /// Whether the difference is smaller than the judge's resolution: the smallest score
    /// drop the sanity check's graded damage caused that the judge registers (one step
    /// removed, a number changed, a sentence of filler). `None` without graded results.
    #[serde(default)]
    pub below_resolution: Option<bool>,
    /// Bootstrap resamples left out of the two intervals because their statistic was not a
    /// number (at equal length: a resample whose answers all differ by the same length).
    #[serde(default)]
    pub ci_nonfinite: u64,
}

#[cfg(test)]
impl Comparison {
    /// A resolved, checked comparison for tests: m/p2 − m/p1 on the expected total, 10 prompts.
    pub(crate) fn example() -> Self {
        Comparison {
            mode: Mode::Expected,
            criterion: crate::records::TOTAL.into(),
            a: "m/p1".into(),
            b: "m/p2".into(),
            n: 10,
            n_dropped: 0,
            mean_diff: 0.8,
            ci_low: 0.3,
            ci_high: 1.3,
            p_value: 0.004,
            p_holm: 0.008,
            wins: 9,
            ties: 0,
            losses: 1,
            lc_diff: 0.7,
            lc_ci_low: 0.2,
            lc_ci_high: 1.2,
            judge_flagged: Some(false),
            p_min: 0.004,
            confounded_with_position: false,
            exploratory: false,
            below_resolution: None,
            ci_nonfinite: 0,
        }
    }
}

/// Whether the listwise rows of cells `a` and `b` show each at one position on every prompt,
/// a different one for each: their difference is then also a difference of positions.
fn confounded(js: &[&JudgmentRecord], a: &(String, String), b: &(String, String)) -> bool {
    let positions = |c: &(String, String)| {
        let mut p: Vec<u32> = js
            .iter()
            .filter(|j| j.mode == Mode::Listwise && j.model == c.0 && j.setting == c.1)
            .filter_map(|j| j.position)
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let (pa, pb) = (positions(a), positions(b));
    pa.len() == 1 && pb.len() == 1 && pa != pb
}

fn no_value() -> f64 {
    f64::NAN
}

/// The smallest Holm-adjusted p-value any comparison of a family can reach: `m` times the
/// family's smallest attainable raw p (`raw`, one per comparison). A comparison's own bound
/// is the larger of this and its own smallest raw p, since Holm never lowers a p-value and
/// multiplies the smallest by `m`.
pub fn family_floor(raw: &[f64], m: usize) -> f64 {
    let least = raw
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f64::INFINITY, f64::min);
    if least.is_finite() {
        least * m as f64
    } else {
        f64::NAN
    }
}

/// The smallest Holm-adjusted p-value a comparison with `nonzero` non-zero per-prompt
/// differences can reach in a family of `m` comparisons: the exact sign-flip test gives
/// 2^(1−nonzero) when every difference has the same sign (a zero difference flips nothing),
/// the Monte Carlo test beyond 16 prompts no less than 1/20,001, and Holm multiplies the
/// smallest p of the family by `m`. NaN with no non-zero difference.
pub fn smallest_p(nonzero: u64, m: usize) -> f64 {
    if nonzero == 0 || m == 0 {
        return f64::NAN;
    }
    let exact = 2f64.powi(1 - nonzero.min(1_000) as i32);
    let p = if nonzero <= 16 {
        exact
    } else {
        exact.max(1.0 / 20_001.0)
    };
    (p * m as f64).min(1.0)
}

/// Fewest paired prompts for a comparison to count as a finding: with fewer, a bootstrap
/// over prompts has too few distinct resamples for its interval to mean anything.
pub const MIN_PROMPTS: u64 = 5;

impl Comparison {
    /// True when the comparison has at least [`MIN_PROMPTS`] paired prompts and its 95 % CI
    /// excludes 0.
    pub fn resolved(&self) -> bool {
        self.n >= MIN_PROMPTS && (self.ci_low > 0.0 || self.ci_high < 0.0)
    }
}

/// One paired observation (its prompt is its cluster): difference B − A, length
/// difference (words), and which ask of the judgment it is (`repeat`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Obs {
    pub(crate) d: f64,
    pub(crate) dlen: f64,
    pub(crate) repeat: u32,
}

impl Canonical for Obs {
    fn canonical_cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.d
            .total_cmp(&o.d)
            .then(self.dlen.total_cmp(&o.dlen))
            .then(self.repeat.cmp(&o.repeat))
    }
}

/// Words in an answer.
pub fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Two-sided p-value of the paired sign-flip test on per-prompt differences: exact up to 16
/// prompts, else 20 000 seeded random flips (`(hits + 1) / (draws + 1)`).
pub fn sign_flip_p(diffs: &[f64], seed: u64) -> f64 {
    let n = diffs.len();
    if n == 0 {
        return f64::NAN;
    }
    let observed = mean(diffs).abs() - 1e-12;
    let stat = |signs: &dyn Fn(usize) -> bool| {
        (diffs
            .iter()
            .enumerate()
            .map(|(i, d)| if signs(i) { *d } else { -*d })
            .sum::<f64>()
            / n as f64)
            .abs()
    };
    if n <= 16 {
        let total = 1u64 << n;
        let hits = (0..total)
            .filter(|mask| stat(&|i| mask >> i & 1 == 1) >= observed)
            .count();
        return hits as f64 / total as f64;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let draws = 20_000;
    let mut hits = 0;
    for _ in 0..draws {
        let flips: Vec<bool> = (0..n).map(|_| rng.random()).collect();
        if stat(&|i| flips[i]) >= observed {
            hits += 1;
        }
    }
    (hits + 1) as f64 / (draws + 1) as f64
}

/// Holm's step-down adjustment of a family of p-values (NaN stays NaN).
pub fn holm(ps: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..ps.len()).filter(|&i| ps[i].is_finite()).collect();
    idx.sort_by(|&a, &b| ps[a].total_cmp(&ps[b]));
    let m = idx.len();
    let mut out = vec![f64::NAN; ps.len()];
    let mut running: f64 = 0.0;
    for (rank, &i) in idx.iter().enumerate() {
        running = running.max(((m - rank) as f64 * ps[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Intercept of the least-squares line of `d` on `dlen`: the difference at equal length.
/// NaN with fewer than 3 points or no spread in length.
fn length_controlled(obs: &[Obs]) -> f64 {
    if obs.len() < 3 {
        return f64::NAN;
    }
    let (md, ml) = (
        mean(&obs.iter().map(|o| o.d).collect::<Vec<_>>()),
        mean(&obs.iter().map(|o| o.dlen).collect::<Vec<_>>()),
    );
    let sxx: f64 = obs.iter().map(|o| (o.dlen - ml).powi(2)).sum();
    if sxx < 1e-12 {
        return f64::NAN;
    }
    let sxy: f64 = obs.iter().map(|o| (o.dlen - ml) * (o.d - md)).sum();
    md - sxy / sxx * ml
}

/// The pairs of cells to compare, in first-seen order of the cells (A before B).
pub(crate) fn cell_pairs(cells: &[(String, String)], pairs: Pairs) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for i in 0..cells.len() {
        for j in i + 1..cells.len() {
            let (a, b) = (&cells[i], &cells[j]);
            if pairs == Pairs::All || a.0 == b.0 || a.1 == b.1 {
                out.push((i, j));
            }
        }
    }
    out
}

/// Paired observations of one comparison, grouped by prompt, and the pairs dropped. Scores
/// pair by prompt, sample and ask (`repeat`); a preference row is a pair already.
pub(crate) fn observations(
    js: &[&JudgmentRecord],
    criterion: &str,
    a: &(String, String),
    b: &(String, String),
    len: &HashMap<&str, usize>,
    policy: LowMassPolicy,
) -> (Clusters<Obs>, u64) {
    let is = |j: &JudgmentRecord, c: &(String, String)| j.model == c.0 && j.setting == c.1;
    let words_of = |k: &str| len.get(k).copied().unwrap_or(0) as f64;
    let mut obs = Vec::new();
    let mut dropped = 0;
    if criterion == OVERALL {
        for j in js.iter().filter(|j| j.is_preference()) {
            let other = (
                j.other_model.clone().unwrap_or_default(),
                j.other_setting.clone().unwrap_or_default(),
            );
            let other_is = |c: &(String, String)| other == *c;
            let (sign, a_key, b_key) = if is(j, a) && other_is(b) {
                (
                    1.0,
                    j.response_key.as_str(),
                    j.other_key.as_deref().unwrap_or(""),
                )
            } else if is(j, b) && other_is(a) {
                (
                    -1.0,
                    j.other_key.as_deref().unwrap_or(""),
                    j.response_key.as_str(),
                )
            } else {
                continue;
            };
            if excluded(j.flag, policy) {
                dropped += 1;
                continue;
            }
            match j.score {
                // score is the first answer's win share: B − A = 1 − 2·score from A's side.
                Some(s) => obs.push((
                    j.prompt_id.clone(),
                    Obs {
                        d: sign * (1.0 - 2.0 * s),
                        dlen: words_of(b_key) - words_of(a_key),
                        repeat: j.repeat,
                    },
                )),
                None => dropped += 1,
            }
        }
    } else {
        let mut by: HashMap<(&str, u32, u32), [Option<&JudgmentRecord>; 2]> = HashMap::new();
        for j in js.iter().filter(|j| j.criterion == criterion) {
            let side = if is(j, a) {
                0
            } else if is(j, b) {
                1
            } else {
                continue;
            };
            by.entry((j.prompt_id.as_str(), j.sample, j.repeat))
                .or_default()[side] = Some(j);
        }
        let mut keys: Vec<_> = by.keys().copied().collect();
        keys.sort();
        for k in keys {
            let [Some(ja), Some(jb)] = by[&k] else {
                continue;
            };
            if excluded(ja.flag, policy) || excluded(jb.flag, policy) {
                dropped += 1;
                continue;
            }
            match (ja.value(), jb.value()) {
                (Some(va), Some(vb)) => obs.push((
                    k.0.to_string(),
                    Obs {
                        d: vb - va,
                        dlen: words_of(&jb.response_key) - words_of(&ja.response_key),
                        repeat: k.2,
                    },
                )),
                _ => dropped += 1,
            }
        }
    }
    (Clusters::from_pairs(obs), dropped)
}

/// A mode and criterion with the cells `(model, setting)` that have rows in it.
pub(crate) type Family = (Mode, String, Vec<(String, String)>);

/// Every (mode, criterion) of the rows in first-seen order, with the cells that have rows in
/// it (a preference row's two cells both).
pub(crate) fn families(judgments: &[JudgmentRecord]) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for j in judgments {
        let crit = j.criterion.as_str();
        let fam = match families
            .iter()
            .position(|(m, c, _)| *m == j.mode && c == crit)
        {
            Some(i) => i,
            None => {
                families.push((j.mode, crit.to_string(), Vec::new()));
                families.len() - 1
            }
        };
        let cells = &mut families[fam].2;
        let mut add = |c: (String, String)| {
            if !cells.contains(&c) {
                cells.push(c);
            }
        };
        add((j.model.clone(), j.setting.clone()));
        if let (Some(m), Some(s)) = (&j.other_model, &j.other_setting) {
            add((m.clone(), s.clone()));
        }
    }
    families
}

/// What the comparisons of a run are asked: which cells, how `low_mass` scores count, and
/// which mode is confirmatory.
#[derive(Clone, Copy, Debug, Default)]
pub struct Design {
    /// Which pairs of cells.
    pub pairs: Pairs,
    /// `low_mass` scores left out or kept.
    pub low_mass: LowMassPolicy,
    /// The primary mode (its headline comparisons are confirmatory; `None`: every mode's
    /// headline comparisons are).
    pub primary: Option<Mode>,
}

/// Every paired comparison of the run: per mode and criterion, per pair of cells that share
/// prompts. `flagged` tells whether the sanity check flagged a mode.
pub fn comparisons(
    judgments: &[JudgmentRecord],
    responses: &[ResponseRecord],
    design: Design,
    seed: u64,
    flagged: &dyn Fn(Mode) -> Option<bool>,
) -> Vec<Comparison> {
    let pairs = design.pairs;
    let len: HashMap<&str, usize> = responses
        .iter()
        .filter_map(|r| Some((r.key.as_str(), words(r.text.as_deref()?))))
        .collect();
    let families = families(judgments);
    let mut out = Vec::new();
    for (mode, criterion, cells) in &families {
        let js: Vec<&JudgmentRecord> = judgments.iter().filter(|j| j.mode == *mode).collect();
        let start = out.len();
        for (i, j) in cell_pairs(cells, pairs) {
            let (a, b) = (&cells[i], &cells[j]);
            let (clusters, dropped) = observations(&js, criterion, a, b, &len, design.low_mass);
            if clusters.is_empty() {
                continue;
            }
            // Seeded by what is compared, so that a comparison's interval does not change
            // with the other modes or cells of the run.
            let s = derive_seed(seed, &[mode.as_str(), criterion, &a.0, &a.1, &b.0, &b.1]);
            let per_prompt: Vec<(String, Obs)> = clusters
                .groups
                .iter()
                .map(|(p, v)| {
                    let o = Obs {
                        d: mean(&v.iter().map(|o| o.d).collect::<Vec<_>>()),
                        dlen: mean(&v.iter().map(|o| o.dlen).collect::<Vec<_>>()),
                        repeat: 0,
                    };
                    (p.clone(), o)
                })
                .collect();
            let diffs: Vec<f64> = per_prompt.iter().map(|(_, o)| o.d).collect();
            let ci = clusters.mean_interval(s, |o| o.d);
            // Length control on per-prompt means, its BCa interval by resampling prompts.
            let prompts = Clusters::from_pairs(per_prompt);
            let lc = length_controlled(&prompts.values());
            // A regression on few prompts: the level expanded as for a mean of n − 1 (its
            // residuals have n − 2 degrees of freedom).
            let lc_ci = if lc.is_finite() {
                let level = expanded_level(prompts.len().saturating_sub(1), LEVEL);
                prompts.interval_at(s ^ 0x9e37_79b9, length_controlled, level)
            } else {
                super::resample::Interval::NONE
            };
            let headline = *criterion == mode.spec().headline();
            out.push(Comparison {
                mode: *mode,
                criterion: criterion.clone(),
                a: format!("{}/{}", a.0, a.1),
                b: format!("{}/{}", b.0, b.1),
                n: clusters.len() as u64,
                n_dropped: dropped,
                mean_diff: mean(&diffs),
                ci_low: ci.low,
                ci_high: ci.high,
                p_value: sign_flip_p(&diffs, s),
                p_holm: f64::NAN,
                wins: diffs.iter().filter(|d| **d > 1e-12).count() as u64,
                ties: diffs.iter().filter(|d| d.abs() <= 1e-12).count() as u64,
                losses: diffs.iter().filter(|d| **d < -1e-12).count() as u64,
                lc_diff: lc,
                lc_ci_low: lc_ci.low,
                lc_ci_high: lc_ci.high,
                judge_flagged: flagged(*mode),
                p_min: f64::NAN,
                confounded_with_position: *mode == Mode::Listwise && confounded(&js, a, b),
                exploratory: !headline || design.primary.is_some_and(|p| p != *mode),
                below_resolution: None,
                ci_nonfinite: ci.nonfinite + lc_ci.nonfinite,
            });
        }
        let ps: Vec<f64> = out[start..].iter().map(|c| c.p_value).collect();
        let m = ps.iter().filter(|p| p.is_finite()).count();
        let raw: Vec<f64> = out[start..]
            .iter()
            .map(|c| smallest_p(c.wins + c.losses, 1))
            .collect();
        let floor = family_floor(&raw, m);
        for ((c, p), a) in out[start..].iter_mut().zip(holm(&ps)).zip(raw) {
            c.p_holm = p;
            c.p_min = if a.is_finite() {
                a.max(floor).min(1.0)
            } else {
                a
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::TOTAL;

    fn row(model: &str, setting: &str, prompt: &str, v: f64) -> JudgmentRecord {
        let j = crate::judge::Judge::new(
            crate::judge::JudgeConfig::new("j"),
            "j".into(),
            "j".into(),
            Default::default(),
            0,
        );
        let a = ResponseRecord {
            key: format!("{model}{setting}{prompt}"),
            model: model.into(),
            setting: setting.into(),
            prompt_id: prompt.into(),
            ..Default::default()
        };
        j.row("c", Mode::Expected, &a, TOTAL, Some(v))
    }

    #[test]
    fn a_paired_difference_is_resolved_while_cell_intervals_overlap() {
        // Prompts differ a lot (4..12); p2 is better than p1 by 0.3 to 0.5 on every prompt.
        let base = [4.0, 9.0, 6.0, 11.0, 5.0, 8.0, 12.0, 7.0, 10.0, 6.5];
        let mut js = Vec::new();
        for (i, b) in base.iter().enumerate() {
            let p = format!("p{i}");
            js.push(row("m", "p1", &p, *b));
            js.push(row("m", "p2", &p, b + 0.3 + 0.02 * i as f64));
        }
        let summary = crate::analysis::summarize(&js, 1, LowMassPolicy::Exclude);
        let (s1, s2) = (&summary[0], &summary[1]);
        assert!(s1.ci_high > s2.ci_low, "the per-cell CIs overlap");
        let c = comparisons(&js, &[], Design::default(), 1, &|_| None);
        assert_eq!(c.len(), 1);
        let c = &c[0];
        assert_eq!((c.a.as_str(), c.b.as_str()), ("m/p1", "m/p2"));
        assert_eq!((c.n, c.wins, c.ties, c.losses), (10, 10, 0, 0));
        assert!((c.mean_diff - 0.39).abs() < 1e-9, "{}", c.mean_diff);
        assert!(
            c.ci_low > 0.3 && c.ci_high < 0.48,
            "{} {}",
            c.ci_low,
            c.ci_high
        );
        assert!(c.resolved());
        // All 10 differences positive: only the two all-same-sign flips are as extreme.
        assert!((c.p_value - 2.0 / 1024.0).abs() < 1e-12, "{}", c.p_value);
    }

    #[test]
    fn a_comparison_does_not_change_with_the_rest_of_the_run() {
        let noisy = [0.3, -0.2, 0.5, 0.1, -0.4, 0.6, 0.2, -0.1, 0.4, 0.0];
        let mut js = Vec::new();
        for (i, d) in noisy.iter().enumerate() {
            let p = format!("p{i}");
            js.push(row("m", "p1", &p, 5.0 + i as f64 / 10.0));
            js.push(row("m", "p2", &p, 5.0 + i as f64 / 10.0 + d));
        }
        let alone = comparisons(&js, &[], Design::default(), 7, &|_| None);
        // Another mode seen first, and a third cell, come before it in the run.
        let mut more: Vec<JudgmentRecord> = js
            .iter()
            .map(|j| JudgmentRecord {
                mode: Mode::Rubric,
                ..j.clone()
            })
            .collect();
        more.extend(js.iter().cloned());
        more.extend((0..10).map(|i| row("m", "p0", &format!("p{i}"), 6.0)));
        let with_more = comparisons(&more, &[], Design::default(), 7, &|_| None);
        let pick = |cs: &[Comparison]| {
            cs.iter()
                .find(|c| c.mode == Mode::Expected && c.a == "m/p1" && c.b == "m/p2")
                .map(|c| (c.ci_low, c.ci_high, c.p_value))
                .unwrap()
        };
        assert_eq!(pick(&alone), pick(&with_more));
        assert!(with_more.len() > alone.len());
        // A different base seed moves the bootstrap interval.
        let other = comparisons(&js, &[], Design::default(), 8, &|_| None);
        assert_ne!(pick(&alone).0, pick(&other).0);
    }

    #[test]
    fn a_fixed_listwise_order_confounds_cells_with_positions() {
        let at = |model: &str, setting: &str, prompt: &str, pos: u32| {
            let mut r = row(model, setting, prompt, 5.0);
            r.mode = Mode::Listwise;
            r.position = Some(pos);
            r
        };
        let (a, b) = (
            ("m".to_string(), "p1".to_string()),
            ("m".to_string(), "p2".to_string()),
        );
        // Fixed order: p1 always first, p2 always second.
        let fixed: Vec<JudgmentRecord> = (0..4)
            .flat_map(|i| {
                let p = format!("q{i}");
                [at("m", "p1", &p, 1), at("m", "p2", &p, 2)]
            })
            .collect();
        let refs: Vec<&JudgmentRecord> = fixed.iter().collect();
        assert!(confounded(&refs, &a, &b));
        // Balanced: positions rotate over prompts.
        let balanced: Vec<JudgmentRecord> = (0..4)
            .flat_map(|i| {
                let p = format!("q{i}");
                [at("m", "p1", &p, 1 + i % 2), at("m", "p2", &p, 2 - i % 2)]
            })
            .collect();
        let refs: Vec<&JudgmentRecord> = balanced.iter().collect();
        assert!(!confounded(&refs, &a, &b));
        // And it reaches the comparisons table.
        let all = Design {
            pairs: Pairs::All,
            ..Design::default()
        };
        let c = comparisons(&fixed, &[], all, 1, &|_| Some(false));
        assert!(c.iter().all(|c| c.confounded_with_position), "{c:?}");
        let c = comparisons(&balanced, &[], all, 1, &|_| Some(false));
        assert!(c.iter().all(|c| !c.confounded_with_position));
    }

    #[test]
    fn the_smallest_attainable_p_follows_the_design() {
        // 10 prompts, one comparison: 2^-9.
        assert!((smallest_p(10, 1) - 2f64.powi(-9)).abs() < 1e-15);
        // The write-up's 10 prompts in a family of 4 comparisons with 2 ties: 4 · 2^-7.
        assert!((smallest_p(8, 4) - 4.0 * 2f64.powi(-7)).abs() < 1e-15);
        // 4 prompts can never reach 0.05, alone (2^-3 = 0.125).
        assert!(smallest_p(4, 1) > 0.05);
        assert_eq!(smallest_p(2, 8), 1.0);
        assert!(smallest_p(0, 3).is_nan());
        // A comparison with fewer differences than the rest of its family: its bound is its
        // own raw p when that is larger than m times the family's smallest (found in review:
        // m · 2^(1−n′) alone would call a resolvable comparison hopeless).
        let raw = [2f64.powi(-9), 2f64.powi(-9), 2f64.powi(-9), 2f64.powi(-5)];
        let floor = family_floor(&raw, 4);
        assert!((floor - 4.0 * 2f64.powi(-9)).abs() < 1e-15);
        assert!((raw[3].max(floor) - 0.031_25).abs() < 1e-12);
        assert!(family_floor(&[f64::NAN], 2).is_nan());
        // It is what the exact test gives when every difference has the same sign.
        let d = [1.0, 2.0, 0.5, 3.0, 1.0];
        assert!((sign_flip_p(&d, 0) - smallest_p(5, 1)).abs() < 1e-12);
    }

    #[test]
    fn sign_flip_p_on_a_small_exact_case() {
        // d = (1, 2, 3): |mean| = 2. Of the 8 sign patterns, |mean| >= 2 only for +++ and ---.
        assert!((sign_flip_p(&[1.0, 2.0, 3.0], 0) - 0.25).abs() < 1e-12);
        // d = (1, -1): every pattern has |mean| 0 or 1; observed 0, so p = 1.
        assert_eq!(sign_flip_p(&[1.0, -1.0], 0), 1.0);
        // (3, 1): patterns ++ (2), +- (1), -+ (1), -- (2): p = 2/4.
        assert!((sign_flip_p(&[3.0, 1.0], 0) - 0.5).abs() < 1e-12);
        assert!(sign_flip_p(&[], 0).is_nan());
    }

    #[test]
    fn holm_by_hand() {
        // Sorted 0.01, 0.02, 0.04 with m = 3: 0.03, 0.04, 0.04 (monotone).
        let h = holm(&[0.04, 0.01, 0.02]);
        let want = [0.04, 0.03, 0.04];
        for (x, y) in h.iter().zip(want) {
            assert!((x - y).abs() < 1e-12, "{h:?}");
        }
        assert_eq!(holm(&[0.6, f64::NAN])[0], 0.6);
    }

    #[test]
    fn length_control_reads_the_difference_at_equal_length() {
        // d = 0.5 + 0.1 · dlen exactly: at equal length the difference is 0.5.
        let obs: Vec<Obs> = [-5.0, 0.0, 3.0, 10.0]
            .iter()
            .map(|&l| Obs {
                d: 0.5 + 0.1 * l,
                dlen: l,
                repeat: 0,
            })
            .collect();
        assert!((length_controlled(&obs) - 0.5).abs() < 1e-12);
        assert!(length_controlled(&obs[..2]).is_nan());
    }

    #[test]
    fn default_pairs_stay_within_a_model_or_setting() {
        let cells: Vec<(String, String)> = [("a", "p1"), ("a", "p2"), ("b", "p1"), ("b", "p2")]
            .iter()
            .map(|(m, s)| (m.to_string(), s.to_string()))
            .collect();
        let p = cell_pairs(&cells, Pairs::WithinModelOrSetting);
        assert_eq!(p, vec![(0, 1), (0, 2), (1, 3), (2, 3)]);
        assert_eq!(cell_pairs(&cells, Pairs::All).len(), 6);
    }

    #[test]
    fn only_the_primary_modes_headline_comparisons_are_confirmatory() {
        let mut js = Vec::new();
        for i in 0..6 {
            let p = format!("q{i}");
            for (set, v) in [("p1", 5.0), ("p2", 7.0 + i as f64 * 0.1)] {
                let r = row("m", set, &p, v);
                let mut crit = r.clone();
                crit.criterion = "Relevance".into();
                let mut listwise = r.clone();
                listwise.mode = Mode::Listwise;
                js.extend([r, crit, listwise]);
            }
        }
        let design = |primary| Design {
            primary,
            ..Design::default()
        };
        let c = comparisons(&js, &[], design(Some(Mode::Expected)), 1, &|_| None);
        let exploratory = |mode: Mode, crit: &str| {
            c.iter()
                .find(|c| c.mode == mode && c.criterion == crit)
                .unwrap()
                .exploratory
        };
        assert!(!exploratory(Mode::Expected, TOTAL));
        assert!(exploratory(Mode::Expected, "Relevance"));
        assert!(exploratory(Mode::Listwise, TOTAL));
        let c = comparisons(&js, &[], design(Some(Mode::Listwise)), 1, &|_| None);
        assert!(c
            .iter()
            .all(|c| c.exploratory != (c.mode == Mode::Listwise)));
    }

    #[test]
    fn low_mass_pairs_are_dropped_unless_included() {
        let mut js = Vec::new();
        for i in 0..6 {
            let p = format!("q{i}");
            js.push(row("m", "p1", &p, 5.0));
            let mut b = row("m", "p2", &p, if i == 0 { -20.0 } else { 6.0 });
            if i == 0 {
                b.flag = Some(crate::records::Flag::LowMass);
            }
            js.push(b);
        }
        let c = &comparisons(&js, &[], Design::default(), 1, &|_| None)[0];
        assert_eq!((c.n, c.n_dropped, c.mean_diff), (5, 1, 1.0));
        let include = Design {
            low_mass: LowMassPolicy::Include,
            ..Design::default()
        };
        let c = &comparisons(&js, &[], include, 1, &|_| None)[0];
        assert_eq!((c.n, c.n_dropped), (6, 0));
        assert!(c.mean_diff < 0.0);
    }

    #[test]
    fn the_interval_and_the_test_are_about_per_prompt_means() {
        // q0 has four samples with a difference of 4, the others one of -1 each: the
        // per-prompt mean is (4 - 1·5) / 6, not the mean of all nine pairs.
        let mut js = Vec::new();
        for i in 0..6 {
            let p = format!("q{i}");
            let samples = if i == 0 { 4 } else { 1 };
            for s in 0..samples {
                let mut a = row("m", "p1", &p, 5.0);
                let mut b = row("m", "p2", &p, if i == 0 { 9.0 } else { 4.0 });
                a.sample = s;
                b.sample = s;
                js.extend([a, b]);
            }
        }
        let c = &comparisons(&js, &[], Design::default(), 1, &|_| None)[0];
        assert!(
            (c.mean_diff - (4.0 - 5.0) / 6.0).abs() < 1e-12,
            "{}",
            c.mean_diff
        );
        assert!(c.ci_low < c.mean_diff && c.mean_diff < c.ci_high, "{c:?}");
    }
}
