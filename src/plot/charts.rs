//! Charts built from results: the write-up's grouped bars, per-prompt and sampling-sweep
//! heatmaps, and score distributions per criterion.

use super::{Chart, Figure, GroupedBars, Heatmap};
use crate::analysis::SummaryRow;
use crate::error::{Error, Result};
use crate::records::{JudgmentRecord, ResponseRecord};

impl Figure {
    /// The write-up's results figure: total score per model for each sampling setting, with
    /// bootstrap 95 % CI error bars, from the summary rows of one judge mode.
    pub fn score_bars(summary: &[SummaryRow], mode: &str, criterion: &str) -> Result<Figure> {
        let rows: Vec<&SummaryRow> = summary
            .iter()
            .filter(|r| r.mode == mode && r.criterion == criterion)
            .collect();
        if rows.iter().all(|r| r.n == 0) {
            return Err(Error::Plot(format!(
                "no parsed scores for mode `{mode}`, criterion `{criterion}`"
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
        let top = rows
            .iter()
            .map(|r| {
                if r.ci_high.is_finite() {
                    r.ci_high
                } else {
                    r.mean
                }
            })
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        Ok(Figure {
            chart: Chart::Bars(GroupedBars {
                title: format!("Judge score ({mode}, {criterion}) by model and sampling setting"),
                y_label: format!("mean {criterion} score (95% bootstrap CI)"),
                x_label: "model".into(),
                groups,
                series,
                values,
                y_max: (top * 1.15).max(1.0),
            }),
            width: 900,
            height: 560,
        })
    }

    /// Per-prompt heatmap: one row per model/setting, one column per prompt, each cell the
    /// mean `criterion` score of `mode` (over samples); grey where nothing parsed.
    pub fn prompt_heatmap(js: &[JudgmentRecord], mode: &str, criterion: &str) -> Result<Figure> {
        let mut rows: Vec<String> = Vec::new();
        let mut cols: Vec<String> = Vec::new();
        let mut cells: Vec<((usize, usize), f64)> = Vec::new();
        for j in js
            .iter()
            .filter(|j| j.mode == mode && j.criterion == criterion)
        {
            let r = index_of(&mut rows, format!("{}/{}", j.model, j.setting));
            let c = index_of(&mut cols, j.prompt_id.clone());
            if let Some(v) = crate::analysis::value(j) {
                cells.push(((r, c), v));
            }
        }
        if rows.is_empty() {
            return Err(Error::Plot(format!(
                "no judgments for mode `{mode}`, criterion `{criterion}`"
            )));
        }
        Ok(Figure {
            chart: Chart::Heatmap(Heatmap {
                title: format!("{criterion} score per prompt ({mode})"),
                x_label: "prompt".into(),
                y_label: "model / setting".into(),
                values: mean_grid(rows.len(), cols.len(), &cells),
                rows: rows.clone(),
                cols: cols.clone(),
            }),
            width: 120
                + 7 * rows.iter().map(|r| r.len()).max().unwrap_or(0) as u32
                + 110 * cols.len() as u32,
            height: 170 + 48 * rows.len() as u32,
        })
    }

    /// Sampling-sweep heatmap: rows are temperatures (highest on top), columns `min_p`
    /// values, each cell the mean `criterion` score of `mode` over all answers generated
    /// with that pair (every model and prompt).
    pub fn sweep_heatmap(
        responses: &[ResponseRecord],
        js: &[JudgmentRecord],
        mode: &str,
        criterion: &str,
    ) -> Result<Figure> {
        let mut temps: Vec<f64> = Vec::new();
        let mut min_ps: Vec<f64> = Vec::new();
        let mut points: Vec<((f64, f64), f64)> = Vec::new();
        for j in js
            .iter()
            .filter(|j| j.mode == mode && j.criterion == criterion)
        {
            let Some(r) = responses.iter().find(|r| r.key == j.response_key) else {
                continue;
            };
            for (list, v) in [(&mut temps, r.temperature), (&mut min_ps, r.min_p)] {
                if !list.contains(&v) {
                    list.push(v);
                }
            }
            if let Some(v) = crate::analysis::value(j) {
                points.push(((r.temperature, r.min_p), v));
            }
        }
        if temps.is_empty() {
            return Err(Error::Plot(format!(
                "no judged answers for mode `{mode}`, criterion `{criterion}`"
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
                x_label: "min_p".into(),
                y_label: "temperature".into(),
                values: mean_grid(temps.len(), min_ps.len(), &cells),
                rows: temps.iter().map(|t| format!("T={t}")).collect(),
                cols: min_ps.iter().map(|m| format!("min_p={m}")).collect(),
            }),
            width: 200 + 130 * min_ps.len() as u32,
            height: 160 + 70 * temps.len() as u32,
        })
    }

    /// Score distribution per criterion: for each criterion, the share of judgments that gave
    /// each score 1..=scale. Expected-score judgments contribute their probabilities, the
    /// others their parsed score.
    pub fn score_distribution(js: &[JudgmentRecord], mode: &str) -> Result<Figure> {
        let picked: Vec<&JudgmentRecord> = js
            .iter()
            .filter(|j| j.mode == mode && j.criterion != "total" && j.criterion != "overall")
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
                y_label: "share of judgments".into(),
                x_label: "criterion".into(),
                groups,
                series: (1..=scale).map(|k| format!("score {k}")).collect(),
                values,
                y_max: 1.0,
            }),
            width: 900,
            height: 520,
        })
    }
}

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

    fn row(model: &str, setting: &str, mean: f64) -> SummaryRow {
        SummaryRow {
            model: model.into(),
            setting: setting.into(),
            mode: "listwise".into(),
            criterion: "total".into(),
            n: 10,
            n_null: 0,
            mean,
            std: 1.0,
            ci_low: mean - 0.5,
            ci_high: mean + 0.5,
        }
    }

    #[test]
    fn score_bars_render_labels_and_legend() {
        let s = vec![
            row("a", "p1", 9.0),
            row("a", "p2", 7.5),
            row("b", "p1", 8.0),
            row("b", "p2", f64::NAN),
        ];
        let f = Figure::score_bars(&s, "listwise", "total").unwrap();
        let svg = f.to_svg().unwrap();
        for label in [
            "p1",
            "p2",
            "a",
            "b",
            "Judge score (listwise, total) by model and sampling setting",
        ] {
            assert!(
                svg.contains(&format!("\n{label}\n</text>")),
                "{label} missing"
            );
        }
        assert!(Figure::score_bars(&s, "pairwise", "total").is_err());
    }

    fn judged(key: &str, criterion: &str, prompt: &str, v: f64) -> JudgmentRecord {
        JudgmentRecord {
            mode: "expected".into(),
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
            judged("a", "total", "p", 10.0),
            judged("b", "total", "p", 4.0),
            judged("c", "total", "p", 6.0),
            judged("d", "total", "p", 9.0),
            judged("d", "Relevance", "p", 1.0),
        ];
        let f = Figure::sweep_heatmap(&rs, &js, "expected", "total").unwrap();
        let h = heatmap(&f);
        assert_eq!(h.rows, ["T=1.5", "T=0.5"]);
        assert_eq!(h.cols, ["min_p=0", "min_p=0.1"]);
        assert_eq!(h.values[0], vec![4.0, 7.5]);
        assert!(h.values[1][0].is_nan());
        assert_eq!(h.values[1][1], 10.0);
        assert!(f.to_svg().unwrap().contains("temperature"));
        assert!(Figure::sweep_heatmap(&rs, &js, "rubric", "total").is_err());
    }

    #[test]
    fn prompt_heatmap_and_distribution() {
        let mut js = vec![
            judged("a", "total", "p1", 8.0),
            judged("b", "total", "p1", 6.0),
            judged("c", "total", "p2", 12.0),
        ];
        js[2].setting = "t".into();
        let h = Figure::prompt_heatmap(&js, "expected", "total").unwrap();
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
        let f = Figure::score_distribution(&d, "expected").unwrap();
        let Chart::Bars(b) = &f.chart else {
            panic!("not bars")
        };
        assert_eq!(b.groups, ["Relevance"]);
        assert_eq!(b.series.len(), 4);
        let shares: Vec<f64> = b.values[0].iter().map(|v| v.0).collect();
        assert_eq!(shares, [0.25, 0.25, 0.25, 0.25]);
        assert!(Figure::score_distribution(&d, "rubric").is_err());
    }

    #[test]
    fn png_is_written_and_a_bad_path_is_an_error() {
        let s = vec![row("a", "p1", 9.0), row("b", "p1", 8.0)];
        let f = Figure::score_bars(&s, "listwise", "total").unwrap();
        let dir = std::env::temp_dir().join(format!("llm-judge-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("bars.png");
        f.save_png(&png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let err = f.save_png(&dir.join("missing/dir/bars.png"));
        assert!(matches!(err, Err(Error::Plot(_))), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
