//! One self-contained HTML report of a run: the findings first, then warnings and the judge
//! sanity check, the paired comparisons with their forest plot, the summary, every chart
//! (inline PNG), reliability, the run's metadata, and every answer with its scores. It loads
//! nothing from elsewhere: no external fonts, scripts or images, so it opens offline.

use super::RunOutput;
use crate::error::Result;
use crate::plot::Figure;
use crate::records::TOTAL;
use crate::store::write_atomic;
use crate::table::escape;
use std::path::PathBuf;

fn figure(h: &mut String, fig: Result<Figure>) -> Result<()> {
    // A chart without data is left out (the tables say why); an empty forest plot becomes a
    // line of text with its reason.
    if let Ok(fig) = fig {
        if fig.is_empty() {
            if let crate::plot::Chart::Forest(f) = &fig.chart {
                h.push_str(&format!(
                    "<p class=\"note\">No paired comparison to draw: {}</p>\n",
                    escape(&f.subtitle)
                ));
            }
            return Ok(());
        }
        h.push_str(&format!(
            "<p><img alt=\"{}\" src=\"data:image/png;base64,{}\"></p>\n",
            escape(&chart_title(&fig)),
            fig.to_png_base64()?
        ));
    }
    Ok(())
}

fn chart_title(f: &Figure) -> String {
    match &f.chart {
        crate::plot::Chart::Bars(b) => b.title.clone(),
        crate::plot::Chart::Heatmap(h) => h.title.clone(),
        crate::plot::Chart::Forest(x) => x.title.clone(),
    }
}

/// The start of a self-contained page: doctype, title and the report's style, up to the
/// open body.
pub fn page_head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{n}</title>\n<style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
         table.df{{border-collapse:collapse;font-size:13px;margin:1em 0}}\
         table.df td,table.df th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}}\
         .warn{{background:#fff3cd;border:1px solid #e0c36c;padding:.5em 1em}}\
         .note{{color:#555;font-size:13px}} img{{max-width:100%}}\
         pre{{white-space:pre-wrap;background:#f6f6f6;padding:.5em}}</style></head><body>\n",
        n = escape(title)
    )
}

/// Writes `<dir>/report.html` for `run` and returns its path.
pub fn write_report(run: &RunOutput) -> Result<PathBuf> {
    let name = run.meta.experiment.name.as_str();
    let mut h = page_head(&format!("llm-judge: {name}"));
    h.push_str(&format!("<h1>llm-judge report: {}</h1>\n", escape(name)));
    h.push_str("<h2>Findings</h2>\n");
    h.push_str(&run.findings().to_html());
    for w in run.warnings() {
        h.push_str(&format!("<p class=\"warn\">{}</p>\n", escape(w)));
    }
    if let Some(s) = run.sanity() {
        h.push_str("<h2>Judge sanity check</h2>\n");
        h.push_str(&s.to_table().to_html());
    }
    if run.is_panel() {
        h.push_str("<h2>Judge panel</h2>\n");
        h.push_str(&run.panel_table().to_html());
        h.push_str(&run.panel_agreement_table().to_html());
        for s in run.panel_self_preference().unwrap_or_default() {
            h.push_str(&s.to_html());
        }
    }
    if let Ok(Some(c)) = run.calibration() {
        h.push_str("<h2>Calibration against human labels</h2>\n");
        h.push_str(&c.to_table().to_html());
    }
    h.push_str("<h2>Paired comparisons</h2>\n");
    figure(&mut h, run.forest_plot())?;
    h.push_str(&run.comparisons_table().to_html());
    h.push_str("<h2>Summary</h2>\n");
    h.push_str(&run.summary_table().to_html());
    h.push_str("<h2>Charts</h2>\n");
    for m in run.modes() {
        figure(&mut h, run.score_bars(m))?;
        if !m.spec().compares_two() {
            figure(&mut h, run.prompt_heatmap(m))?;
            figure(&mut h, run.score_distribution(m))?;
        }
    }
    h.push_str("<h2>Reliability</h2>\n");
    h.push_str(&run.reliability_table().to_html());
    if !run.usage().is_empty() {
        h.push_str("<h2>Tokens, time and cost</h2>\n");
        h.push_str(&run.usage_table().to_html());
    }
    h.push_str("<h2>Run</h2>\n<pre>");
    // run.json without what the sections above already show (the sanity check, warnings)
    // and the templates, which are long.
    let mut run_meta = serde_json::to_value(&run.meta).unwrap_or_default();
    if let Some(m) = run_meta.as_object_mut() {
        for shown in [
            "sanity",
            "warnings",
            "templates",
            "experiment_file",
            "usage",
        ] {
            m.remove(shown);
        }
    }
    h.push_str(&escape(
        &serde_json::to_string_pretty(&run_meta).unwrap_or_default(),
    ));
    h.push_str("</pre>\n<h2>Answers</h2>\n");
    for r in &run.response_rows {
        let scores: Vec<String> = run
            .judgment_rows
            .iter()
            .filter(|j| j.response_key == r.key && j.criterion == TOTAL)
            .map(|j| {
                format!(
                    "{}: {}",
                    j.mode,
                    j.value()
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "null".into())
                )
            })
            .collect();
        h.push_str(&format!(
            "<details><summary>{} / {} / {} #{} — {}</summary><p><b>{}</b></p><pre>{}</pre></details>\n",
            escape(&r.model),
            escape(&r.setting),
            escape(&r.prompt_id),
            r.sample,
            escape(&scores.join(", ")),
            escape(&r.prompt),
            escape(r.text.as_deref().or(r.error.as_deref()).unwrap_or(""))
        ));
    }
    h.push_str("</body></html>\n");
    let out = run.dir.join("report.html");
    write_atomic(&out, h.as_bytes())?;
    Ok(out)
}
