//! One self-contained HTML report of a results folder: run metadata (models with file
//! hashes, sampling values, seeds, judge, version), warnings and the judge sanity check, the
//! summary table, the results chart per judge mode (inline SVG), agreement statistics, and
//! every answer with its scores.

use crate::analysis::agreement_report;
use crate::error::Result;
use crate::experiment::RunOutput;
use crate::store::write_atomic;
use crate::table::to_html;
use std::path::{Path, PathBuf};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `<dir>/report.html` and returns its path.
pub fn write_report(dir: &Path) -> Result<PathBuf> {
    let run = RunOutput::load(dir)?;
    let meta = &run.meta;
    let (responses, judgments) = (&run.answers, &run.records);
    let summary = &run.summary;
    let name = run.config.name.as_str();

    let mut h = String::new();
    h.push_str(&format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>llm-judge: {n}</title>\n<style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
         table.df{{border-collapse:collapse;font-size:13px;margin:1em 0}}\
         table.df td,table.df th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}}\
         .warn{{background:#fff3cd;border:1px solid #e0c36c;padding:.5em 1em}}\
         pre{{white-space:pre-wrap;background:#f6f6f6;padding:.5em}}</style></head><body>\n\
         <h1>llm-judge report: {n}</h1>\n",
        n = esc(name)
    ));
    for w in &run.warnings {
        h.push_str(&format!("<p class=\"warn\">{}</p>\n", esc(w)));
    }
    if let Some(s) = &run.sanity {
        let class = if s.flagged { " class=\"warn\"" } else { "" };
        h.push_str(&format!(
            "<h2>Judge sanity check</h2><p{class}>{}</p>\n",
            esc(&s.describe())
        ));
    }
    h.push_str("<h2>Results</h2>\n");
    let modes = run.scoring_modes();
    for m in &modes {
        match run.score_bars(m) {
            Ok(fig) => h.push_str(&fig.to_svg()?),
            Err(e) => h.push_str(&format!(
                "<p class=\"warn\">{m}: {}</p>",
                esc(&e.to_string())
            )),
        }
        h.push('\n');
    }
    // Per-prompt and distribution charts need parsed scores; a mode without any is skipped.
    for m in &modes {
        for fig in [run.prompt_heatmap(m), run.score_distribution(m)]
            .into_iter()
            .flatten()
        {
            h.push_str(&fig.to_svg()?);
            h.push('\n');
        }
    }
    h.push_str("<h2>Summary</h2>\n");
    h.push_str(&to_html(summary, 500));
    let agreement = agreement_report(judgments);
    if !agreement.is_empty() {
        h.push_str("<h2>Agreement</h2><ul>\n");
        for a in agreement {
            h.push_str(&format!("<li>{}</li>\n", esc(&a)));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h2>Run</h2>\n<pre>");
    let run_meta = serde_json::json!({
        "llm_judge_version": meta["llm_judge_version"],
        "models": meta["models"],
        "settings": meta["settings"],
        "judge": meta["judge"],
        "experiment": meta["experiment"],
        "counts": meta["counts"],
    });
    h.push_str(&esc(
        &serde_json::to_string_pretty(&run_meta).unwrap_or_default()
    ));
    h.push_str("</pre>\n<h2>Answers</h2>\n");
    for r in responses {
        let scores: Vec<String> = judgments
            .iter()
            .filter(|j| j.response_key == r.key && j.criterion == "total")
            .map(|j| {
                format!(
                    "{}: {}",
                    j.mode,
                    j.expected_score
                        .or(j.score)
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "null".into())
                )
            })
            .collect();
        h.push_str(&format!(
            "<details><summary>{} / {} / {} #{} — {}</summary><p><b>{}</b></p><pre>{}</pre></details>\n",
            esc(&r.model),
            esc(&r.setting),
            esc(&r.prompt_id),
            r.sample,
            esc(&scores.join(", ")),
            esc(&r.prompt),
            esc(r.text.as_deref().or(r.error.as_deref()).unwrap_or(""))
        ));
    }
    h.push_str("</body></html>\n");
    let out = dir.join("report.html");
    write_atomic(&out, h.as_bytes())?;
    Ok(out)
}
