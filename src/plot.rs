//! Charts with plotters. A [`Figure`] keeps what to draw and renders it on demand as SVG or
//! PNG; in an evcxr notebook it shows inline (`evcxr_display`). Drawing errors are returned,
//! never panicked.

use crate::analysis::SummaryRow;
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn perr(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// Grouped bars: one group per model, one bar per setting, with CI error bars.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupedBars {
    /// Chart title.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Group names (x axis).
    pub groups: Vec<String>,
    /// Series names (legend).
    pub series: Vec<String>,
    /// `values[group][series]` = (mean, ci_low, ci_high); NaN draws nothing.
    pub values: Vec<Vec<(f64, f64, f64)>>,
    /// Y axis upper limit.
    pub y_max: f64,
}

/// A heatmap of values with row and column labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Chart title.
    pub title: String,
    /// Row labels (top to bottom).
    pub rows: Vec<String>,
    /// Column labels.
    pub cols: Vec<String>,
    /// `values[row][col]`; NaN is drawn grey.
    pub values: Vec<Vec<f64>>,
}

/// What a figure draws.
#[derive(Clone, Debug, PartialEq)]
pub enum Chart {
    /// Grouped bar chart.
    Bars(GroupedBars),
    /// Heatmap.
    Heatmap(Heatmap),
}

/// A chart with its size, ready to render.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// The chart.
    pub chart: Chart,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Figure {
    /// The write-up's results figure: total score per model for each sampling setting, with
    /// bootstrap 95 % CI error bars, from the summary rows of one judge mode.
    pub fn score_bars(summary: &[SummaryRow], mode: &str, criterion: &str) -> Result<Figure> {
        let rows: Vec<&SummaryRow> = summary
            .iter()
            .filter(|r| r.mode == mode && r.criterion == criterion)
            .collect();
        if rows.is_empty() {
            return Err(Error::Plot(format!(
                "no summary rows for mode `{mode}`, criterion `{criterion}`"
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
                groups,
                series,
                values,
                y_max: (top * 1.15).max(1.0),
            }),
            width: 900,
            height: 560,
        })
    }

    /// Renders to an SVG document.
    pub fn to_svg(&self) -> Result<String> {
        let mut s = String::new();
        {
            let root =
                SVGBackend::with_string(&mut s, (self.width, self.height)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(perr)?;
        }
        Ok(s)
    }

    /// Writes an SVG file (atomically).
    pub fn save_svg(&self, path: &Path) -> Result<()> {
        crate::store::write_atomic(path, self.to_svg()?.as_bytes())
    }

    /// Writes a PNG file.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let root = BitMapBackend::new(path, (self.width, self.height)).into_drawing_area();
        self.draw(&root)?;
        root.present().map_err(perr)
    }

    /// Shows the figure inline in an evcxr notebook.
    pub fn evcxr_display(&self) {
        match self.to_svg() {
            Ok(svg) => println!("EVCXR_BEGIN_CONTENT image/svg+xml\n{svg}\nEVCXR_END_CONTENT"),
            Err(e) => {
                println!("EVCXR_BEGIN_CONTENT text/plain\nplot error: {e}\nEVCXR_END_CONTENT")
            }
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(perr)?;
        match &self.chart {
            Chart::Bars(b) => draw_bars(root, b),
            Chart::Heatmap(h) => draw_heatmap(root, h),
        }
    }
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, b: &GroupedBars) -> Result<()> {
    let n = b.groups.len();
    let k = b.series.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(&b.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n as f64, 0f64..b.y_max)
        .map_err(perr)?;
    let groups = b.groups.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 && i < groups.len() {
                groups[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc(&b.y_label)
        .x_desc("model")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(perr)?;
    let width = 0.8 / k as f64;
    for (j, name) in b.series.iter().enumerate() {
        let color = PALETTE[j % PALETTE.len()];
        let bars = (0..n).filter_map(|i| {
            let (m, _, _) = b.values[i][j];
            m.is_finite().then(|| {
                let x0 = i as f64 + 0.1 + j as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.92, m)], color.filled())
            })
        });
        chart
            .draw_series(bars)
            .map_err(perr)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        let errs = (0..n).filter_map(|i| {
            let (m, lo, hi) = b.values[i][j];
            (m.is_finite() && lo.is_finite() && hi.is_finite()).then(|| {
                let x = i as f64 + 0.1 + j as f64 * width + width * 0.46;
                ErrorBar::new_vertical(x, lo, m, hi, BLACK.stroke_width(2), 10)
            })
        });
        chart.draw_series(errs).map_err(perr)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(perr)?;
    Ok(())
}

fn draw_heatmap<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, h: &Heatmap) -> Result<()> {
    let (nr, nc) = (h.rows.len(), h.cols.len());
    let finite: Vec<f64> = h
        .values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (rows, cols) = (h.rows.clone(), h.cols.clone());
    let mut chart = ChartBuilder::on(root)
        .caption(&h.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(140)
        .build_cartesian_2d(0f64..nc as f64, 0f64..nr as f64)
        .map_err(perr)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nc * 2 + 1)
        .y_labels(nr * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 && i < cols.len() {
                cols[i].clone()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| {
            let i = y.floor() as usize;
            if (y - i as f64 - 0.5).abs() < 1e-6 && i < rows.len() {
                rows[rows.len() - 1 - i].clone()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(perr)?;
    for (r, row) in h.values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let y = (nr - 1 - r) as f64;
            let color = if v.is_finite() {
                let t = (v - lo) / span;
                RGBColor(
                    (255.0 * (1.0 - t) + 31.0 * t) as u8,
                    (255.0 * (1.0 - t) + 119.0 * t) as u8,
                    (255.0 * (1.0 - t) + 180.0 * t) as u8,
                )
            } else {
                RGBColor(200, 200, 200)
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(c as f64, y), (c as f64 + 1.0, y + 1.0)],
                    color.filled(),
                )))
                .map_err(perr)?;
            if v.is_finite() {
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{v:.2}"),
                        (c as f64 + 0.35, y + 0.55),
                        ("sans-serif", 13),
                    )))
                    .map_err(perr)?;
            }
        }
    }
    Ok(())
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
}
