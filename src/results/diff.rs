//! Two runs side by side: the same cells and modes, paired by prompt. For two judges, two
//! template versions or two code versions of one experiment, [`RunOutput::diff`] says per
//! cell and mode how far the second run's scores moved from the first's (mean over prompts
//! of B − A, with a 95 % CI that resamples prompts and the sign-flip p-value), how many
//! answers and scores changed, and what each run's sanity check said of its judge.

use super::RunOutput;
use crate::analysis::paired::sign_flip_p;
use crate::analysis::resample::{mean, Clusters};
use crate::analysis::summary::{cells, excluded};
use crate::error::Result;
use crate::judge::LowMassPolicy;
use crate::keys::derive_seed;
use crate::plot::{Figure, Forest};
use crate::records::Mode;
use crate::table::{escape, HtmlTable};
use polars::prelude::{Column, DataFrame};
use std::collections::BTreeMap;

/// One cell in one mode, in both runs.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffRow {
    /// Judge mode.
    pub mode: Mode,
    /// The mode's headline metric (`total`, or `win_rate` for a preference mode).
    pub criterion: String,
    /// Model name.
    pub model: String,
    /// Setting name.
    pub setting: String,
    /// Prompts with a score in both runs.
    pub prompts: u64,
    /// Mean over those prompts in run A.
    pub mean_a: f64,
    /// Mean over those prompts in run B.
    pub mean_b: f64,
    /// Mean over prompts of B − A.
    pub diff: f64,
    /// Lower end of its 95 % CI (prompts resampled).
    pub ci_low: f64,
    /// Upper end.
    pub ci_high: f64,
    /// Paired sign-flip p-value of B − A over prompts.
    pub p_value: f64,
    /// Of those prompts, how many had a different answer in the two runs (a different text,
    /// or an answer in one run only).
    pub answers_changed: u64,
    /// Of those prompts, how many got a different score.
    pub scores_changed: u64,
    /// Prompts scored in one run only.
    pub unmatched: u64,
}

/// Two runs side by side ([`RunOutput::diff`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RunDiff {
    /// Run A's name and folder.
    pub a: String,
    /// Run B's name and folder.
    pub b: String,
    /// Run A's judge.
    pub judge_a: String,
    /// Run B's judge.
    pub judge_b: String,
    /// One row per cell and mode the two runs share, in run A's order.
    pub rows: Vec<DiffRow>,
    /// Each run's sanity check, one line per mode (`A: …`, `B: …`).
    pub sanity: Vec<String>,
    /// Cells and modes in one run only, or without a prompt scored in both.
    pub only_in_one: Vec<String>,
}

/// Per cell (model, setting, mode), the headline metric's mean per prompt.
type PerPrompt = BTreeMap<(String, String, Mode), (String, BTreeMap<String, f64>)>;

fn per_prompt(run: &RunOutput) -> PerPrompt {
    let policy = run
        .meta
        .experiment
        .judge
        .as_ref()
        .map(|j| j.low_mass_policy)
        .unwrap_or(LowMassPolicy::Exclude);
    let mut out = PerPrompt::new();
    for ((model, setting, mode, criterion), values) in cells(&run.judgment_rows) {
        if criterion != mode.spec().summary_metric() {
            continue;
        }
        let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (prompt, v, flag) in values {
            if let (Some(v), false) = (v, excluded(flag, policy)) {
                by.entry(prompt).or_default().push(v);
            }
        }
        let means = by.into_iter().map(|(p, vs)| (p, mean(&vs))).collect();
        out.insert((model, setting, mode), (criterion, means));
    }
    out
}

/// Per (model, setting, prompt), the answers' texts (sorted by sample).
fn answers(run: &RunOutput) -> BTreeMap<(String, String, String), Vec<Option<String>>> {
    let mut out: BTreeMap<_, Vec<(u32, Option<String>)>> = BTreeMap::new();
    for r in &run.response_rows {
        out.entry((r.model.clone(), r.setting.clone(), r.prompt_id.clone()))
            .or_default()
            .push((r.sample, r.text.clone()));
    }
    out.into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|(s, _)| *s);
            (k, v.into_iter().map(|(_, t)| t).collect())
        })
        .collect()
}

impl RunOutput {
    /// This run (A) and `other` (B) side by side: per cell and mode both have, B − A over
    /// the prompts both scored, with what changed.
    pub fn diff(&self, other: &RunOutput) -> RunDiff {
        let (pa, pb) = (per_prompt(self), per_prompt(other));
        let (aa, ab) = (answers(self), answers(other));
        let seed = self.meta.experiment.seed;
        // Run A's order of cells and modes.
        let mut order: Vec<(String, String, Mode)> = Vec::new();
        for r in &self.summary_rows {
            let k = (r.model.clone(), r.setting.clone(), r.mode);
            if !order.contains(&k) {
                order.push(k);
            }
        }
        let mut rows = Vec::new();
        let mut only_in_one = Vec::new();
        for k in &order {
            let (Some((criterion, a)), Some((_, b))) = (pa.get(k), pb.get(k)) else {
                if pa.contains_key(k) {
                    only_in_one.push(format!("{}/{} {} only in A", k.0, k.1, k.2));
                }
                continue;
            };
            let both: Vec<(&String, f64, f64)> = a
                .iter()
                .filter_map(|(p, va)| b.get(p).map(|vb| (p, *va, *vb)))
                .collect();
            let unmatched = (a.len() + b.len() - 2 * both.len()) as u64;
            if both.is_empty() {
                only_in_one.push(format!(
                    "{}/{} {}: no prompt has a score in both runs (A scored {}, B {}; null and \
                     excluded low-mass scores do not count)",
                    k.0,
                    k.1,
                    k.2,
                    a.len(),
                    b.len()
                ));
                continue;
            }
            let diffs: Vec<f64> = both.iter().map(|(_, va, vb)| vb - va).collect();
            let s = derive_seed(seed, &["diff", &k.0, &k.1, k.2.as_str()]);
            let ci = Clusters::from_pairs(both.iter().map(|(p, va, vb)| ((*p).clone(), vb - va)))
                .mean_interval(s, |x| *x);
            let answers_changed = both
                .iter()
                .filter(|(p, _, _)| {
                    let key = (k.0.clone(), k.1.clone(), (*p).clone());
                    aa.get(&key) != ab.get(&key)
                })
                .count() as u64;
            rows.push(DiffRow {
                mode: k.2,
                criterion: criterion.clone(),
                model: k.0.clone(),
                setting: k.1.clone(),
                prompts: both.len() as u64,
                mean_a: mean(&both.iter().map(|x| x.1).collect::<Vec<_>>()),
                mean_b: mean(&both.iter().map(|x| x.2).collect::<Vec<_>>()),
                diff: mean(&diffs),
                ci_low: ci.low,
                ci_high: ci.high,
                p_value: sign_flip_p(&diffs, s),
                answers_changed,
                scores_changed: diffs.iter().filter(|d| d.abs() > 1e-9).count() as u64,
                unmatched,
            });
        }
        for k in pb.keys() {
            if !pa.contains_key(k) {
                only_in_one.push(format!("{}/{} {} only in B", k.0, k.1, k.2));
            }
        }
        let sanity_lines = |tag: &str, run: &RunOutput| -> Vec<String> {
            match run.sanity() {
                Some(s) => s
                    .describe()
                    .into_iter()
                    .map(|l| format!("{tag}: {l}"))
                    .collect(),
                None => vec![format!("{tag}: the judge sanity check did not run")],
            }
        };
        let mut sanity = sanity_lines("A", self);
        sanity.extend(sanity_lines("B", other));
        let name = |r: &RunOutput| format!("{} ({})", r.meta.experiment.name, r.dir.display());
        RunDiff {
            a: name(self),
            b: name(other),
            judge_a: self.judge_name(),
            judge_b: other.judge_name(),
            rows,
            sanity,
            only_in_one,
        }
    }
}

impl RunDiff {
    /// The rows as a table.
    pub fn table(&self) -> Result<DataFrame> {
        let r = &self.rows;
        let s = |f: fn(&DiffRow) -> String| r.iter().map(f).collect::<Vec<_>>();
        let f = |f: fn(&DiffRow) -> f64| {
            r.iter()
                .map(|x| Some(f(x)).filter(|v| v.is_finite()))
                .collect::<Vec<_>>()
        };
        let u = |f: fn(&DiffRow) -> u64| r.iter().map(f).collect::<Vec<_>>();
        DataFrame::new(
            r.len(),
            vec![
                Column::new("mode".into(), s(|x| x.mode.to_string())),
                Column::new("criterion".into(), s(|x| x.criterion.clone())),
                Column::new("model".into(), s(|x| x.model.clone())),
                Column::new("setting".into(), s(|x| x.setting.clone())),
                Column::new("prompts".into(), u(|x| x.prompts)),
                Column::new("mean_a".into(), f(|x| x.mean_a)),
                Column::new("mean_b".into(), f(|x| x.mean_b)),
                Column::new("diff".into(), f(|x| x.diff)),
                Column::new("ci_low".into(), f(|x| x.ci_low)),
                Column::new("ci_high".into(), f(|x| x.ci_high)),
                Column::new("p_value".into(), f(|x| x.p_value)),
                Column::new("answers_changed".into(), u(|x| x.answers_changed)),
                Column::new("scores_changed".into(), u(|x| x.scores_changed)),
                Column::new("unmatched".into(), u(|x| x.unmatched)),
            ],
        )
        .map_err(|e| crate::Error::Internal(format!("diff table: {e}")))
    }

    /// The table with a caption and the sanity lines under it.
    pub fn to_table(&self) -> Result<HtmlTable> {
        let mut t = HtmlTable::from(self.table()?).with_caption(format!(
            "B − A per cell and mode, over the prompts both runs scored (95% CI, prompts \
             resampled): A = {} judged by {}, B = {} judged by {}",
            self.a, self.judge_a, self.b, self.judge_b
        ));
        for l in self.sanity.iter().chain(&self.only_in_one) {
            t = t.with_note(l.clone());
        }
        Ok(t)
    }

    /// Forest plot of B − A per cell and mode.
    pub fn forest(&self) -> Figure {
        Figure::of_forest(Forest::grouped(
            "Run B − run A per cell, 95% CI over prompts",
            format!(
                "A: {} ({}); B: {} ({})",
                self.a, self.judge_a, self.b, self.judge_b
            ),
            self.rows.iter().map(|r| {
                (
                    // A preference mode's cells are compared on their win rates.
                    if r.mode.spec().compares_two() {
                        "B − A (win rate)".to_string()
                    } else {
                        "B − A (points)".to_string()
                    },
                    format!("{}/{} ({}, n={})", r.model, r.setting, r.mode, r.prompts),
                    (r.diff, r.ci_low, r.ci_high),
                )
            }),
        ))
    }

    /// One line per row, and the sanity lines.
    pub fn lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "A = {} (judge {}), B = {} (judge {})",
            self.a, self.judge_a, self.b, self.judge_b
        )];
        for r in &self.rows {
            v.push(format!(
                "{}/{} {} {}: A {:.2}, B {:.2}, B − A {:+.2} [{:+.2}, {:+.2}] over {} prompts \
                 (p = {:.3}); {} answers and {} scores changed{}",
                r.model,
                r.setting,
                r.mode,
                r.criterion,
                r.mean_a,
                r.mean_b,
                r.diff,
                r.ci_low,
                r.ci_high,
                r.prompts,
                r.p_value,
                r.answers_changed,
                r.scores_changed,
                if r.unmatched > 0 {
                    format!("; {} prompts scored in one run only", r.unmatched)
                } else {
                    String::new()
                }
            ));
        }
        if self.rows.is_empty() {
            v.push("The two runs share no cell and mode with scores: nothing to compare.".into());
        }
        v.extend(self.sanity.iter().cloned());
        v.extend(self.only_in_one.iter().cloned());
        v
    }

    /// A self-contained HTML page: the lines, the forest plot and the table.
    pub fn to_html(&self) -> Result<String> {
        let mut h = super::report::page_head("llm-judge: run diff");
        h.push_str("<h1>Run diff</h1>\n<ul>");
        for l in self.lines() {
            h.push_str(&format!("<li>{}</li>", escape(&l)));
        }
        h.push_str("</ul>\n");
        let fig = self.forest();
        if !fig.is_empty() {
            h.push_str(&format!(
                "<p><img alt=\"run diff\" src=\"data:image/png;base64,{}\"></p>\n",
                fig.to_png_base64()?
            ));
        }
        h.push_str(&self.to_table()?.to_html());
        h.push_str("</body></html>\n");
        Ok(h)
    }

    /// Shows the forest plot and the table in a notebook.
    pub fn evcxr_display(&self) {
        if !self.rows.is_empty() {
            self.forest().evcxr_display();
        }
        match self.to_table() {
            Ok(t) => crate::evcxr::show_html(&t.to_html()),
            Err(e) => println!("{e}"),
        }
    }
}

impl std::fmt::Display for RunDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in self.lines() {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}
