//! A panel of judges (`[[judges]]`) in a results folder: the answers are generated once into
//! the folder, each judge judges them into `judges/<name>/` (a full one-judge run, with its
//! own sanity check, tables and report), and the folder's own tables are the `panel`
//! pseudo-judge's: each mode pooled over the judges its sanity check did not flag there
//! ([`crate::analysis::panel::pool`]). [`RunOutput::panel_table`] says who is in, who is
//! out and why; [`RunOutput::panel_agreement_table`] how far they agree.

use super::{run_plan_locked, RunOutput};
use crate::analysis::panel::{self, Member, PanelAgreement, PANEL};
use crate::error::{Error, Result};
use crate::experiment::{sanity, Outcome, Plan, Progress, SanitySummary};
use crate::records::{CallRecord, JudgmentRecord, Mode, TOTAL};
use crate::store::Store;
use crate::table::{stats_df, HtmlTable, StatRow};
use std::path::{Path, PathBuf};

/// The folder of a panel's judges, inside its results folder.
pub const JUDGES_DIR: &str = "judges";

/// An empty table whose note says why a panel's judges did not load.
fn not_loaded(e: Error) -> HtmlTable {
    HtmlTable::from(polars::prelude::DataFrame::default())
        .with_note(format!("the panel's judges did not load: {e}"))
}

/// A judge's identity as its run recorded it.
fn judge_id(run: &RunOutput) -> &str {
    run.meta.judge.as_ref().map_or("", |j| j.id.as_str())
}

/// A judge's run as a member of a pool: its judgments, or its sanity check's rows.
fn member<'a>(name: &'a str, run: &'a RunOutput, sanity_rows: bool) -> Member<'a> {
    Member {
        name,
        id: judge_id(run),
        rows: if sanity_rows {
            &run.sanity_rows
        } else {
            &run.judgment_rows
        },
    }
}

/// One judge of a panel and whether it pools in `mode`.
fn included(run: &RunOutput, mode: Mode, include_flagged: bool) -> bool {
    include_flagged || run.flagged(mode) != Some(true)
}

/// Runs a panel's plan into `dir` (the caller holds its lock): the answers, each judge into
/// `judges/<name>/`, then the pooled tables.
pub(crate) fn run_panel(plan: &Plan, dir: &Path, progress: &mut dyn Progress) -> Result<RunOutput> {
    let mut answers = plan.clone();
    answers.panel = Vec::new();
    answers.config.judges = Vec::new();
    let top = crate::experiment::run_locked(&answers, dir, progress)?;
    let mut runs: Vec<(String, RunOutput)> = Vec::new();
    if top.failures.is_empty() {
        for (name, one) in &plan.panel {
            let sub = dir.join(JUDGES_DIR).join(name);
            progress.note(&format!("panel: judge {name}, into {}", sub.display()));
            let store = Store::open(&sub)?;
            let _lock = store.lock()?;
            super::seed_answers(&store, &top.responses)?;
            let mut one = one.clone();
            one.device = plan.device;
            runs.push((name.clone(), run_plan_locked(&one, &sub, progress)?));
        }
    } else {
        progress.note(
            "panel: some answers failed, so no judge judged; run again to retry them \
             (every judge must judge the same answers)",
        );
    }
    let outcome = pooled(plan, top, &runs);
    // The pooled rows are stored as the folder's calls, one per row, so that the folder
    // loads ([`RunOutput::load`]) like any other.
    let store = Store::open(dir)?;
    for (stream, rows) in [
        ("judgments", &outcome.judgments),
        ("sanity", &outcome.sanity_rows),
    ] {
        let calls = rows.iter().map(|r| CallRecord {
            key: r.key.clone(),
            rows: vec![r.clone()],
        });
        store.append_missing(stream, calls, |_| true)?;
    }
    RunOutput::write(plan, outcome, dir)
}

/// The panel's outcome: the answers, the pooled judgments and sanity check, and every
/// judge's failures, warnings and usage, each named by its judge.
fn pooled(plan: &Plan, top: Outcome, runs: &[(String, RunOutput)]) -> Outcome {
    let c = &plan.config;
    let policy = c
        .lead_judge()
        .map(|j| j.low_mass_policy)
        .unwrap_or_default();
    let include_flagged = c.panel.include_flagged;
    let mut modes: Vec<Mode> = Vec::new();
    for j in &c.judges {
        for m in &j.modes {
            if !modes.contains(m) {
                modes.push(*m);
            }
        }
    }
    let mut o = top;
    let mut warnings = Vec::new();
    let members_of = |mode: Mode, sanity_rows: bool| -> Vec<Member<'_>> {
        runs.iter()
            .filter(|(_, r)| included(r, mode, include_flagged))
            .map(|(name, r)| member(name, r, sanity_rows))
            .collect()
    };
    let (sets, skipped) = sanity::answers(plan);
    let mut summary = SanitySummary::default();
    for &mode in &modes {
        for (name, r) in runs {
            if r.flagged(mode) == Some(true) {
                warnings.push(if include_flagged {
                    format!(
                        "panel: judge {name} is flagged in {mode} by its sanity check, and pooled \
                         all the same (`include_flagged`)"
                    )
                } else {
                    format!(
                        "panel: judge {name} is flagged in {mode} by its sanity check and left \
                         out of the panel's {mode} verdicts"
                    )
                });
            }
        }
        let members = members_of(mode, false);
        if members.is_empty() {
            if !runs.is_empty() {
                warnings.push(format!(
                    "panel: no judge passed the sanity check in {mode}, so the panel has no \
                     {mode} verdicts"
                ));
            }
            continue;
        }
        o.judgments.extend(panel::pool(&members, mode, policy));
        let rows = panel::pool(&members_of(mode, true), mode, policy);
        if !sets.is_empty() && !rows.is_empty() {
            summary
                .modes
                .push(sanity::tally(mode, &sets, &rows, skipped));
        }
        o.sanity_rows.extend(rows);
    }
    o.sanity = (!summary.modes.is_empty()).then_some(summary);
    if let Some(s) = &o.sanity {
        warnings.extend(s.warnings().into_iter().map(|w| format!("panel: {w}")));
    }
    o.judge = (!runs.is_empty()).then(|| {
        let ids = runs.iter().map(|(_, r)| judge_id(r));
        (PANEL.to_string(), panel::panel_id(ids))
    });
    for (name, r) in runs {
        o.failures
            .extend(r.failures().iter().map(|f| crate::experiment::Failure {
                stage: format!("{name}: {}", f.stage),
                ..f.clone()
            }));
        o.warnings
            .extend(r.warnings().iter().map(|w| format!("{name}: {w}")));
        o.usage.extend(
            r.meta
                .usage
                .iter()
                .filter(|u| !u.stage.starts_with("generate"))
                .cloned(),
        );
    }
    o.warnings.extend(warnings);
    o
}

impl RunOutput {
    /// A panel of this run's judge and the judges of `others`, runs over the same answers
    /// (for instance [`RunOutput::rejudge`]s of this one), written to `out` as an
    /// experiment with `[[judges]]` would be: each judge's folder under `out/judges/` is
    /// given the answers and the calls its run stored, so nothing is judged again.
    pub fn panel_with(&self, others: &[&RunOutput], out: impl AsRef<Path>) -> Result<RunOutput> {
        self.panel_with_progress(
            others,
            out.as_ref(),
            &mut crate::experiment::Lines::default(),
        )
    }

    /// [`RunOutput::panel_with`] with a progress sink of your choice.
    pub fn panel_with_progress(
        &self,
        others: &[&RunOutput],
        out: &Path,
        progress: &mut dyn Progress,
    ) -> Result<RunOutput> {
        let runs: Vec<&RunOutput> = std::iter::once(self)
            .chain(others.iter().copied())
            .collect();
        let mut cfg = self.config();
        cfg.judge = None;
        cfg.judges = Vec::new();
        for r in &runs {
            let j = r.meta.experiment.judge.clone().ok_or_else(|| {
                Error::config(
                    format!("{}: run.json", r.dir.display()),
                    "has no judge (a panel pools runs of one judge each)",
                )
            })?;
            cfg.judges.push(j);
        }
        let plan = cfg.plan()?;
        let store = Store::open(out)?;
        let _lock = store.lock()?;
        // The answers too, or the panel would generate them again.
        super::seed_answers(&store, &self.response_rows)?;
        for ((name, _), r) in plan.panel.iter().zip(&runs) {
            let sub = Store::open(out.join(JUDGES_DIR).join(name))?;
            let _sub_lock = sub.lock()?;
            super::seed_answers(&sub, &r.response_rows)?;
            let from = Store::open(&r.dir)?;
            for stream in ["judgments", "sanity"] {
                sub.append_missing(stream, from.load::<CallRecord>(stream)?, |_| true)?;
            }
        }
        run_plan_locked(&plan, out, progress)
    }

    /// Whether this run is a panel's (its experiment has `[[judges]]`).
    pub fn is_panel(&self) -> bool {
        !self.meta.experiment.judges.is_empty()
    }

    /// A panel's judges, each its own run loaded from `judges/<name>/`, in the experiment's
    /// order; empty for a run of one judge.
    pub fn panel_runs(&self) -> Result<Vec<(String, RunOutput)>> {
        let mut out = Vec::new();
        for (i, j) in self.meta.experiment.judges.iter().enumerate() {
            let name = crate::experiment::config::panel_name(j);
            let dir = self.dir.join(JUDGES_DIR).join(&name);
            let run = RunOutput::load(&dir).map_err(|e| {
                Error::invalid(
                    format!("{}: judges[{i}] ({name})", self.dir.display()),
                    format!("its run in {} did not load: {e}", dir.display()),
                )
            })?;
            out.push((name, run));
        }
        Ok(out)
    }

    /// The folder of one panel judge's run.
    pub fn panel_dir(&self, name: &str) -> PathBuf {
        self.dir.join(JUDGES_DIR).join(name)
    }

    /// Per judge of a panel and mode: its sanity check (`passed`, `FLAGGED`, or not
    /// checked), whether the panel pooled it there, how many answers it scored, and its
    /// mean total; the panel's own row last. A judge's run that does not load is a note.
    pub fn panel_table(&self) -> HtmlTable {
        let runs = match self.panel_runs() {
            Ok(r) => r,
            Err(e) => return not_loaded(e),
        };
        let include_flagged = self.meta.experiment.panel.include_flagged;
        let mut rows = Vec::new();
        let mut body = |name: &str, run: &RunOutput, pooled: Option<bool>| {
            for mode in run.modes() {
                let total: Vec<f64> = run
                    .judgment_rows
                    .iter()
                    .filter(|j| j.mode == mode && (j.criterion == TOTAL || j.is_preference()))
                    .filter_map(JudgmentRecord::value)
                    .collect();
                let sanity = match run.flagged(mode) {
                    Some(true) => "FLAGGED",
                    Some(false) => "passed",
                    None => "not checked",
                };
                let mut r = StatRow::new(format!("{name}, {mode}"), total.len())
                    .with_text("sanity", sanity)
                    .with_text(
                        "in_panel",
                        match pooled {
                            None => "(the panel)".to_string(),
                            Some(_) if included(run, mode, include_flagged) => "yes".into(),
                            Some(_) => "no: flagged".into(),
                        },
                    );
                if !total.is_empty() {
                    r = r.with("mean", total.iter().sum::<f64>() / total.len() as f64);
                }
                rows.push(r);
            }
        };
        for (name, run) in &runs {
            body(name, run, Some(true));
        }
        body(PANEL, self, None);
        let mut t = HtmlTable::from(stats_df(&rows).unwrap_or_default()).with_caption(
            "Panel: each judge's sanity check and whether the panel pools it, per mode \
             (mean: of totals, or of preferences for the first answer)",
        );
        if runs.is_empty() {
            t = t.with_note("not a panel: this run has one judge");
        }
        t
    }

    /// A panel's agreement per scoring and verdict mode (see
    /// [`crate::analysis::panel::panel_agreement`]): over every judge that ran the mode,
    /// flagged or not, so that the table shows how far the flagged ones stray.
    pub fn panel_agreement(&self) -> Result<Vec<PanelAgreement>> {
        let runs = self.panel_runs()?;
        let policy = self
            .meta
            .experiment
            .lead_judge()
            .map(|j| j.low_mass_policy)
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut modes: Vec<Mode> = Vec::new();
        for (_, r) in &runs {
            for m in r.modes() {
                if !modes.contains(&m) {
                    modes.push(m);
                }
            }
        }
        for mode in modes {
            let members: Vec<Member<'_>> = runs
                .iter()
                .filter(|(_, r)| r.modes().contains(&mode))
                .map(|(n, r)| member(n, r, false))
                .collect();
            if members.len() >= 2 {
                out.extend(panel::panel_agreement(&members, mode, policy));
            }
        }
        Ok(out)
    }

    /// [`RunOutput::panel_agreement`] as a table.
    pub fn panel_agreement_table(&self) -> HtmlTable {
        let ag = match self.panel_agreement() {
            Ok(a) => a,
            Err(e) => return not_loaded(e),
        };
        let rows: Vec<StatRow> = ag
            .iter()
            .map(|a| {
                StatRow::new(format!("{}, {}", a.mode, a.label), a.n)
                    .with_text("measure", &a.statistic)
                    .with("prompts", a.prompts as f64)
                    .with("value", a.value)
                    .with("ci_low", a.ci.0)
                    .with("ci_high", a.ci.1)
            })
            .collect();
        let mut t = HtmlTable::from(stats_df(&rows).unwrap_or_default()).with_caption(
            "Panel agreement: Krippendorff's alpha (interval) over scores, Fleiss' kappa over \
             verdicts (A, B, tie); 95 % CIs resample prompts",
        );
        if ag.iter().all(|a| a.n == 0) {
            t = t.with_note("n = 0: no answer was scored by two judges of the panel");
        }
        t
    }

    /// Where a panel judge is also a compared model: its own model's paired advantage under
    /// itself and under each other judge ([`RunOutput::self_preference`]), one table per
    /// pair of judges in which the first is a compared model.
    pub fn panel_self_preference(&self) -> Result<Vec<HtmlTable>> {
        let runs = self.panel_runs()?;
        let sources: Vec<&str> = self
            .meta
            .experiment
            .models
            .iter()
            .filter_map(|m| m.source.as_deref())
            .collect();
        let mut out = Vec::new();
        for (name, run) in &runs {
            if !sources.contains(&run.judge_name().as_str()) {
                continue;
            }
            for (other, o) in &runs {
                if other != name {
                    out.push(run.self_preference(o));
                }
            }
        }
        Ok(out)
    }
}
