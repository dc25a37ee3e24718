//! One-call views of a run for notebook cells: tables that show as HTML, charts that show
//! inline, and reliability statistics. Each view says its sample size and judge, and none
//! shows a number it does not have (a mode without parsed scores is one line, not a table of
//! empty cells).

use super::display::{Gallery, Saved};
use super::RunOutput;
use crate::analysis::{self, Agreement, LengthAssociation, PositionBias, Standing};
use crate::error::Result;
use crate::plot::Figure;
use crate::records::{JudgmentRecord, Mode, OVERALL, TOTAL, WIN_RATE};
use crate::table::{self, stats_df, HtmlTable, StatRow};
use std::path::PathBuf;

impl RunOutput {
    /// Every mode in the run, in first-seen order.
    pub fn modes(&self) -> Vec<Mode> {
        let mut modes: Vec<Mode> = Vec::new();
        for j in &self.judgment_rows {
            if !modes.contains(&j.mode) {
                modes.push(j.mode);
            }
        }
        modes
    }

    /// The scoring modes (every mode but the pairwise ones), in first-seen order.
    pub fn scoring_modes(&self) -> Vec<Mode> {
        self.modes()
            .into_iter()
            .filter(|m| !m.spec().compares_two())
            .collect()
    }

    /// The judge's name, as recorded.
    pub fn judge_name(&self) -> String {
        self.judgment_rows
            .first()
            .map(|j| j.judge.clone())
            .or_else(|| self.meta.experiment.judge.as_ref().map(|j| j.model.clone()))
            .unwrap_or_else(|| "no judge".into())
    }

    /// The range a score can take: for `total`, the number of criteria to that times the
    /// scale (3-12 for the write-up); for one criterion 1 to the scale; 0-1 for win rates.
    pub fn score_range(&self, criterion: &str) -> (f64, f64) {
        let (n, scale) = self
            .meta
            .experiment
            .lead_judge()
            .map_or((3.0, 4.0), |j| (j.criteria.len() as f64, j.scale as f64));
        match criterion {
            TOTAL => (n, n * scale),
            WIN_RATE | OVERALL => (0.0, 1.0),
            _ => (1.0, scale),
        }
    }

    fn rows_of(&self, mode: Mode, criterion: &str) -> Vec<&JudgmentRecord> {
        self.judgment_rows
            .iter()
            .filter(|j| j.mode == mode && j.criterion == criterion)
            .collect()
    }

    /// Whether the sanity check flagged `mode`.
    pub fn flagged(&self, mode: Mode) -> Option<bool> {
        self.sanity().and_then(|s| s.flagged(mode))
    }

    /// The subtitle of a chart: how many scores, from how many prompts, how many null, the
    /// judge, and its sanity flag.
    pub fn subtitle(&self, mode: Mode, criterion: &str) -> String {
        let rows = self.rows_of(mode, criterion);
        let scored: Vec<&&JudgmentRecord> = rows.iter().filter(|j| j.value().is_some()).collect();
        let mut prompts: Vec<&str> = scored.iter().map(|j| j.prompt_id.as_str()).collect();
        prompts.sort_unstable();
        prompts.dedup();
        let flag = match self.flagged(mode) {
            Some(true) => " (FLAGGED by its sanity check)",
            Some(false) => " (passed its sanity check)",
            None => "",
        };
        format!(
            "n = {} scores from {} prompts, {} null; judge {}{flag}",
            scored.len(),
            prompts.len(),
            rows.len() - scored.len(),
            self.judge_name()
        )
    }

    /// The summary table: rows with scores; a mode with none is one line under the table.
    pub fn summary_table(&self) -> HtmlTable {
        let keep: Vec<bool> = self.summary_rows.iter().map(|r| r.n > 0).collect();
        use polars::prelude::NewChunkedArray;
        let mask = polars::prelude::BooleanChunked::from_slice("keep".into(), &keep);
        let df = self
            .summary
            .filter(&mask)
            .unwrap_or_else(|_| self.summary.clone());
        let mut t = HtmlTable::from(df)
            .with_caption("Mean score per model × setting, 95% CI over prompts (bootstrap)");
        let unparsed = self.unparsed_lines();
        // Cells without a single score in a mode that has scores elsewhere: named, not hidden.
        for m in self.modes() {
            if unparsed.iter().any(|l| l.starts_with(&format!("{m}:"))) {
                continue;
            }
            let crit = m.spec().headline();
            let empty: Vec<String> = self
                .summary_rows
                .iter()
                .filter(|r| r.mode == m && r.criterion == crit && r.n == 0)
                .map(|r| format!("{}/{} ({} null)", r.model, r.setting, r.n_null))
                .collect();
            if !empty.is_empty() {
                t = t.with_note(format!(
                    "{m}: no parsed {crit} for {}, so those rows are left out",
                    empty.join(", ")
                ));
            }
        }
        for line in unparsed {
            t = t.with_note(line);
        }
        t
    }

    /// One line per mode whose scores are all null, e.g. `listwise: 0 of 40 verdicts parsed`.
    pub fn unparsed_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.modes() {
            let crit = m.spec().headline();
            let rows = self.rows_of(m, crit);
            let parsed = rows.iter().filter(|j| j.value().is_some()).count();
            if parsed == 0 && !rows.is_empty() {
                out.push(format!(
                    "{m}: 0 of {} verdicts parsed — see the raw replies with out.unparsed(Mode::{m:?})",
                    rows.len()
                ));
            }
        }
        out
    }

    /// The judge's raw replies where `mode` gave no score (at most 50).
    pub fn unparsed(&self, mode: Mode) -> HtmlTable {
        let mut seen = std::collections::HashSet::new();
        let mut raws: Vec<(String, String, String)> = Vec::new();
        for j in self
            .judgment_rows
            .iter()
            .filter(|j| j.mode == mode && j.score.is_none())
        {
            if seen.insert(j.call.clone()) && raws.len() < 50 {
                let why = j.error.clone().unwrap_or_else(|| "unparsed".into());
                raws.push((format!("{} {}", j.cell(), j.prompt_id), why, j.raw.clone()));
            }
        }
        let df = polars::prelude::DataFrame::new_infer_height(vec![
            table::col(
                "answer",
                raws.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            ),
            table::col("why", raws.iter().map(|r| r.1.clone()).collect::<Vec<_>>()),
            table::col(
                "raw reply",
                raws.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
            ),
        ])
        .unwrap_or_default();
        HtmlTable::from(df).with_caption(format!("{mode}: replies without a score"))
    }

    /// The paired comparisons (B − A), the run's headline table.
    pub fn comparisons_table(&self) -> HtmlTable {
        HtmlTable::from(self.comparisons.clone()).with_caption(
            "Paired comparisons B − A over the same prompts: mean difference with a 95% CI \
             (prompts resampled), sign-flip p-value, Holm-adjusted p, wins/ties/losses of B per \
             prompt, and the difference at equal answer length",
        )
    }

    /// The answers table (one row per answer).
    pub fn responses_table(&self) -> HtmlTable {
        HtmlTable::from(self.responses.clone())
    }

    /// The judgments table (one row per score).
    pub fn judgments_table(&self) -> HtmlTable {
        HtmlTable::from(self.judgments.clone())
    }

    /// The write-up's results figure for one mode: the total per model for each setting,
    /// with 95 % CIs, on the scale's own range.
    pub fn score_bars(&self, mode: Mode) -> Result<Figure> {
        let spec = mode.spec();
        let crit = spec.summary_metric();
        Figure::score_bars(
            &self.summary_rows,
            mode,
            crit,
            self.score_range(crit),
            &self.subtitle(mode, spec.headline()),
        )
    }

    /// The total per prompt for each model/setting, as a heatmap with a colour scale.
    pub fn prompt_heatmap(&self, mode: Mode) -> Result<Figure> {
        Figure::prompt_heatmap(
            &self.judgment_rows,
            mode,
            TOTAL,
            self.score_range(TOTAL),
            &self.subtitle(mode, TOTAL),
        )
    }

    /// The distribution of the criterion scores of one mode.
    pub fn score_distribution(&self, mode: Mode) -> Result<Figure> {
        let crit = self
            .meta
            .experiment
            .lead_judge()
            .and_then(|j| j.criteria.first().cloned())
            .unwrap_or_default();
        Figure::score_distribution(&self.judgment_rows, mode, &self.subtitle(mode, &crit))
    }

    /// Temperature × min_p heatmap of the mean total of one mode.
    pub fn sweep_heatmap(&self, mode: Mode) -> Result<Figure> {
        Figure::sweep_heatmap(
            &self.response_rows,
            &self.judgment_rows,
            mode,
            TOTAL,
            self.score_range(TOTAL),
            &self.subtitle(mode, TOTAL),
        )
    }

    /// Forest plot of the paired comparisons on the total (and pairwise verdicts) that have
    /// at least [`analysis::MIN_PROMPTS`] paired prompts; the subtitle counts the others.
    pub fn forest_plot(&self) -> Result<Figure> {
        let on_total = || {
            self.comparison_rows
                .iter()
                .filter(|c| c.criterion == TOTAL || c.criterion == OVERALL)
        };
        let picked: Vec<&analysis::Comparison> = on_total()
            .filter(|c| c.n >= analysis::MIN_PROMPTS)
            .collect();
        let too_few = on_total().filter(|c| c.n < analysis::MIN_PROMPTS).count();
        let flagged: Vec<String> = self
            .modes()
            .into_iter()
            .filter(|m| self.flagged(*m) == Some(true))
            .map(|m| m.to_string())
            .collect();
        let mut sub = format!("judge {}", self.judge_name());
        if !flagged.is_empty() {
            sub.push_str(&format!(
                "; FLAGGED by its sanity check in {}",
                flagged.join(", ")
            ));
        }
        if too_few > 0 {
            sub.push_str(&format!(
                "; {too_few} comparison(s) with fewer than {} paired prompts left out",
                analysis::MIN_PROMPTS
            ));
        } else if picked.is_empty() {
            sub.push_str("; no two cells have scores on the same prompts");
        }
        Figure::forest(&picked, &sub)
    }

    /// Agreement between every pair of scoring modes on the total.
    pub fn mode_agreement(&self) -> Vec<Agreement> {
        let modes = self.scoring_modes();
        let mut out = Vec::new();
        for (i, a) in modes.iter().enumerate() {
            for b in &modes[i + 1..] {
                out.push(analysis::mode_agreement(&self.judgment_rows, *a, *b, TOTAL));
            }
        }
        out
    }

    /// Agreement with another judge's run over the same answers, mode by mode.
    pub fn judge_agreement(&self, other: &RunOutput) -> Vec<Agreement> {
        self.scoring_modes()
            .into_iter()
            .filter(|m| other.scoring_modes().contains(m))
            .map(|m| analysis::judge_agreement(&self.judgment_rows, &other.judgment_rows, m, TOTAL))
            .collect()
    }

    /// Agreements as a table.
    pub fn agreement_table(agreements: &[Agreement]) -> HtmlTable {
        let rows: Vec<StatRow> = agreements
            .iter()
            .map(|a| {
                StatRow::new(format!("agreement {}", a.label), a.n)
                    .with("spearman", a.spearman)
                    .with("spearman_ci_low", a.spearman_ci.0)
                    .with("spearman_ci_high", a.spearman_ci.1)
                    .with("kappa", a.kappa)
                    .with("weighted_kappa", a.weighted_kappa)
                    .with("weighted_kappa_ci_low", a.weighted_kappa_ci.0)
                    .with("weighted_kappa_ci_high", a.weighted_kappa_ci.1)
                    .with("alpha", a.alpha)
                    .with("alpha_ci_low", a.alpha_ci.0)
                    .with("alpha_ci_high", a.alpha_ci.1)
            })
            .collect();
        let mut t = HtmlTable::from(stats_df(&rows).unwrap_or_default());
        if agreements.iter().all(|a| a.n == 0) {
            t = t.with_note(
                "n = 0: no answer was scored by both, so there is no agreement to report",
            );
        }
        t
    }

    /// [`RunOutput::judge_agreement`] as a table.
    pub fn judge_agreement_table(&self, other: &RunOutput) -> HtmlTable {
        Self::agreement_table(&self.judge_agreement(other)).with_caption(format!(
            "{} vs {}",
            self.judge_name(),
            other.judge_name()
        ))
    }

    /// Mean listwise score by position shown, pairwise consistency, and the pairwise
    /// expected preference for the first position.
    pub fn position_bias(&self) -> PositionBias {
        analysis::position_bias(&self.judgment_rows)
    }

    /// The judge's test-retest, for each comparison of a mode whose verdicts were asked more
    /// than once (`judge.repeats`): the ICC of a verdict over its asks, and the judge's and
    /// the prompts' shares of the variance of the comparison. Empty when every verdict was
    /// asked once.
    pub fn test_retest(&self) -> Vec<analysis::Retest> {
        analysis::test_retest(
            &self.judgment_rows,
            super::design_of(&self.meta.experiment),
            self.meta.experiment.seed,
        )
    }

    /// [`RunOutput::test_retest`] as a table: one row per comparison, its mode's ICC beside
    /// it.
    pub fn retest_table(&self) -> HtmlTable {
        let rows = self.test_retest();
        let df = table::retest_df(&rows).unwrap_or_default();
        let t = HtmlTable::from(df).with_caption(
            "Judge test-retest: the ICC of one verdict over its asks (95% CI over prompts), and \
             each comparison's variance split between the judge's asks and the prompts",
        );
        if rows.is_empty() {
            t.with_note(
                "n = 0: every verdict was asked once (set judge.repeats above 1, at a judge \
                 temperature above 0, for a test-retest)",
            )
        } else {
            t
        }
    }

    /// One findings line per mode with asks beyond the first: its ICC and the range of the
    /// judge's share of its comparisons' variance.
    pub(crate) fn retest_lines(&self) -> Vec<String> {
        let rows = self.test_retest();
        let mut out = Vec::new();
        let mut modes: Vec<(Mode, &str)> = Vec::new();
        for r in &rows {
            if !modes.contains(&(r.mode, r.criterion.as_str())) {
                modes.push((r.mode, r.criterion.as_str()));
            }
        }
        for (mode, criterion) in modes {
            let of: Vec<&analysis::Retest> = rows
                .iter()
                .filter(|r| r.mode == mode && r.criterion == criterion)
                .collect();
            let first = of[0];
            let icc = if first.icc.is_finite() {
                format!(
                    "ICC {:.2} [{:.2}, {:.2}] over {} answers",
                    first.icc, first.icc_ci.low, first.icc_ci.high, first.answers
                )
            } else {
                format!(
                    "ICC undefined ({} answers scored twice or more)",
                    first.answers
                )
            };
            let shares: Vec<f64> = of
                .iter()
                .map(|r| r.judge_share)
                .filter(|x| x.is_finite())
                .collect();
            let split = if shares.is_empty() {
                "no comparison has a prompt scored at two asks".to_string()
            } else {
                let lo = shares.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = shares.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let range = if hi - lo < 0.005 {
                    format!("{:.0} %", 100.0 * hi)
                } else {
                    format!("{:.0}-{:.0} %", 100.0 * lo, 100.0 * hi)
                };
                format!(
                    "the judge's asks make {range} of the variance of a prompt's difference \
                     in its {} comparisons (the prompts' true differences the rest)",
                    shares.len()
                )
            };
            out.push(format!(
                "Test-retest, {mode} {criterion} ({} asks of each verdict): {icc}; {split}.",
                first.repeats
            ));
        }
        out
    }

    /// How the total of `mode` goes with answer length in words.
    pub fn length_association(&self, mode: Mode) -> LengthAssociation {
        analysis::length_association(&self.response_rows, &self.judgment_rows, mode, TOTAL)
    }

    /// Win rates and Bradley-Terry strengths of the cells in a pairwise mode, with
    /// intervals over prompts.
    pub fn standings(&self, mode: Mode) -> Vec<Standing> {
        analysis::standings(
            &analysis::pairwise_outcomes(&self.judgment_rows, mode),
            self.meta.experiment.seed,
        )
    }

    /// [`RunOutput::standings`] as a table.
    pub fn standings_table(&self, mode: Mode) -> HtmlTable {
        let rows: Vec<StatRow> = self
            .standings(mode)
            .into_iter()
            .map(|s| {
                StatRow::new(s.player, s.n)
                    .with("win_rate", s.win_rate)
                    .with("win_ci_low", s.win_ci.0)
                    .with("win_ci_high", s.win_ci.1)
                    .with("bradley_terry", s.strength)
                    .with("bt_ci_low", s.strength_ci.0)
                    .with("bt_ci_high", s.strength_ci.1)
            })
            .collect();
        HtmlTable::from(stats_df(&rows).unwrap_or_default()).with_caption(format!(
            "{mode}: win rates (ties count half) and Bradley-Terry strengths, 95% CI over prompts"
        ))
    }

    /// The written pairwise verdicts, one row per pair: the verdict with each answer shown
    /// first and the outcome (a win in both orders, a draw, or two orders that disagree,
    /// which counts as a draw), with the count of each outcome in the caption. The write-up's
    /// live app reported its winner or "draw" this way.
    pub fn verdicts_table(&self) -> HtmlTable {
        use crate::judge::{pairwise::order_picks, Verdict};
        let rows: Vec<&JudgmentRecord> = self
            .judgment_rows
            .iter()
            .filter(|r| r.mode == Mode::Pairwise && r.criterion == OVERALL)
            .collect();
        let mut cols: [Vec<String>; 6] = Default::default();
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &rows {
            let a = r.cell();
            let b = format!(
                "{}/{}",
                r.other_model.as_deref().unwrap_or("?"),
                r.other_setting.as_deref().unwrap_or("?")
            );
            let [x, y] = order_picks(r.probs.as_deref());
            let say = |v: Option<Verdict>, first: &str, second: &str| match v {
                Some(Verdict::A) => first.to_string(),
                Some(Verdict::B) => second.to_string(),
                Some(Verdict::Tie) => "draw".to_string(),
                None => "no verdict".to_string(),
            };
            let outcome = match (r.consistent, r.score) {
                (Some(true), Some(1.0)) => format!("{a} wins"),
                (Some(true), Some(0.0)) => format!("{b} wins"),
                (Some(true), Some(_)) => "draw".to_string(),
                (Some(false), _) => "orders disagree (a draw)".to_string(),
                _ => "no verdict".to_string(),
            };
            *counts.entry(outcome.clone()).or_default() += 1;
            let row = [
                r.prompt_id.clone(),
                a.clone(),
                b.clone(),
                say(x, &a, &b),
                say(y, &b, &a),
                outcome,
            ];
            for (c, v) in cols.iter_mut().zip(row) {
                c.push(v);
            }
        }
        let names = [
            "prompt",
            "A",
            "B",
            "verdict, A shown first",
            "verdict, B shown first",
            "outcome",
        ];
        let df = polars::prelude::DataFrame::new(
            rows.len(),
            names
                .iter()
                .zip(cols)
                .map(|(n, v)| table::col(n, v))
                .collect(),
        )
        .unwrap_or_default();
        let tally: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let t = HtmlTable::from(df).with_caption(format!(
            "pairwise: the written verdict in both orders ({})",
            if tally.is_empty() {
                "none".to_string()
            } else {
                tally.join(", ")
            }
        ));
        if rows.is_empty() {
            t.with_note("n = 0: this run has no pairwise verdict")
        } else {
            t
        }
    }

    /// Every reliability statistic of the run as one table: mode agreement, position bias,
    /// and length association per scoring mode.
    pub fn reliability_table(&self) -> HtmlTable {
        let mut rows: Vec<StatRow> = Vec::new();
        for a in self.mode_agreement() {
            rows.push(
                StatRow::new(format!("agreement {}", a.label), a.n)
                    .with("value", a.spearman)
                    .with("ci_low", a.spearman_ci.0)
                    .with("ci_high", a.spearman_ci.1),
            );
        }
        rows.extend(self.position_bias().rows());
        let mut retested: Vec<Mode> = Vec::new();
        for r in self.test_retest() {
            if !retested.contains(&r.mode) {
                retested.push(r.mode);
                rows.push(
                    StatRow::new(
                        format!("test-retest ICC {} {}", r.mode, r.criterion),
                        r.answers as usize,
                    )
                    .with("value", r.icc)
                    .with("ci_low", r.icc_ci.low)
                    .with("ci_high", r.icc_ci.high),
                );
            }
        }
        for m in self.scoring_modes() {
            rows.push(self.length_association(m).row());
        }
        let few: Vec<String> = rows
            .iter()
            .filter(|r| r.n > 0 && (r.n as u64) < analysis::MIN_PROMPTS)
            .map(|r| format!("{} (n = {})", r.label, r.n))
            .collect();
        let mut t = HtmlTable::from(stats_df(&rows).unwrap_or_default())
            .with_caption("Judge reliability (n = 0 means no data: the judge gave no such scores)");
        if !few.is_empty() {
            t = t.with_note(format!(
                "too few to read (fewer than {} prompts or answers): {}",
                analysis::MIN_PROMPTS,
                few.join("; ")
            ));
        }
        t
    }

    /// Where the judge is one of the compared models: that model's paired advantage over the
    /// others under this judge, next to its advantage under `other` (a second judge's run
    /// over the same answers), per scoring mode.
    pub fn self_preference(&self, other: &RunOutput) -> HtmlTable {
        let judge = self.judge_name();
        let own: Vec<String> = self
            .meta
            .experiment
            .models
            .iter()
            .filter(|m| m.source.as_deref() == Some(judge.as_str()))
            .map(|m| m.name.clone())
            .collect();
        let mut rows = Vec::new();
        for m in &own {
            for c in self.comparison_rows.iter().filter(|c| c.criterion == TOTAL) {
                let (a_model, b_model) = (model_of(&c.a), model_of(&c.b));
                if a_model == b_model || (a_model != m && b_model != m) {
                    continue;
                }
                let sign = if b_model == m { 1.0 } else { -1.0 };
                // The other run may store the pair either way round.
                let under_other = other
                    .comparison_rows
                    .iter()
                    .filter(|o| o.mode == c.mode && o.criterion == TOTAL)
                    .find_map(|o| {
                        if o.a == c.a && o.b == c.b {
                            Some(o.mean_diff)
                        } else if o.a == c.b && o.b == c.a {
                            Some(-o.mean_diff)
                        } else {
                            None
                        }
                    });
                let (own_cell, other_cell) = if sign > 0.0 {
                    (&c.b, &c.a)
                } else {
                    (&c.a, &c.b)
                };
                let mut r = StatRow::new(
                    format!("{own_cell} over {other_cell} ({}, {TOTAL})", c.mode),
                    c.n as usize,
                )
                .with("advantage_self_judged", sign * c.mean_diff);
                if let Some(d) = under_other {
                    r = r.with("advantage_other_judge", sign * d);
                }
                rows.push(r);
            }
        }
        let mut t = HtmlTable::from(stats_df(&rows).unwrap_or_default()).with_caption(format!(
            "Self-preference: the judge's own model's paired advantage under {judge} and under {}",
            other.judge_name()
        ));
        if own.is_empty() {
            t = t.with_note(format!(
                "the judge {judge} is not one of the compared models"
            ));
        }
        t
    }

    /// Saves every chart of the run that has data as PNG and SVG in the results folder:
    /// per mode `scores-`, `prompts-` and `distribution-<mode>`, `sweep-<mode>` when the
    /// answers span several temperatures or min_p values, and `comparisons` (the forest
    /// plot). Returns the PNG paths.
    pub fn save_charts(&self) -> Result<Vec<PathBuf>> {
        let mut pairs: Vec<(u64, u64)> = self
            .response_rows
            .iter()
            .map(|r| (r.temperature.to_bits(), r.min_p.to_bits()))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        let mut out = Vec::new();
        let mut figs = vec![("comparisons".to_string(), self.forest_plot())];
        for m in self.modes() {
            figs.push((format!("scores-{m}"), self.score_bars(m)));
            if !m.spec().compares_two() {
                figs.push((format!("prompts-{m}"), self.prompt_heatmap(m)));
                figs.push((format!("distribution-{m}"), self.score_distribution(m)));
                if pairs.len() > 1 {
                    figs.push((format!("sweep-{m}"), self.sweep_heatmap(m)));
                }
            }
        }
        // A chart without data is skipped (its absence is said in the tables).
        for (name, fig) in figs {
            let Ok(fig) = fig else { continue };
            if fig.is_empty() {
                continue;
            }
            let png = self.dir.join(format!("{name}.png"));
            crate::store::write_atomic(&png, &fig.to_png()?)?;
            fig.save_svg(&png.with_extension("svg"))?;
            out.push(png);
        }
        Ok(out)
    }

    /// Writes the self-contained HTML report of this run (`report.html`).
    pub fn report(&self) -> Result<Saved> {
        Ok(Saved {
            what: "the report".into(),
            path: super::report::write_report(self)?,
        })
    }

    /// The judge sanity check as a table (a note when it did not run).
    pub fn sanity_table(&self) -> HtmlTable {
        match self.sanity() {
            Some(s) => s.to_table(),
            None => HtmlTable::from(polars::prelude::DataFrame::empty())
                .with_note("the judge sanity check did not run (no judge, no reference answers, or sanity_check = false)"),
        }
    }

    /// The write-up's results figure for every mode that has scores, and a note for each
    /// mode that has none.
    pub fn score_charts(&self) -> Gallery {
        let mut g = Gallery::default();
        for m in self.modes() {
            match self.score_bars(m) {
                Ok(f) => g.figures.push(f),
                Err(e) => g.notes.push(format!("{m}: {e}")),
            }
        }
        g
    }
}

fn model_of(cell: &str) -> &str {
    cell.rsplit_once('/').map_or(cell, |(m, _)| m)
}
