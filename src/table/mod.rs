//! Records to polars DataFrames and back, and the files of a results folder:
//! `responses`, `judgments` and `summary` as Parquet and CSV, and `run.json`.
//! This module and [`crate::analysis`] are the only places that know polars' API.

mod stats;

pub use stats::{stats_df, StatRow};

use crate::analysis::{summarize, SummaryRow};
use crate::error::{Error, Result};
use crate::experiment::{Plan, RunOutput, SanitySummary};
use crate::records::{JudgmentRecord, ResponseRecord};
use crate::store::{write_atomic, write_atomic_with, Store};
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
            col("model_sha256", s(|r| r.model_id.clone())),
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
            col("finish_reason", s(|r| r.finish_reason.clone())),
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
            col("mode", s(|r| r.mode.clone())),
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
            col("criterion", s(|r| r.criterion.clone())),
            col("score", js.iter().map(|r| r.score).collect::<Vec<_>>()),
            col(
                "expected_score",
                js.iter().map(|r| r.expected_score).collect::<Vec<_>>(),
            ),
            col(
                "probs",
                o(|r| {
                    r.probs
                        .as_ref()
                        .map(|p| serde_json::to_string(p).unwrap_or_default())
                }),
            ),
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
    let f = |f: fn(&SummaryRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new(
        rows.len(),
        vec![
            col("model", s(|r| r.model.clone())),
            col("setting", s(|r| r.setting.clone())),
            col("mode", s(|r| r.mode.clone())),
            col("criterion", s(|r| r.criterion.clone())),
            col("n", rows.iter().map(|r| r.n).collect::<Vec<_>>()),
            col("n_null", rows.iter().map(|r| r.n_null).collect::<Vec<_>>()),
            col("mean", f(|r| r.mean)),
            col("std", f(|r| r.std)),
            col("ci_low", f(|r| r.ci_low)),
            col("ci_high", f(|r| r.ci_high)),
        ],
    )
    .map_err(perr)
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

/// Reads a table written by [`save_table`] (Parquet preferred, CSV otherwise).
pub fn load_table(dir: &Path, name: &str) -> Result<DataFrame> {
    let pq = dir.join(format!("{name}.parquet"));
    if pq.exists() {
        let f = std::fs::File::open(&pq).map_err(|e| Error::io(&pq, e))?;
        return ParquetReader::new(f).finish().map_err(perr);
    }
    let csv = dir.join(format!("{name}.csv"));
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(csv.clone()))
        .and_then(|r| r.finish())
        .map_err(|e| Error::Table(format!("{}: {e}", csv.display())))
}

/// Builds and writes the tables and `run.json` of a finished run.
pub(crate) fn write_run(
    store: &Store,
    plan: &Plan,
    responses: &[ResponseRecord],
    judgments: &[JudgmentRecord],
    sanity: Option<&SanitySummary>,
    warnings: &[String],
) -> Result<RunOutput> {
    let dir = store.dir();
    let summary_rows = summarize(judgments, plan.config.seed);
    let responses_t = responses_df(responses)?;
    let judgments_t = judgments_df(judgments)?;
    let summary_t = summary_df(&summary_rows)?;
    save_table(&responses_t, dir, "responses")?;
    save_table(&judgments_t, dir, "judgments")?;
    save_table(&summary_t, dir, "summary")?;
    let mut model_hashes = serde_json::Map::new();
    for r in responses {
        model_hashes.insert(
            r.model.clone(),
            serde_json::json!({"source": r.model_source, "sha256": r.model_id}),
        );
    }
    let meta = serde_json::json!({
        "experiment": plan.config,
        "llm_judge_version": env!("CARGO_PKG_VERSION"),
        "models": model_hashes,
        "settings": plan.settings.iter().map(|(n, p)| serde_json::json!({"name": n, "params": p})).collect::<Vec<_>>(),
        "judge": judgments.first().map(|j| serde_json::json!({"name": j.judge, "id": j.judge_id})),
        "sanity": sanity,
        "warnings": warnings,
        "counts": {"responses": responses.len(), "judgments": judgments.len()},
    });
    let text = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Table(e.to_string()))?;
    write_atomic(&dir.join("run.json"), &text)?;
    Ok(RunOutput {
        responses: responses_t,
        judgments: judgments_t,
        records: judgments.to_vec(),
        answers: responses.to_vec(),
        summary_rows,
        config: plan.config.clone(),
        summary: summary_t,
        sanity: sanity.cloned(),
        meta,
        warnings: warnings.to_vec(),
        dir: dir.to_path_buf(),
    })
}

/// The non-null values of a string column.
pub fn string_column(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name).map_err(perr)?;
    let ca = c.str().map_err(perr)?;
    Ok(ca.iter().flatten().map(|s| s.to_string()).collect())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An HTML `<table>` of a DataFrame (at most `max_rows` rows), for reports and notebooks.
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
                Ok(AnyValue::Float64(f)) => format!("{f:.3}"),
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

/// A DataFrame that shows as an HTML table in evcxr notebooks; it derefs to the DataFrame.
#[derive(Clone, Debug)]
pub struct HtmlTable(pub DataFrame);

impl std::ops::Deref for HtmlTable {
    type Target = DataFrame;
    fn deref(&self) -> &DataFrame {
        &self.0
    }
}

impl HtmlTable {
    /// Prints the evcxr display protocol for the table.
    pub fn evcxr_display(&self) {
        println!(
            "EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
            to_html(&self.0, 200)
        );
    }
}
