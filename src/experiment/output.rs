//! What a run returns, and the one-call views of it that notebooks use: tables that show as
//! HTML, charts that show inline, reliability statistics, a second judge, and the report.

use super::config::ExperimentConfig;
use super::progress::{Lines, Progress};
use super::sanity::SanitySummary;
use crate::analysis::{self, Agreement, LengthCorrelation, PositionBias, SummaryRow};
use crate::error::{Error, Result};
use crate::judge::JudgeConfig;
use crate::plot::Figure;
use crate::records::{JudgmentRecord, ResponseRecord};
use crate::store::Store;
use crate::table::{self, HtmlTable};
use polars::prelude::DataFrame;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a run returns: the three tables, the records behind them, and where they were
/// written. Load an earlier run with [`RunOutput::load`].
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// One row per answer.
    pub responses: DataFrame,
    /// One row per score.
    pub judgments: DataFrame,
    /// Model × setting × mode × criterion: n, mean, std, bootstrap 95 % CI.
    pub summary: DataFrame,
    /// The judgment records behind `judgments`.
    pub records: Vec<JudgmentRecord>,
    /// The answer records behind `responses`.
    pub answers: Vec<ResponseRecord>,
    /// The summary rows behind `summary`.
    pub summary_rows: Vec<SummaryRow>,
    /// The experiment that produced the run.
    pub config: ExperimentConfig,
    /// The judge sanity check, when it ran.
    pub sanity: Option<SanitySummary>,
    /// The run's metadata as written to `run.json` (models with file hashes, settings,
    /// judge, version, counts).
    pub meta: serde_json::Value,
    /// Warnings (e.g. self-preference).
    pub warnings: Vec<String>,
    /// The results folder.
    pub dir: PathBuf,
}

impl RunOutput {
    /// Opens a finished results folder (`run.json`, the stored records and the tables).
    pub fn load(dir: impl AsRef<Path>) -> Result<RunOutput> {
        let dir = dir.as_ref();
        let meta_path = dir.join("run.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(meta_path.display().to_string(), e.to_string()))?;
        let field = |name: &'static str| {
            let at = format!("{}: field `{name}`", meta_path.display());
            move |e: serde_json::Error| Error::config(at, e.to_string())
        };
        let config: ExperimentConfig =
            serde_json::from_value(meta["experiment"].clone()).map_err(field("experiment"))?;
        let sanity: Option<SanitySummary> =
            serde_json::from_value(meta["sanity"].clone()).map_err(field("sanity"))?;
        let warnings: Vec<String> = match &meta["warnings"] {
            serde_json::Value::Null => Vec::new(),
            w => serde_json::from_value(w.clone()).map_err(field("warnings"))?,
        };
        let responses = table::load_table(dir, "responses")?;
        let judgments = table::load_table(dir, "judgments")?;
        let summary = table::load_table(dir, "summary")?;
        // The stores may hold records of other configurations of the same folder; keep the
        // ones in this run's tables, in table order.
        let store = Store::open(dir)?;
        let pick =
            |df: &DataFrame, col: &str| -> Result<Vec<String>> { table::string_column(df, col) };
        let answer_ids = pick(&responses, "response_id")?;
        let judgment_ids = pick(&judgments, "judgment_id")?;
        let answers = in_order(
            store.load::<ResponseRecord>("responses")?,
            &answer_ids,
            |r| &r.key,
        );
        let records = in_order(
            store.load::<JudgmentRecord>("judgments")?,
            &judgment_ids,
            |j| &j.key,
        );
        let summary_rows = analysis::summarize(&records, config.seed);
        Ok(RunOutput {
            responses,
            judgments,
            summary,
            records,
            answers,
            summary_rows,
            config,
            sanity,
            meta,
            warnings,
            dir: dir.to_path_buf(),
        })
    }

    /// The scoring modes in the run (every mode but pairwise), in first-seen order.
    pub fn scoring_modes(&self) -> Vec<&str> {
        let mut modes: Vec<&str> = Vec::new();
        for j in &self.records {
            if j.mode != "pairwise" && !modes.contains(&j.mode.as_str()) {
                modes.push(&j.mode);
            }
        }
        modes
    }

    /// The summary table, shown as HTML in notebooks.
    pub fn summary_table(&self) -> HtmlTable {
        HtmlTable(self.summary.clone())
    }

    /// The answers table (one row per answer), shown as HTML in notebooks.
    pub fn responses_table(&self) -> HtmlTable {
        HtmlTable(self.responses.clone())
    }

    /// The judgments table (one row per score), shown as HTML in notebooks.
    pub fn judgments_table(&self) -> HtmlTable {
        HtmlTable(self.judgments.clone())
    }

    /// The write-up's results figure for one judge mode: total score per model for each
    /// sampling setting, with bootstrap 95 % CI error bars.
    pub fn score_bars(&self, mode: &str) -> Result<Figure> {
        Figure::score_bars(&self.summary_rows, mode, "total")
    }

    /// Total score per prompt for each model/setting, as a heatmap.
    pub fn prompt_heatmap(&self, mode: &str) -> Result<Figure> {
        Figure::prompt_heatmap(&self.records, mode, "total")
    }

    /// Distribution of the criterion scores of one mode.
    pub fn score_distribution(&self, mode: &str) -> Result<Figure> {
        Figure::score_distribution(&self.records, mode)
    }

    /// Temperature × min_p heatmap of the mean total score of one mode.
    pub fn sweep_heatmap(&self, mode: &str) -> Result<Figure> {
        Figure::sweep_heatmap(&self.answers, &self.records, mode, "total")
    }

    /// Agreement between every pair of scoring modes on `total` (Spearman, Cohen's kappa).
    pub fn mode_agreement(&self) -> Vec<Agreement> {
        let modes = self.scoring_modes();
        let mut out = Vec::new();
        for (i, a) in modes.iter().enumerate() {
            for b in &modes[i + 1..] {
                out.push(analysis::mode_agreement(&self.records, a, b, "total"));
            }
        }
        out
    }

    /// Agreement with another judge's run over the same answers, mode by mode.
    pub fn judge_agreement(&self, other: &RunOutput) -> Vec<Agreement> {
        let modes = self.scoring_modes();
        modes
            .into_iter()
            .map(|m| analysis::judge_agreement(&self.records, &other.records, m, "total"))
            .collect()
    }

    /// [`RunOutput::judge_agreement`] as a table.
    pub fn judge_agreement_table(&self, other: &RunOutput) -> Result<HtmlTable> {
        let rows: Vec<table::StatRow> = self
            .judge_agreement(other)
            .into_iter()
            .map(|a| {
                table::StatRow::new(format!("agreement {}", a.label), a.n)
                    .with("spearman", a.spearman)
                    .with("kappa", a.kappa)
            })
            .collect();
        Ok(HtmlTable(table::stats_df(&rows)?))
    }

    /// Mean listwise score by position shown, and pairwise position consistency.
    pub fn position_bias(&self) -> PositionBias {
        analysis::position_bias(&self.records)
    }

    /// Correlation of the `total` score of `mode` with answer length.
    pub fn length_correlation(&self, mode: &str) -> LengthCorrelation {
        analysis::length_correlation(&self.answers, &self.records, mode, "total")
    }

    /// Every reliability statistic of the run as one table: mode agreement, position
    /// consistency, listwise position means, and score-length correlation per mode.
    pub fn reliability_table(&self) -> Result<HtmlTable> {
        let mut rows: Vec<table::StatRow> = Vec::new();
        for a in self.mode_agreement() {
            rows.push(
                table::StatRow::new(format!("agreement {}", a.label), a.n)
                    .with("spearman", a.spearman)
                    .with("kappa", a.kappa),
            );
        }
        let pb = self.position_bias();
        for (p, n, m) in &pb.listwise {
            rows.push(
                table::StatRow::new(format!("listwise mean total at position {p}"), *n)
                    .with("mean", *m),
            );
        }
        if let Some((c, n)) = pb.pairwise_consistency {
            rows.push(
                table::StatRow::new("pairwise position consistency".into(), n).with("share", c),
            );
        }
        let modes = self.scoring_modes();
        for m in modes {
            let lc = self.length_correlation(m);
            rows.push(
                table::StatRow::new(format!("score vs length, {}", lc.label), lc.n)
                    .with("pearson", lc.pearson)
                    .with("spearman", lc.spearman),
            );
        }
        Ok(HtmlTable(table::stats_df(&rows)?))
    }

    /// Judges this run's answers again with another judge, into `out` (resumable like any
    /// run; no answer is generated again). Progress lines go to stdout.
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
        let store = Store::open(out)?;
        let have: HashSet<String> = store
            .load::<ResponseRecord>("responses")?
            .into_iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.key)
            .collect();
        let missing: Vec<ResponseRecord> = self
            .answers
            .iter()
            .filter(|r| r.error.is_none() && !have.contains(&r.key))
            .cloned()
            .collect();
        store.append("responses", &missing)?;
        let mut cfg = self.config.clone();
        cfg.judge = Some(judge);
        super::run(&cfg.plan()?, out, progress)
    }

    /// Saves every chart of the run that has data as PNG and SVG in the results folder:
    /// per scoring mode `scores-`, `prompts-` and `distribution-<mode>`, and `sweep-<mode>`
    /// when the answers span several temperatures or min_p values. Returns the PNG paths.
    pub fn save_charts(&self) -> Result<Vec<PathBuf>> {
        let modes = self.scoring_modes();
        let mut pairs: Vec<(u64, u64)> = self
            .answers
            .iter()
            .map(|r| (r.temperature.to_bits(), r.min_p.to_bits()))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        let mut out = Vec::new();
        for m in modes {
            let mut figs = vec![
                ("scores", self.score_bars(m)),
                ("prompts", self.prompt_heatmap(m)),
                ("distribution", self.score_distribution(m)),
            ];
            if pairs.len() > 1 {
                figs.push(("sweep", self.sweep_heatmap(m)));
            }
            // A mode without parsed scores has nothing to draw; skip it, keep the rest.
            for (name, fig) in figs {
                let Ok(fig) = fig else { continue };
                let png = self.dir.join(format!("{name}-{m}.png"));
                fig.save_png(&png)?;
                fig.save_svg(&png.with_extension("svg"))?;
                out.push(png);
            }
        }
        Ok(out)
    }

    /// Writes the self-contained HTML report of this run (`report.html`) and returns its path.
    pub fn report(&self) -> Result<PathBuf> {
        crate::report::write_report(&self.dir)
    }
}

fn in_order<T>(records: Vec<T>, ids: &[String], key: impl Fn(&T) -> &String) -> Vec<T> {
    let mut by: std::collections::HashMap<String, T> =
        records.into_iter().map(|r| (key(&r).clone(), r)).collect();
    ids.iter().filter_map(|id| by.remove(id)).collect()
}
