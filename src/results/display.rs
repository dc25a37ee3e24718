//! How the statistics a notebook shows render: as HTML tables (through [`HtmlTable`]), never
//! as Debug structs. Each type has `to_table()` and an `evcxr_display()` for notebook cells.

use crate::analysis::{Estimate, LengthAssociation, PositionBias};
use crate::experiment::SanitySummary;
use crate::plot::Figure;
use crate::table::{escape, stats_df, HtmlTable, StatRow};
use std::path::{Path, PathBuf};

fn show(t: HtmlTable) {
    t.evcxr_display();
}

impl Estimate {
    /// The estimate as a statistics row.
    pub fn row(&self) -> StatRow {
        StatRow::new(self.label.clone(), self.n)
            .with("value", self.mean)
            .with("ci_low", self.ci.0)
            .with("ci_high", self.ci.1)
    }
}

impl crate::analysis::PowerReport {
    /// As a table: one row per judge mode.
    pub fn to_table(&self) -> HtmlTable {
        let rows: Vec<StatRow> = self
            .rows
            .iter()
            .map(|r| {
                StatRow::new(format!("{} ({})", r.mode, r.unit), r.prompts)
                    .with("comparisons", r.comparisons as f64)
                    .with("p_min", r.p_min)
                    .with("sd", r.sd)
                    .with("min_detectable", r.min_detectable)
            })
            .collect();
        let assumed = self.rows.iter().any(|r| r.sd_assumed);
        let mut t = HtmlTable::from(stats_df(&rows).unwrap_or_default()).with_caption(
            "What this design can show, before it runs: per mode, the paired comparisons of its \
             Holm family, the smallest p any outcome could give, and the smallest difference \
             detected with 80% power (n = prompts)",
        );
        if assumed {
            t = t.with_note(
                "the per-prompt SD of a difference is assumed (15% of the score's range); an \
                 empty min_detectable means no outcome of these prompts could resolve a comparison",
            );
        }
        if self.rows.is_empty() {
            t = t.with_note("no judge: nothing is compared");
        }
        t
    }

    /// Shows the table in a notebook.
    pub fn evcxr_display(&self) {
        show(self.to_table());
    }
}

impl PositionBias {
    /// One row per statistic.
    pub fn rows(&self) -> Vec<StatRow> {
        let mut rows: Vec<StatRow> = self.listwise.iter().map(Estimate::row).collect();
        for e in [
            &self.pairwise_consistency,
            &self.text_first_position_preference,
            &self.first_position_preference,
            &self.expected_consistency,
        ]
        .into_iter()
        .flatten()
        {
            rows.push(e.row());
        }
        rows
    }

    /// As a table; says so when there is no data.
    pub fn to_table(&self) -> HtmlTable {
        let rows = self.rows();
        let mut t = HtmlTable::from(stats_df(&rows).unwrap_or_default())
            .with_caption("Position bias (95% CI over prompts)");
        if rows.is_empty() {
            t = t.with_note("n = 0: no listwise or pairwise verdict with a position to measure");
        }
        t
    }

    /// Shows the table in a notebook.
    pub fn evcxr_display(&self) {
        show(self.to_table());
    }
}

impl LengthAssociation {
    /// The statistic as a row.
    pub fn row(&self) -> StatRow {
        StatRow::new(
            format!("length association (words), {}", self.label),
            self.n,
        )
        .with("value", self.within_prompt_pearson)
        .with("ci_low", self.within_prompt_ci.0)
        .with("ci_high", self.within_prompt_ci.1)
        .with("pooled_spearman", self.pooled_spearman)
    }

    /// As a table.
    pub fn to_table(&self) -> HtmlTable {
        HtmlTable::from(stats_df(&[self.row()]).unwrap_or_default()).with_caption(
            "Score vs answer length in words: within-prompt Pearson r (each prompt's means \
             removed) with a 95% CI over prompts, next to the pooled Spearman rho",
        )
    }

    /// Shows the table in a notebook.
    pub fn evcxr_display(&self) {
        show(self.to_table());
    }
}

impl SanitySummary {
    /// One row per mode and kind of bad answer.
    pub fn to_table(&self) -> HtmlTable {
        let mut rows = Vec::new();
        for m in &self.modes {
            for k in &m.kinds {
                rows.push(
                    StatRow::new(format!("{}: {}", m.mode, k.kind), k.comparisons)
                        .with("passed", k.passed as f64)
                        .with("wrong", k.wrong as f64)
                        .with("unscored", k.unscored as f64)
                        .with("pass_rate", k.pass_rate())
                        .with("flagged", if m.flagged { 1.0 } else { 0.0 }),
                );
            }
        }
        let mut t = HtmlTable::from(stats_df(&rows).unwrap_or_default()).with_caption(format!(
            "Judge sanity check: good answer vs off-topic, truncated and shuffled ones \
             (a mode is flagged below {:.0}% in any kind)",
            crate::experiment::PASS_THRESHOLD * 100.0
        ));
        for line in self.describe() {
            t = t.with_note(line);
        }
        t
    }

    /// Shows the table in a notebook.
    pub fn evcxr_display(&self) {
        show(self.to_table());
    }
}

/// A file the run wrote (the report), shown in a notebook as its path.
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    /// What the file is.
    pub what: String,
    /// Where it is.
    pub path: PathBuf,
}

impl std::ops::Deref for Saved {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Saved {
    /// Shows the path in a notebook.
    pub fn evcxr_display(&self) {
        crate::evcxr::show_html(&format!(
            "<p>{} written to <code>{}</code></p>",
            escape(&self.what),
            escape(&self.path.display().to_string())
        ));
    }
}

/// Several charts shown together, with a note for each chart that has no data.
#[derive(Clone, Debug, Default)]
pub struct Gallery {
    /// The charts.
    pub figures: Vec<Figure>,
    /// What was left out, and why.
    pub notes: Vec<String>,
}

impl Gallery {
    /// The charts as inline PNG images, then the notes.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        for f in &self.figures {
            if let Ok(b64) = f.to_png_base64() {
                h.push_str(&format!(
                    "<p><img src=\"data:image/png;base64,{b64}\"></p>\n"
                ));
            }
        }
        for n in &self.notes {
            h.push_str(&format!("<p class=\"note\">{}</p>\n", escape(n)));
        }
        h
    }

    /// Shows the charts in a notebook.
    pub fn evcxr_display(&self) {
        crate::evcxr::show_html(&self.to_html());
    }
}
