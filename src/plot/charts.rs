//! Charts built from results: the write-up's grouped bars, per-prompt and sampling-sweep
//! heatmaps, score distributions per criterion, and the forest plot of paired comparisons.
//! Each takes the score's own range (3-12 for the write-up's totals) and a subtitle that says
//! its sample size and judge.

use super::{Chart, Figure, Forest, GroupedBars, Heatmap};
use crate::analysis::{Comparison, SummaryRow};
use crate::error::{Error, Result};
use crate::records::{JudgmentRecord, Mode, ResponseRecord, OVERALL, TOTAL};

impl Figure {
    /// The write-up's results figure: mean `criterion` score per model for each sampling
    /// setting, with bootstrap 95 % CI error bars, from the summary rows of one mode; the
    /// axis spans `range`.
    pub fn score_bars(
        summary: &[SummaryRow],
        mode: Mode,
        criterion: &str,
        range: (f64, f64),
        subtitle: &str,
    ) -> Result<Figure> {
        let rows: Vec<&SummaryRow> = summary
            .iter()
            .filter(|r| r.mode == mode && r.criterion == criterion && r.n > 0)
            .collect();
        if rows.is_empty() {
            return Err(Error::Plot(format!(
                "no parsed scores for mode {mode}, criterion `{criterion}`: nothing to draw"
            )));
        }
        let mut groups: Vec<String> = Vec::new();
        let mut series: Vec<String> = Vec::new();
        for r in &rows {
            if !groups.contains(&r.model) {
                groups.push(r.model.clone());
            }
            if !series.contains(&r.setting) {
                series.push(r.setting.clone());
            }
        }
        let values = groups
            .iter()
            .map(|g| {
                series
                    .iter()
                    .map(|s| {
                        rows.iter()
                            .find(|r| &r.model == g && &r.setting == s)
                            .map(|r| (r.mean, r.ci_low, r.ci_high))
                            .unwrap_or((f64::NAN, f64::NAN, f64::NAN))
                    })
                    .collect()
            })
            .collect::<Vec<Vec<_>>>();
        Ok(Figure {
            chart: Chart::Bars(GroupedBars {
                title: format!("Judge score ({mode}, {criterion}) by model and sampling setting"),
                subtitle: subtitle.to_string(),
                y_label: format!(
                    "mean {criterion} (axis: the scale, {}-{}; 95% CI)",
                    range.0, range.1
                ),
                x_label: "model".into(),
                groups,
                series,
                values,
                y_range: range,
            }),
            width: 900,
            height: 580,
        })
    }

    /// Per-prompt heatmap: one row per model/setting, one column per prompt, each cell the
    /// mean `criterion` score of `mode` (over samples); grey where nothing parsed. Colours
    /// span `range`.
    pub fn prompt_heatmap(
        js: &[JudgmentRecord],
        mode: Mode,
        criterion: &str,
        range: (f64, f64),
        subtitle: &str,
    ) -> Result<Figure> {
        let mut rows: Vec<String> = Vec::new();
        let mut cols: Vec<String> = Vec::new();
        let mut cells: Vec<((usize, usize), f64)> = Vec::new();
        for j in js
            .iter()
            .filter(|j| j.mode == mode && j.criterion == criterion)
        {
            let r = index_of(&mut rows, format!("{}/{}", j.model, j.setting));
            let c = index_of(&mut cols, j.prompt_id.clone());
            if let Some(v) = j.value() {
                cells.push(((r, c), v));
            }
        }
        if cells.is_empty() {
            return Err(Error::Plot(format!(
                "no parsed scores for mode {mode}, criterion `{criterion}`: nothing to draw"
            )));
        }
        Ok(Figure {
            chart: Chart::Heatmap(Heatmap {
                title: format!("{criterion} score per prompt ({mode})"),
                subtitle: subtitle.to_string(),
                range,
                scale_label: format!("mean {criterion}"),
                x_label: "prompt".into(),
                y_label: "model / setting".into(),
                values: mean_grid(rows.len(), cols.len(), &cells),
                rows: rows.clone(),
                cols: cols.clone(),
            }),
            width: 230
                + 7 * rows.iter().map(|r| r.len()).max().unwrap_or(0) as u32
                + 110 * cols.len() as u32,
            height: (200 + 48 * rows.len() as u32).max(330),
        })
    }

    /// Sampling-sweep heatmap: rows are temperatures (highest on top), columns `min_p`
    /// values, each cell the mean `criterion` score of `mode` over all answers generated
    /// with that pair (every model and prompt).
    pub fn sweep_heatmap(
        responses: &[ResponseRecord],
        js: &[JudgmentRecord],
        mode: Mode,
        criterion: &str,
        range: (f64, f64),
        subtitle: &str,
    ) -> Result<Figure> {
        let by_key: std::collections::HashMap<&str, &ResponseRecord> =
            responses.iter().map(|r| (r.key.as_str(), r)).collect();
        let mut temps: Vec<f64> = Vec::new();
        let mut min_ps: Vec<f64> = Vec::new();
        let mut points: Vec<((f64, f64), f64)> = Vec::new();
        for j in js
            .iter()
            .filter(|j| j.mode == mode && j.criterion == criterion)
        {
            let Some(r) = by_key.get(j.response_key.as_str()) else {
                continue;
            };
            for (list, v) in [(&mut temps, r.temperature), (&mut min_ps, r.min_p)] {
                if !list.contains(&v) {
                    list.push(v);
                }
            }
            if let Some(v) = j.value() {
                points.push(((r.temperature, r.min_p), v));
            }
        }
        if points.is_empty() {
            return Err(Error::Plot(format!(
                "no parsed scores for mode {mode}, criterion `{criterion}`: nothing to draw"
            )));
        }
        temps.sort_by(|a, b| b.total_cmp(a));
        min_ps.sort_by(|a, b| a.total_cmp(b));
        let cells: Vec<((usize, usize), f64)> = points
            .iter()
            .filter_map(|((t, m), v)| {
                let r = temps.iter().position(|x| x == t)?;
                let c = min_ps.iter().position(|x| x == m)?;
                Some(((r, c), *v))
            })
            .collect();
        Ok(Figure {
            chart: Chart::Heatmap(Heatmap {
                title: format!("Mean {criterion} score ({mode}) by temperature and min_p"),
                subtitle: subtitle.to_string(),
                range,
                scale_label: format!("mean {criterion}"),
                x_label: "min_p".into(),
                y_label: "temperature".into(),
                values: mean_grid(temps.len(), min_ps.len(), &cells),
                rows: temps.iter().map(|t| format!("T={t}")).collect(),
                cols: min_ps.iter().map(|m| format!("min_p={m}")).collect(),
            }),
            width: 320 + 130 * min_ps.len() as u32,
            height: (190 + 70 * temps.len() as u32).max(330),
        })
    }

    /// Score distribution per criterion: for each criterion, the share of judgments that gave
    /// each score 1..=scale. Expected-score judgments contribute their probabilities, the
    /// others their parsed score.
    pub fn score_distribution(js: &[JudgmentRecord], mode: Mode, subtitle: &str) -> Result<Figure> {
        let picked: Vec<&JudgmentRecord> = js
            .iter()
            .filter(|j| j.mode == mode && j.criterion != TOTAL && j.criterion != OVERALL)
            .filter(|j| j.score.is_some() || j.probs.is_some())
            .collect();
        let scale = picked
            .iter()
            .filter_map(|j| {
                j.probs
                    .as_ref()
                    .map(|p| p.len())
                    .or(j.score.map(|s| s.round().max(1.0) as usize))
            })
            .max()
            .unwrap_or(0);
        if scale == 0 {
            return Err(Error::Plot(format!(
                "no parsed criterion scores for mode `{mode}`"
            )));
        }
        let mut groups: Vec<String> = Vec::new();
        let mut mass: Vec<Vec<f64>> = Vec::new();
        for j in picked {
            let g = index_of(&mut groups, j.criterion.clone());
            if mass.len() < groups.len() {
                mass.push(vec![0.0; scale]);
            }
            match (&j.probs, j.score) {
                (Some(p), _) => {
                    let total: f64 = p.iter().sum();
                    for (k, x) in p.iter().enumerate().take(scale) {
                        mass[g][k] += if total > 0.0 { x / total } else { 0.0 };
                    }
                }
                (None, Some(s)) => {
                    let k = (s.round() as usize).clamp(1, scale) - 1;
                    mass[g][k] += 1.0;
                }
                (None, None) => {}
            }
        }
        let values = mass
            .iter()
            .map(|m| {
                let n: f64 = m.iter().sum();
                m.iter()
                    .map(|x| {
                        let v = if n > 0.0 { x / n } else { f64::NAN };
                        (v, f64::NAN, f64::NAN)
                    })
                    .collect()
            })
            .collect();
        Ok(Figure {
            chart: Chart::Bars(GroupedBars {
                title: format!("Score distribution per criterion ({mode})"),
                subtitle: subtitle.to_string(),
                y_label: "share of judgments".into(),
                x_label: "criterion".into(),
                groups,
                series: (1..=scale).map(|k| format!("score {k}")).collect(),
                values,
                y_range: (0.0, 1.0),
            }),
            width: 900,
            height: 540,
        })
    }

    /// Forest plot of paired comparisons: B − A with its 95 % CI per comparison, zero
    /// marked, in one panel per unit (score modes in points, pairwise modes in preference)
    /// with its own axis, so that neither unit's intervals are squashed by the other's.
    /// Rows are labelled `B − A (mode, criterion, n)`, and `exploratory` outside the
    /// primary mode's headline comparisons. With no comparison the figure
    /// says so in place of the plot (the subtitle should say why), so a notebook cell that
    /// shows it does not fail on a run too small to compare.
    pub fn forest(comparisons: &[&Comparison], subtitle: &str) -> Result<Figure> {
        let rows = comparisons.iter().map(|c| {
            (
                format!("B − A ({})", c.mode.spec().unit()),
                format!(
                    "{} − {} ({}, {}, n={}{})",
                    c.b,
                    c.a,
                    c.mode,
                    c.criterion,
                    c.n,
                    if c.exploratory { ", exploratory" } else { "" }
                ),
                (c.mean_diff, c.ci_low, c.ci_high),
            )
        });
        Ok(Figure::of_forest(Forest::grouped(
            "Paired differences between cells (B − A), 95% CI over prompts",
            subtitle,
            rows,
        )))
    }

    /// A forest plot sized for its labels: wide enough for the longest row label and for
    /// the subtitle on one line, a row's height per estimate and an axis per panel.
    pub fn of_forest(forest: Forest) -> Figure {
        let longest = forest.rows().map(|r| r.chars().count()).max().unwrap_or(0) as u32;
        let width = (360 + 7 * longest).max(40 + 13 * forest.subtitle.chars().count() as u32 / 2);
        let extra_axes = forest.drawn().count().saturating_sub(1) as u32;
        let height = 150 + 42 * forest.n_rows().max(1) as u32 + PANEL_AXIS * extra_axes;
        Figure {
            chart: Chart::Forest(forest),
            width,
            height,
        }
    }
}

/// Pixels a forest panel takes besides its rows: its x axis, its label and margins.
pub(crate) const PANEL_AXIS: u32 = 92;

fn index_of(list: &mut Vec<String>, item: String) -> usize {
    match list.iter().position(|x| *x == item) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

/// Means of the values in each (row, col) cell; NaN for empty cells.
fn mean_grid(nr: usize, nc: usize, cells: &[((usize, usize), f64)]) -> Vec<Vec<f64>> {
    let mut sum = vec![vec![0.0; nc]; nr];
    let mut n = vec![vec![0usize; nc]; nr];
    for ((r, c), v) in cells {
        sum[*r][*c] += v;
        n[*r][*c] += 1;
    }
    (0..nr)
        .map(|r| {
            (0..nc)
                .map(|c| {
                    if n[r][c] > 0 {
                        sum[r][c] / n[r][c] as f64
                    } else {
                        f64::NAN
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an SVG has a text element that reads exactly `label`.
    fn has_text(svg: &str, label: &str) -> bool {
        svg.contains(&format!("\n{label}\n</text>")) || svg.contains(&format!(">{label}</text>"))
    }

    fn row(model: &str, setting: &str, mean: f64) -> SummaryRow {
        SummaryRow {
            model: model.into(),
            setting: setting.into(),
            mode: Mode::Listwise,
            criterion: TOTAL.into(),
            n: 10,
            prompts: 10,
            n_null: 0,
            n_flagged: 0,
            n_excluded: 0,
            mean,
            std: 1.0,
            ci_low: mean - 0.5,
            ci_high: mean + 0.5,
            judge_flagged: None,
        }
    }

    #[test]
    fn score_bars_render_labels_range_and_subtitle() {
        let s = vec![
            row("a", "p1", 9.0),
            row("a", "p2", 7.5),
            row("b", "p1", 8.0),
            row("b", "p2", f64::NAN),
        ];
        let f =
            Figure::score_bars(&s, Mode::Listwise, TOTAL, (3.0, 12.0), "n = 40; judge j").unwrap();
        let svg = f.to_svg().unwrap();
        for label in [
            "p1",
            "p2",
            "a",
            "b",
            "Judge score (listwise, total) by model and sampling setting",
            "n = 40; judge j",
            "mean total (axis: the scale, 3-12; 95% CI)",
        ] {
            assert!(has_text(&svg, label), "{label} missing");
        }
        let Chart::Bars(b) = &f.chart else { panic!() };
        assert_eq!(b.y_range, (3.0, 12.0));
        assert!(Figure::score_bars(&s, Mode::Pairwise, TOTAL, (0.0, 1.0), "").is_err());
    }

    fn judged(key: &str, criterion: &str, prompt: &str, v: f64) -> JudgmentRecord {
        JudgmentRecord {
            mode: Mode::Expected,
            criterion: criterion.into(),
            response_key: key.into(),
            model: "m".into(),
            setting: "s".into(),
            prompt_id: prompt.into(),
            score: Some(v.round()),
            expected_score: Some(v),
            ..Default::default()
        }
    }

    fn answer(key: &str, t: f64, min_p: f64) -> ResponseRecord {
        ResponseRecord {
            key: key.into(),
            temperature: t,
            min_p,
            text: Some("x".into()),
            ..Default::default()
        }
    }

    fn heatmap(f: &Figure) -> &Heatmap {
        match &f.chart {
            Chart::Heatmap(h) => h,
            other => panic!("not a heatmap: {other:?}"),
        }
    }

    #[test]
    fn sweep_heatmap_orders_axes_and_averages_cells() {
        let rs = vec![
            answer("a", 0.5, 0.1),
            answer("b", 1.5, 0.0),
            answer("c", 1.5, 0.1),
            answer("d", 1.5, 0.1),
        ];
        let js = vec![
            judged("a", TOTAL, "p", 10.0),
            judged("b", TOTAL, "p", 4.0),
            judged("c", TOTAL, "p", 6.0),
            judged("d", TOTAL, "p", 9.0),
            judged("d", "Relevance", "p", 1.0),
        ];
        let f = Figure::sweep_heatmap(&rs, &js, Mode::Expected, TOTAL, (3.0, 12.0), "n").unwrap();
        let h = heatmap(&f);
        assert_eq!(h.rows, ["T=1.5", "T=0.5"]);
        assert_eq!(h.cols, ["min_p=0", "min_p=0.1"]);
        assert_eq!(h.values[0], vec![4.0, 7.5]);
        assert!(h.values[1][0].is_nan());
        assert_eq!(h.values[1][1], 10.0);
        assert_eq!(h.range, (3.0, 12.0));
        let svg = f.to_svg().unwrap();
        assert!(svg.contains("temperature"));
        // The colour scale names its ends and what it measures.
        for label in ["12", "3", "7.5", "mean total", "no score"] {
            assert!(
                has_text(&svg, label),
                "{label} missing from the colour scale"
            );
        }
        assert!(Figure::sweep_heatmap(&rs, &js, Mode::Rubric, TOTAL, (3.0, 12.0), "").is_err());
    }

    #[test]
    fn prompt_heatmap_and_distribution() {
        let mut js = vec![
            judged("a", TOTAL, "p1", 8.0),
            judged("b", TOTAL, "p1", 6.0),
            judged("c", TOTAL, "p2", 12.0),
        ];
        js[2].setting = "t".into();
        let h = Figure::prompt_heatmap(&js, Mode::Expected, TOTAL, (3.0, 12.0), "").unwrap();
        let h = heatmap(&h);
        assert_eq!(h.rows, ["m/s", "m/t"]);
        assert_eq!(h.cols, ["p1", "p2"]);
        assert_eq!(h.values[0][0], 7.0);
        assert!(h.values[0][1].is_nan());

        // Two expected-score judgments of one criterion: shares are the mean probabilities.
        let mut d = vec![
            judged("a", "Relevance", "p1", 2.0),
            judged("b", "Relevance", "p1", 3.0),
        ];
        d[0].probs = Some(vec![0.5, 0.5, 0.0, 0.0]);
        d[1].probs = Some(vec![0.0, 0.0, 0.5, 0.5]);
        let f = Figure::score_distribution(&d, Mode::Expected, "").unwrap();
        let Chart::Bars(b) = &f.chart else {
            panic!("not bars")
        };
        assert_eq!(b.groups, ["Relevance"]);
        assert_eq!(b.series.len(), 4);
        let shares: Vec<f64> = b.values[0].iter().map(|v| v.0).collect();
        assert_eq!(shares, [0.25, 0.25, 0.25, 0.25]);
        assert!(Figure::score_distribution(&d, Mode::Rubric, "").is_err());
    }

    #[test]
    fn forest_plot_marks_zero_and_labels_rows() {
        let c = Comparison::example();
        let f = Figure::forest(&[&c], "judge j").unwrap();
        let svg = f.to_svg().unwrap();
        assert!(
            svg.contains("m/p2 − m/p1 (expected, total, n=10)"),
            "row label"
        );
        let empty = Figure::forest(&[], "3 comparison(s) with fewer than 5 prompts").unwrap();
        assert!(empty.is_empty() && !f.is_empty());
        let svg = empty.to_svg().unwrap();
        assert!(has_text(&svg, "No paired comparison to draw"), "{svg}");
        assert!(svg.contains("3 comparison(s) with fewer than 5 prompts"));
    }

    #[test]
    fn forest_plot_draws_each_unit_on_its_own_axis() {
        // A listwise difference of points and a pairwise-expected preference, two orders
        // of magnitude apart: on one axis the preference's interval would be a dot.
        let points = Comparison {
            mode: Mode::Listwise,
            mean_diff: -3.0,
            ci_low: -5.0,
            ci_high: -1.0,
            ..Comparison::example()
        };
        let preference = Comparison {
            mode: Mode::PairwiseExpected,
            criterion: "overall".into(),
            mean_diff: 0.04,
            ci_low: 0.01,
            ci_high: 0.07,
            ..Comparison::example()
        };
        let f = Figure::forest(&[&points, &preference, &points], "judge j").unwrap();
        let Chart::Forest(forest) = &f.chart else {
            panic!("a forest plot")
        };
        let labels: Vec<&str> = forest.panels.iter().map(|p| p.x_label.as_str()).collect();
        assert_eq!(labels, ["B − A (points)", "B − A (preference)"]);
        assert_eq!(forest.panels[0].values, [(-3.0, -5.0, -1.0); 2]);
        assert_eq!(forest.panels[1].values, [(0.04, 0.01, 0.07)]);
        assert_eq!(forest.n_rows(), 3);
        let one = Figure::forest(&[&points], "judge j").unwrap();
        assert!(f.height > one.height + 2 * 42, "room for the second axis");
        let svg = f.to_svg().unwrap();
        assert!(has_text(&svg, "B − A (points)"), "{svg}");
        assert!(has_text(&svg, "B − A (preference)"), "{svg}");
        assert!(
            svg.contains("(pairwise_expected, overall, n=10)"),
            "row label"
        );
    }

    #[test]
    fn png_is_written_and_a_bad_path_is_an_error() {
        let s = vec![row("a", "p1", 9.0), row("b", "p1", 8.0)];
        let f = Figure::score_bars(&s, Mode::Listwise, TOTAL, (3.0, 12.0), "").unwrap();
        let dir = std::env::temp_dir().join(format!("llm-judge-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("bars.png");
        f.save_png(&png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert_eq!(&f.to_png().unwrap()[1..4], b"PNG");
        let err = f.save_png(&dir.join("missing/dir/bars.png"));
        assert!(matches!(err, Err(Error::Plot(_))), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
