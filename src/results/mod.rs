//! A finished run: its tables and records ([`RunOutput`]), written to and loaded from a
//! results folder, with one-call views for notebook cells ([`views`]), the findings in words
//! ([`findings`]), the self-contained HTML report ([`report`]), and two runs side by side
//! ([`diff`]).
//!
//! A results folder holds `responses`, `judgments`, `summary` and `comparisons` as Parquet
//! and CSV, `run.json` (the experiment, models with their identities, every sampling value,
//! the judge, the sanity check, warnings and failures), the append-only record stores it
//! resumes from (`*.jsonl`) and `run.log`.

pub mod calibrate;
pub mod diff;
pub mod display;
pub mod duel;
pub mod findings;
pub mod meta;
pub mod panel;
pub mod report;
pub mod usage;
pub mod views;

use crate::analysis::{comparisons, summarize, Comparison, Design, SummaryRow};
use crate::error::Result;
use crate::experiment::{
    Experiment, ExperimentConfig, Failure, Lines, Outcome, Plan, Progress, SanitySummary,
};
use crate::judge::JudgeConfig;
use crate::records::{CallRecord, JudgmentRecord, ResponseRecord};
use crate::store::Store;
use crate::table::{self, save_table};
pub use meta::RunMeta;
use polars::prelude::DataFrame;
use std::path::{Path, PathBuf};

/// What a run returns: the tables, the records behind them, and where they were written.
/// Load an earlier run with [`RunOutput::load`].
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// One row per answer.
    pub responses: DataFrame,
    /// One row per score.
    pub judgments: DataFrame,
    /// Model × setting × mode × criterion: n, mean, std, bootstrap 95 % CI.
    pub summary: DataFrame,
    /// Paired comparisons between cells: B − A with CI, p-values, wins/ties/losses.
    pub comparisons: DataFrame,
    /// The rows behind `responses`: one record per answer.
    pub response_rows: Vec<ResponseRecord>,
    /// The rows behind `judgments`: one record per score.
    pub judgment_rows: Vec<JudgmentRecord>,
    /// The sanity check's judgment rows (good vs bad answers; no table of their own).
    pub sanity_rows: Vec<JudgmentRecord>,
    /// The rows behind `summary`.
    pub summary_rows: Vec<SummaryRow>,
    /// The rows behind `comparisons`.
    pub comparison_rows: Vec<Comparison>,
    /// What produced the run, as in `run.json`: the experiment, models, settings, judge,
    /// the sanity check, warnings and failures.
    pub meta: RunMeta,
    /// The results folder.
    pub dir: PathBuf,
}

impl Experiment {
    /// Runs into `results_dir` with a few progress lines on stdout (the full log goes to
    /// `run.log` there), and writes the tables.
    pub fn run(&self, results_dir: impl AsRef<Path>) -> Result<RunOutput> {
        self.run_with(results_dir, &mut Lines::default())
    }

    /// Runs with a progress sink of your choice.
    pub fn run_with(
        &self,
        results_dir: impl AsRef<Path>,
        progress: &mut dyn Progress,
    ) -> Result<RunOutput> {
        run_plan(&self.plan()?, results_dir.as_ref(), progress)
    }
}

/// Runs a checked plan into `dir` and writes its tables and `run.json`.
pub fn run_plan(plan: &Plan, dir: &Path, progress: &mut dyn Progress) -> Result<RunOutput> {
    // The lock covers the tables and run.json too, not only the generation.
    let _lock = Store::open(dir)?.lock()?;
    run_plan_locked(plan, dir, progress)
}

fn run_plan_locked(plan: &Plan, dir: &Path, progress: &mut dyn Progress) -> Result<RunOutput> {
    if !plan.panel.is_empty() {
        return panel::run_panel(plan, dir, progress);
    }
    let outcome = crate::experiment::run_locked(plan, dir, progress)?;
    RunOutput::write(plan, outcome, dir)
}

/// What the experiment asks its comparisons: which cells, low-mass scores, the primary mode.
fn design_of(config: &ExperimentConfig) -> Design {
    let judge = config.lead_judge();
    Design {
        pairs: config.compare,
        low_mass: judge.map(|j| j.low_mass_policy).unwrap_or_default(),
        primary: judge.and_then(|j| j.primary()),
    }
}

/// The summary and the paired comparisons of a run's records, each row marked where the
/// sanity check flagged its mode's judge.
fn analyse(
    records: &[JudgmentRecord],
    answers: &[ResponseRecord],
    config: &ExperimentConfig,
    sanity: Option<&SanitySummary>,
) -> (Vec<SummaryRow>, Vec<Comparison>) {
    let flagged = |m| sanity.and_then(|s| s.flagged(m));
    let design = design_of(config);
    let mut summary_rows = summarize(records, config.seed, design.low_mass);
    for r in &mut summary_rows {
        r.judge_flagged = flagged(r.mode);
    }
    let mut comparison_rows = comparisons(records, answers, design, config.seed, &flagged);
    // A total that moved less than the judge's drop for the slightest damage it registers.
    for c in comparison_rows.iter_mut() {
        let resolution = sanity
            .and_then(|s| s.modes.iter().find(|m| m.mode == c.mode))
            .and_then(|m| m.resolution());
        if c.criterion == crate::records::TOTAL {
            c.below_resolution = resolution.map(|r| c.mean_diff.abs() < r);
        }
    }
    (summary_rows, comparison_rows)
}

impl RunOutput {
    /// Builds the tables of a finished run and writes them, with `run.json`, to `dir`.
    pub fn write(plan: &Plan, o: Outcome, dir: &Path) -> Result<RunOutput> {
        let mut meta = RunMeta::of(plan, &o);
        // What earlier runs into this folder spent making the calls this one reused stays
        // counted (an unreadable earlier `run.json` has nothing to add).
        // A stage this run did not have (`--no-sanity`, a model left out) is carried over
        // with nothing spent in this run. (A run killed before it wrote `run.json` is not
        // counted, though its stored calls are reused.)
        // (A panel judge's stages come from its own folder's `run.json` with their earlier
        // spending counted there: `earlier` is set, and they are not counted twice.)
        if let Ok(before) = RunMeta::read(&dir.join("run.json")) {
            for b in &before.usage {
                let same =
                    |u: &&mut crate::records::StageUsage| u.stage == b.stage && u.model == b.model;
                match meta.usage.iter_mut().find(same) {
                    Some(u) if u.earlier.is_some() => {}
                    Some(u) => *u = u.clone().after(b),
                    None => meta.usage.push(
                        crate::records::StageUsage {
                            calls: 0,
                            reused: 0,
                            prompt_tokens: 0,
                            completion_tokens: 0,
                            seconds: 0.0,
                            cost: None,
                            earlier: None,
                            ..b.clone()
                        }
                        .after(b),
                    ),
                }
            }
        }
        let (summary_rows, comparison_rows) =
            analyse(&o.judgments, &o.responses, &plan.config, o.sanity.as_ref());
        let out = RunOutput {
            responses: table::responses_df(&o.responses)?,
            judgments: table::judgments_df(&o.judgments)?,
            summary: table::summary_df(&summary_rows)?,
            comparisons: table::comparisons_df(&comparison_rows)?,
            response_rows: o.responses,
            judgment_rows: o.judgments,
            sanity_rows: o.sanity_rows,
            summary_rows,
            comparison_rows,
            meta,
            dir: dir.to_path_buf(),
        };
        for (name, df) in [
            ("responses", &out.responses),
            ("judgments", &out.judgments),
            ("summary", &out.summary),
            ("comparisons", &out.comparisons),
        ] {
            save_table(df, dir, name)?;
        }
        out.meta.write(&out.meta_path())?;
        Ok(out)
    }

    /// Opens a finished results folder: `run.json`, the tables, and the stored records.
    pub fn load(dir: impl AsRef<Path>) -> Result<RunOutput> {
        let dir = dir.as_ref();
        let meta = RunMeta::read(&dir.join("run.json"))?;
        let responses = table::load_table(dir, "responses")?;
        let judgments = table::load_table(dir, "judgments")?;
        // The stores may hold records of other configurations of the same folder; keep the
        // ones in this run's tables, in table order.
        let store = Store::open(dir)?;
        let answer_ids = table::string_column(&responses, "response_id")?;
        let judgment_ids = table::string_column(&judgments, "judgment_id")?;
        let answers = in_order(
            store.load::<ResponseRecord>("responses")?,
            &answer_ids,
            |r| &r.key,
        );
        let flat = |calls: Vec<CallRecord>| -> Vec<JudgmentRecord> {
            calls.into_iter().flat_map(|c| c.rows).collect()
        };
        let records = in_order(flat(store.load("judgments")?), &judgment_ids, |j| &j.key);
        let sanity_rows = flat(store.load("sanity")?);
        let (summary_rows, comparison_rows) =
            analyse(&records, &answers, &meta.experiment, meta.sanity.as_ref());
        Ok(RunOutput {
            summary: table::summary_df(&summary_rows)?,
            comparisons: table::comparisons_df(&comparison_rows)?,
            responses,
            judgments,
            response_rows: answers,
            judgment_rows: records,
            sanity_rows,
            summary_rows,
            comparison_rows,
            meta,
            dir: dir.to_path_buf(),
        })
    }

    /// The experiment that produced the run, its relative paths resolving against its file.
    pub fn config(&self) -> ExperimentConfig {
        self.meta.config()
    }

    /// The judge sanity check, when it ran.
    pub fn sanity(&self) -> Option<&SanitySummary> {
        self.meta.sanity.as_ref()
    }

    /// What failed (running the same experiment again retries it).
    pub fn failures(&self) -> &[Failure] {
        &self.meta.failures
    }

    /// Warnings: self-preference, a flagged judge, failures.
    pub fn warnings(&self) -> &[String] {
        &self.meta.warnings
    }

    /// Judges this run's answers again with another judge, into `out` (resumable like any
    /// run; no answer is generated again). A few progress lines go to stdout.
    pub fn rejudge(&self, judge: JudgeConfig, out: impl AsRef<Path>) -> Result<RunOutput> {
        self.rejudge_with(judge, out.as_ref(), &mut Lines::default())
    }

    /// [`RunOutput::rejudge`] with a progress sink of your choice.
    pub fn rejudge_with(
        &self,
        judge: JudgeConfig,
        out: &Path,
        progress: &mut dyn Progress,
    ) -> Result<RunOutput> {
        self.rejudge_on(judge, None, out, progress)
    }

    /// [`RunOutput::rejudge_with`] on `device` (the CLI's `--device`) for this run only;
    /// `None` keeps the earlier run's experiment setting.
    pub fn rejudge_on(
        &self,
        judge: JudgeConfig,
        device: Option<crate::model::DeviceChoice>,
        out: &Path,
        progress: &mut dyn Progress,
    ) -> Result<RunOutput> {
        let store = Store::open(out)?;
        let _lock = store.lock()?;
        seed_answers(&store, &self.response_rows)?;
        let mut cfg = self.config();
        cfg.judges.clear();
        cfg.judge = Some(judge);
        let mut plan = cfg.plan()?;
        plan.device = device;
        run_plan_locked(&plan, out, progress)
    }

    /// The path of the results folder's `run.json`.
    pub fn meta_path(&self) -> PathBuf {
        self.dir.join("run.json")
    }
}

/// Stores in `store` the answers of `rows` it does not hold yet, so that a run there judges
/// them instead of generating them again.
fn seed_answers(store: &Store, rows: &[ResponseRecord]) -> Result<()> {
    let done = rows.iter().filter(|r| r.error.is_none()).cloned();
    store.append_missing("responses", done, |r: &ResponseRecord| r.error.is_none())?;
    Ok(())
}

/// The records whose keys are in `ids`, in that order.
fn in_order<T>(records: Vec<T>, ids: &[String], key: impl Fn(&T) -> &String) -> Vec<T> {
    let mut by: std::collections::HashMap<String, T> =
        records.into_iter().map(|r| (key(&r).clone(), r)).collect();
    ids.iter().filter_map(|id| by.remove(id)).collect()
}

/// Builds the judge configuration of `llm-judge judge`: the earlier run's judge settings
/// (or the defaults) with another model and modes.
pub fn rejudge_config(
    prev: &RunOutput,
    model: &str,
    modes: &[crate::records::Mode],
) -> JudgeConfig {
    let mut judge = prev
        .meta
        .experiment
        .lead_judge()
        .cloned()
        .unwrap_or_else(|| JudgeConfig::new(model));
    judge.model = model.to_string();
    judge.endpoint = None;
    if !modes.is_empty() {
        judge.modes = modes.to_vec();
        if judge.primary_mode.is_some_and(|p| !modes.contains(&p)) {
            judge.primary_mode = None;
        }
    }
    judge
}
