//! The run's judge against human labels: per labelled pair of cells, the judge's verdict on
//! every prompt in the primary mode, set against the labels ([`crate::analysis::calibration`]).

use super::RunOutput;
use crate::analysis::calibration::{calibrate, Calibration, Judged};
use crate::analysis::summary::excluded;
use crate::error::Result;
use crate::experiment::labels::{load_labels, HumanLabel};
use crate::judge::spec::{Pass, PREFERENCE_MARGIN};
use crate::judge::LowMassPolicy;
use crate::keys::derive_seed;
use crate::records::{Mode, TOTAL};
use crate::table::HtmlTable;
use std::collections::BTreeMap;
use std::path::Path;

/// The labels of one pair of cells, and those left out.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationRun {
    /// One result per labelled pair of cells with a judged prompt.
    pub results: Vec<Calibration>,
    /// The mode whose verdicts were set against the labels (the primary mode).
    pub mode: Option<Mode>,
    /// Labels left out: their answers are not the run's (`a_response`/`b_response`), or
    /// the judge gave no verdict on that prompt.
    pub left_out: usize,
}

impl RunOutput {
    /// The judge against the labels of the experiment's `labels` file; `None` without one.
    pub fn calibration(&self) -> Result<Option<CalibrationRun>> {
        match &self.meta.experiment.labels {
            Some(p) => {
                let path = if p.is_relative() {
                    self.config().base_dir().join(p)
                } else {
                    p.clone()
                };
                self.calibrate(&path).map(Some)
            }
            None => Ok(None),
        }
    }

    /// [`RunOutput::calibration`] as a table; a note where the experiment names no labels
    /// file or it could not be read.
    pub fn calibration_table(&self) -> HtmlTable {
        let empty = || HtmlTable::from(polars::prelude::DataFrame::default());
        match self.calibration() {
            Ok(Some(c)) => c.to_table(),
            Ok(None) => empty()
                .with_note("n = 0: this experiment names no human labels (labels = \"…jsonl\")"),
            Err(e) => empty().with_note(format!("the human labels could not be read: {e}")),
        }
    }

    /// The judge against the labels in `path` (JSONL; see [`crate::experiment::labels`]).
    pub fn calibrate(&self, path: &Path) -> Result<CalibrationRun> {
        let labels = load_labels(path)?;
        let judge = self.meta.experiment.lead_judge();
        let policy = judge
            .map(|j| j.low_mass_policy)
            .unwrap_or(LowMassPolicy::Exclude);
        let Some(mode) = judge.and_then(|j| j.primary()) else {
            return Ok(CalibrationRun {
                results: Vec::new(),
                mode: None,
                left_out: labels.len(),
            });
        };
        // The labelled pairs of cells, in file order.
        let mut pairs: Vec<(String, String)> = Vec::new();
        for l in &labels {
            let k = (l.a.clone(), l.b.clone());
            if !pairs.contains(&k) {
                pairs.push(k);
            }
        }
        let mut results = Vec::new();
        let mut left_out = 0;
        for (a, b) in pairs {
            let verdicts = self.verdicts(mode, &a, &b, policy);
            let mut rows: Vec<Judged> = verdicts
                .iter()
                .map(|(p, v)| Judged {
                    prompt: p.clone(),
                    judge: *v,
                    human: None,
                })
                .collect();
            for l in labels.iter().filter(|l| l.a == a && l.b == b) {
                match rows.iter_mut().find(|r| r.prompt == l.prompt_id) {
                    Some(r) if self.reads_the_same_answers(l) => {
                        r.human = Some(l.preferred.b_wins())
                    }
                    _ => left_out += 1,
                }
            }
            let seed = derive_seed(self.meta.experiment.seed, &["calibration", &a, &b]);
            results.extend(calibrate(&a, &b, &rows, seed));
        }
        Ok(CalibrationRun {
            results,
            mode: Some(mode),
            left_out,
        })
    }

    /// Whether the run's answers are the ones the label pinned (when it pinned any).
    fn reads_the_same_answers(&self, l: &HumanLabel) -> bool {
        let answer = |cell: &str| {
            self.response_rows
                .iter()
                .find(|r| {
                    r.prompt_id == l.prompt_id
                        && r.sample == 0
                        && format!("{}/{}", r.model, r.setting) == cell
                })
                .map(|r| r.key.as_str())
        };
        [(&l.a, &l.a_response), (&l.b, &l.b_response)]
            .iter()
            .all(|(cell, pinned)| pinned.as_deref().is_none_or(|k| answer(cell) == Some(k)))
    }

    /// The judge's verdict for B over A per prompt in `mode`, 1, 0.5 or 0: B's total above,
    /// within the mode's sanity margin of, or below A's (a preference mode: B's mean
    /// preference above, within 0.1 of, or below an even 0.5).
    fn verdicts(&self, mode: Mode, a: &str, b: &str, policy: LowMassPolicy) -> Vec<(String, f64)> {
        let mut by: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for j in self
            .judgment_rows
            .iter()
            .filter(|j| j.mode == mode && !excluded(j.flag, policy))
        {
            let cell = j.cell();
            if j.is_preference() {
                let other = format!(
                    "{}/{}",
                    j.other_model.as_deref().unwrap_or(""),
                    j.other_setting.as_deref().unwrap_or("")
                );
                let Some(s) = j.score else { continue };
                // score is the shown-first answer's (this row's) win share.
                let b_share = if cell == a && other == b {
                    1.0 - s
                } else if cell == b && other == a {
                    s
                } else {
                    continue;
                };
                by.entry(j.prompt_id.clone()).or_default().0.push(b_share);
            } else if j.criterion == TOTAL {
                let Some(v) = j.value() else { continue };
                let e = by.entry(j.prompt_id.clone()).or_default();
                if cell == a {
                    e.0.push(v);
                } else if cell == b {
                    e.1.push(v);
                }
            }
        }
        let mean = crate::analysis::resample::mean;
        // A verdict of A, tie or B, as a human gives one: a difference within the margin the
        // sanity check asks of this mode (0.25 points on an expected total, 0.5 on a text
        // total, 0.1 around an even preference) is a tie.
        let three = |d: f64, margin: f64| {
            if d > margin {
                1.0
            } else if d < -margin {
                0.0
            } else {
                0.5
            }
        };
        let spec = mode.spec();
        let margin = match spec.pass {
            Pass::Margin(m) => m,
            Pass::Preference(_) => PREFERENCE_MARGIN,
        };
        by.into_iter()
            .filter_map(|(p, (x, y))| {
                if spec.compares_two() {
                    (!x.is_empty()).then(|| (p, three(mean(&x) - 0.5, margin)))
                } else if x.is_empty() || y.is_empty() {
                    None
                } else {
                    Some((p, three(mean(&y) - mean(&x), margin)))
                }
            })
            .collect()
    }
}

impl CalibrationRun {
    /// One sentence per labelled pair, and what was left out.
    pub fn lines(&self) -> Vec<String> {
        let mode = self.mode.map(|m| m.to_string()).unwrap_or_default();
        let mut v: Vec<String> = self
            .results
            .iter()
            .map(|c| format!("calibration ({mode}): {}", c.describe()))
            .collect();
        if self.left_out > 0 {
            v.push(format!(
                "calibration: {} labels left out (their answers are not this run's, or the \
                 judge gave no verdict there)",
                self.left_out
            ));
        }
        v
    }

    /// A table: one row per labelled pair of cells.
    pub fn to_table(&self) -> HtmlTable {
        let df = crate::table::calibration_df(&self.results).unwrap_or_default();
        let mut t = HtmlTable::from(df).with_caption(format!(
            "The judge ({}) against human labels: agreement on the labelled prompts, and the \
             win rate of B corrected for the judge's measured error (prediction-powered, 95% CI)",
            self.mode.map(|m| m.to_string()).unwrap_or_default()
        ));
        if self.left_out > 0 {
            t = t.with_note(format!("{} labels left out", self.left_out));
        }
        t
    }

    /// Shows the table in a notebook.
    pub fn evcxr_display(&self) {
        crate::evcxr::show_html(&self.to_table().to_html());
    }
}
