//! Records to polars DataFrames and back: the `responses`, `judgments`, `summary` and
//! `comparisons` tables, saved as Parquet and CSV, and their HTML form for notebooks and
//! reports. This module and [`crate::results`] are the only places that know polars' API.

mod stats;

pub use stats::{stats_df, StatRow};

use crate::analysis::{Comparison, SummaryRow};
use crate::error::{Error, Result};
use crate::records::{JudgmentRecord, ResponseRecord};
use crate::store::write_atomic_with;
use polars::prelude::*;
use std::path::Path;

fn perr(e: PolarsError) -> Error {
    Error::Table(e.to_string())
}

pub(crate) fn col<T, P>(name: &str, v: T) -> Column
where
    Series: NamedFrom<T, P>,
    P: ?Sized,
{
    Column::new(name.into(), v)
}

/// The `responses` table.
pub fn responses_df(rs: &[ResponseRecord]) -> Result<DataFrame> {
    let s = |f: fn(&ResponseRecord) -> String| rs.iter().map(f).collect::<Vec<_>>();
    let f = |f: fn(&ResponseRecord) -> f64| rs.iter().map(f).collect::<Vec<_>>();
    let u = |f: fn(&ResponseRecord) -> u64| rs.iter().map(f).collect::<Vec<_>>();
    DataFrame::new(
        rs.len(),
        vec![
            col("response_id", s(|r| r.key.clone())),
            col("model", s(|r| r.model.clone())),
            col("model_source", s(|r| r.model_source.clone())),
            col("model_id", s(|r| r.model_id.clone())),
            col("prompt_format", s(|r| r.prompt_format.to_string())),
            col("context", rs.iter().map(|r| r.context).collect::<Vec<_>>()),
            col("setting", s(|r| r.setting.clone())),
            col("temperature", f(|r| r.temperature)),
            col("min_p", f(|r| r.min_p)),
            col("top_p", f(|r| r.top_p)),
            col("top_k", u(|r| r.top_k)),
            col("repetition_penalty", f(|r| r.repetition_penalty)),
            col("seed", u(|r| r.seed)),
            col("max_tokens", u(|r| r.max_tokens)),
            col("prompt_id", s(|r| r.prompt_id.clone())),
            col("category", s(|r| r.category.clone())),
            col("sample", u(|r| r.sample as u64)),
            col("prompt", s(|r| r.prompt.clone())),
            col(
                "text",
                rs.iter().map(|r| r.text.clone()).collect::<Vec<_>>(),
            ),
            col(
                "error",
                rs.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
            ),
            col("prompt_tokens", u(|r| r.prompt_tokens)),
            col("completion_tokens", u(|r| r.completion_tokens)),
            col("finish_reason", s(|r| r.finish_reason.to_string())),
            col("prompt_s", f(|r| r.prompt_s)),
            col("decode_s", f(|r| r.decode_s)),
            col("prompt_tok_per_s", f(|r| r.prompt_tok_per_s)),
            col("decode_tok_per_s", f(|r| r.decode_tok_per_s)),
        ],
    )
    .map_err(perr)
}

/// The `judgments` table (`probs` as a JSON array string).
pub fn judgments_df(js: &[JudgmentRecord]) -> Result<DataFrame> {
    let s = |f: fn(&JudgmentRecord) -> String| js.iter().map(f).collect::<Vec<_>>();
    let o = |f: fn(&JudgmentRecord) -> Option<String>| js.iter().map(f).collect::<Vec<_>>();
    DataFrame::new(
        js.len(),
        vec![
            col("judgment_id", s(|r| r.key.clone())),
            col("call", s(|r| r.call.clone())),
            col("judge", s(|r| r.judge.clone())),
            col("judge_id", s(|r| r.judge_id.clone())),
            col("mode", s(|r| r.mode.to_string())),
            col("template", s(|r| r.template.clone())),
            col("response_id", s(|r| r.response_key.clone())),
            col("other_response_id", o(|r| r.other_key.clone())),
            col("model", s(|r| r.model.clone())),
            col("setting", s(|r| r.setting.clone())),
            col("other_model", o(|r| r.other_model.clone())),
            col("other_setting", o(|r| r.other_setting.clone())),
            col("prompt_id", s(|r| r.prompt_id.clone())),
            col(
                "sample",
                js.iter().map(|r| r.sample as u64).collect::<Vec<_>>(),
            ),
            col(
                "repeat",
                js.iter().map(|r| r.repeat as u64).collect::<Vec<_>>(),
            ),
            col("criterion", s(|r| r.criterion.clone())),
            col("score", js.iter().map(|r| r.score).collect::<Vec<_>>()),
            col(
                "expected_score",
                js.iter().map(|r| r.expected_score).collect::<Vec<_>>(),
            ),
            col(
                "expected_low",
                js.iter().map(|r| r.expected_low).collect::<Vec<_>>(),
            ),
            col(
                "expected_high",
                js.iter().map(|r| r.expected_high).collect::<Vec<_>>(),
            ),
            col(
                "labels_missing",
                js.iter()
                    .map(|r| r.labels_missing.map(u64::from))
                    .collect::<Vec<_>>(),
            ),
            col(
                "probs",
                o(|r| {
                    r.probs
                        .as_ref()
                        .map(|p| serde_json::to_string(p).unwrap_or_default())
                }),
            ),
            col("mass", js.iter().map(|r| r.mass).collect::<Vec<_>>()),
            col(
                "position",
                js.iter()
                    .map(|r| r.position.map(u64::from))
                    .collect::<Vec<_>>(),
            ),
            col(
                "order_seed",
                js.iter().map(|r| r.order_seed).collect::<Vec<_>>(),
            ),
            col(
                "consistent",
                js.iter().map(|r| r.consistent).collect::<Vec<_>>(),
            ),
            col("flag", o(|r| r.flag.map(|f| f.to_string()))),
            col("error", o(|r| r.error.clone())),
            col("raw", s(|r| r.raw.clone())),
            col(
                "parse_ok",
                js.iter().map(|r| r.parse_ok).collect::<Vec<_>>(),
            ),
            col(
                "attempts",
                js.iter().map(|r| r.attempts as u64).collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(perr)
}

/// The `summary` table.
pub fn summary_df(rows: &[SummaryRow]) -> Result<DataFrame> {
    let s = |f: fn(&SummaryRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let f = |f: fn(&SummaryRow) -> f64| rows.iter().map(f).map(finite).collect::<Vec<_>>();
    let u = |f: fn(&SummaryRow) -> u64| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new(
        rows.len(),
        vec![
            col("model", s(|r| r.model.clone())),
            col("setting", s(|r| r.setting.clone())),
            col("mode", s(|r| r.mode.to_string())),
            col("criterion", s(|r| r.criterion.clone())),
            col("n", u(|r| r.n)),
            col("prompts", u(|r| r.prompts)),
            col("n_null", u(|r| r.n_null)),
            col("n_flagged", u(|r| r.n_flagged)),
            col("n_excluded", u(|r| r.n_excluded)),
            col("mean", f(|r| r.mean)),
            col("std", f(|r| r.std)),
            col("ci_low", f(|r| r.ci_low)),
            col("ci_high", f(|r| r.ci_high)),
            col(
                "judge_flagged",
                rows.iter().map(|r| r.judge_flagged).collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(perr)
}

/// The `comparisons` table: one row per paired comparison.
pub fn comparisons_df(rows: &[Comparison]) -> Result<DataFrame> {
    let s = |f: fn(&Comparison) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let f = |f: fn(&Comparison) -> f64| rows.iter().map(f).map(finite).collect::<Vec<_>>();
    let u = |f: fn(&Comparison) -> u64| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new(
        rows.len(),
        vec![
            col("mode", s(|r| r.mode.to_string())),
            col("criterion", s(|r| r.criterion.clone())),
            col("a", s(|r| r.a.clone())),
            col("b", s(|r| r.b.clone())),
            col("n", u(|r| r.n)),
            col("n_dropped", u(|r| r.n_dropped)),
            col("mean_diff", f(|r| r.mean_diff)),
            col("ci_low", f(|r| r.ci_low)),
            col("ci_high", f(|r| r.ci_high)),
            col("p_value", f(|r| r.p_value)),
            col("p_holm", f(|r| r.p_holm)),
            col("p_min", f(|r| r.p_min)),
            col("wins", u(|r| r.wins)),
            col("ties", u(|r| r.ties)),
            col("losses", u(|r| r.losses)),
            col("lc_diff", f(|r| r.lc_diff)),
            col("lc_ci_low", f(|r| r.lc_ci_low)),
            col("lc_ci_high", f(|r| r.lc_ci_high)),
            col(
                "judge_flagged",
                rows.iter().map(|r| r.judge_flagged).collect::<Vec<_>>(),
            ),
            col(
                "confounded_with_position",
                rows.iter()
                    .map(|r| r.confounded_with_position)
                    .collect::<Vec<_>>(),
            ),
            col(
                "exploratory",
                rows.iter().map(|r| r.exploratory).collect::<Vec<_>>(),
            ),
            col(
                "below_resolution",
                rows.iter().map(|r| r.below_resolution).collect::<Vec<_>>(),
            ),
            col("ci_nonfinite", u(|r| r.ci_nonfinite)),
        ],
    )
    .map_err(perr)
}

/// The test-retest table: one row per comparison of a mode asked more than once, its
/// mode's ICC beside it.
pub fn retest_df(rows: &[crate::analysis::Retest]) -> Result<DataFrame> {
    use crate::analysis::Retest as R;
    let s = |f: fn(&R) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let f = |f: fn(&R) -> f64| rows.iter().map(f).map(finite).collect::<Vec<_>>();
    let u = |f: fn(&R) -> u64| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new(
        rows.len(),
        vec![
            col("mode", s(|r| r.mode.to_string())),
            col("criterion", s(|r| r.criterion.clone())),
            col("asks", u(|r| r.repeats as u64)),
            col("answers", u(|r| r.answers)),
            col("icc", f(|r| r.icc)),
            col("icc_ci_low", f(|r| r.icc_ci.low)),
            col("icc_ci_high", f(|r| r.icc_ci.high)),
            col("a", s(|r| r.a.clone())),
            col("b", s(|r| r.b.clone())),
            col("prompts", u(|r| r.prompts)),
            col("judge_var", f(|r| r.judge_var)),
            col("prompt_var", f(|r| r.prompt_var)),
            col("judge_share", f(|r| r.judge_share)),
            col("prompt_share", f(|r| r.prompt_share())),
        ],
    )
    .map_err(perr)
}

/// The calibration table: one row per labelled pair of cells.
pub fn calibration_df(rows: &[crate::analysis::calibration::Calibration]) -> Result<DataFrame> {
    use crate::analysis::calibration::Calibration as C;
    let s = |f: fn(&C) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let f = |f: fn(&C) -> f64| rows.iter().map(f).map(finite).collect::<Vec<_>>();
    let u = |f: fn(&C) -> usize| rows.iter().map(|r| f(r) as u64).collect::<Vec<_>>();
    DataFrame::new(
        rows.len(),
        vec![
            col("a", s(|r| r.a.clone())),
            col("b", s(|r| r.b.clone())),
            col("prompts", u(|r| r.prompts)),
            col("labelled", u(|r| r.labelled)),
            col("accuracy", f(|r| r.accuracy)),
            col("accuracy_ci_low", f(|r| r.accuracy_ci.0)),
            col("accuracy_ci_high", f(|r| r.accuracy_ci.1)),
            col("kappa", f(|r| r.kappa)),
            col("kappa_ci_low", f(|r| r.kappa_ci.0)),
            col("kappa_ci_high", f(|r| r.kappa_ci.1)),
            col("tpr", f(|r| r.tpr)),
            col("tpr_ci_low", f(|r| r.tpr_ci.0)),
            col("tpr_ci_high", f(|r| r.tpr_ci.1)),
            col("tnr", f(|r| r.tnr)),
            col("tnr_ci_low", f(|r| r.tnr_ci.0)),
            col("tnr_ci_high", f(|r| r.tnr_ci.1)),
            col("judge_win_rate", f(|r| r.judge_win_rate)),
            col("human_win_rate", f(|r| r.human_win_rate)),
            col("corrected_win_rate", f(|r| r.corrected_win_rate)),
            col("corrected_ci_low", f(|r| r.corrected_ci.0)),
            col("corrected_ci_high", f(|r| r.corrected_ci.1)),
        ],
    )
    .map_err(perr)
}

/// NaN (no value) as null: a table says "none", never a number that is not one.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Writes `<dir>/<name>.parquet` and `<dir>/<name>.csv`, each atomically.
pub fn save_table(df: &DataFrame, dir: &Path, name: &str) -> Result<()> {
    let mut df = df.clone();
    let pq = dir.join(format!("{name}.parquet"));
    write_atomic_with(&pq, |f| {
        ParquetWriter::new(f)
            .with_compression(ParquetCompression::Uncompressed)
            .finish(&mut df)
            .map(|_| ())
            .map_err(std::io::Error::other)
    })?;
    let csv = dir.join(format!("{name}.csv"));
    write_atomic_with(&csv, |f| {
        CsvWriter::new(f)
            .finish(&mut df)
            .map_err(std::io::Error::other)
    })
}

/// Reads a table written by [`save_table`] (Parquet preferred, CSV otherwise); a damaged
/// file is named in the error.
pub fn load_table(dir: &Path, name: &str) -> Result<DataFrame> {
    let pq = dir.join(format!("{name}.parquet"));
    if pq.exists() {
        let f = std::fs::File::open(&pq).map_err(|e| Error::io(&pq, e))?;
        return ParquetReader::new(f).finish().map_err(|e| {
            Error::Table(format!(
                "{}: not a readable Parquet file: {e}",
                pq.display()
            ))
        });
    }
    let csv = dir.join(format!("{name}.csv"));
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(csv.clone()))
        .and_then(|r| r.finish())
        .map_err(|e| Error::Table(format!("{}: {e}", csv.display())))
}

/// The non-null values of a string column.
pub fn string_column(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name).map_err(perr)?;
    let ca = c.str().map_err(perr)?;
    Ok(ca.iter().flatten().map(|s| s.to_string()).collect())
}

/// HTML-escapes text (for element content and attribute values alike).
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A float rounded for reading: 3 significant digits, at least 2 decimals below 10, no
/// exponent for everyday magnitudes. The full value stays in the DataFrame.
pub fn round_for_reading(x: f64) -> String {
    if !x.is_finite() {
        return String::new();
    }
    let a = x.abs();
    if x.fract() == 0.0 && a < 1e15 {
        // Counts (and whole numbers) read as counts.
        return format!("{x:.0}");
    }
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{x:.2e}");
    }
    let digits = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}")
}

/// An HTML `<table>` of a DataFrame (at most `max_rows` rows), numbers rounded for reading.
pub fn to_html(df: &DataFrame, max_rows: usize) -> String {
    let mut out = String::from("<table class=\"df\">\n<thead><tr>");
    for c in df.columns() {
        out.push_str(&format!("<th>{}</th>", escape(c.name())));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for i in 0..df.height().min(max_rows) {
        out.push_str("<tr>");
        for c in df.columns() {
            let cell = match c.get(i) {
                Ok(AnyValue::Null) => String::new(),
                Ok(AnyValue::String(s)) => s.to_string(),
                Ok(AnyValue::Float64(f)) => round_for_reading(f),
                Ok(AnyValue::Float32(f)) => round_for_reading(f as f64),
                Ok(v) => v.to_string(),
                Err(e) => e.to_string(),
            };
            out.push_str(&format!("<td>{}</td>", escape(&cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    if df.height() > max_rows {
        out.push_str(&format!("<p>… {} more rows</p>\n", df.height() - max_rows));
    }
    out
}

/// A DataFrame that shows as an HTML table in evcxr notebooks (numbers rounded for
/// reading), with an optional caption and notes under it; it derefs to the DataFrame, which
/// keeps full precision.
#[derive(Clone, Debug)]
pub struct HtmlTable {
    /// The table.
    pub df: DataFrame,
    /// A caption above it.
    pub caption: Option<String>,
    /// Lines shown under it (e.g. modes without a parsed score).
    pub notes: Vec<String>,
}

/// As text, for a terminal: the caption, the table as polars prints it, then the notes.
impl std::fmt::Display for HtmlTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(c) = &self.caption {
            writeln!(f, "{c}")?;
        }
        if self.df.width() > 0 {
            writeln!(f, "{}", self.df)?;
        }
        for n in &self.notes {
            writeln!(f, "{n}")?;
        }
        Ok(())
    }
}

impl From<DataFrame> for HtmlTable {
    fn from(df: DataFrame) -> Self {
        Self {
            df,
            caption: None,
            notes: Vec::new(),
        }
    }
}

impl std::ops::Deref for HtmlTable {
    type Target = DataFrame;
    fn deref(&self) -> &DataFrame {
        &self.df
    }
}

impl HtmlTable {
    /// Adds a caption.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }

    /// Adds a note under the table.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// The HTML: caption, table, notes.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        if let Some(c) = &self.caption {
            h.push_str(&format!("<p><b>{}</b></p>\n", escape(c)));
        }
        if self.df.height() > 0 {
            h.push_str(&to_html(&self.df, 200));
        }
        for n in &self.notes {
            h.push_str(&format!("<p class=\"note\">{}</p>\n", escape(n)));
        }
        h
    }

    /// Prints the evcxr display protocol for the table.
    pub fn evcxr_display(&self) {
        crate::evcxr::show_html(&self.to_html());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well_and_html_is_escaped() {
        assert_eq!(round_for_reading(4.6666666), "4.67");
        assert_eq!(round_for_reading(12.3456), "12.3");
        assert_eq!(round_for_reading(1234.5), "1234");
        assert_eq!(round_for_reading(0.000012), "1.20e-5");
        assert_eq!(round_for_reading(f64::NAN), "");
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
