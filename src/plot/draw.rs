//! Drawing the chart kinds with plotters.

use super::{perr, GroupedBars, Heatmap, PALETTE};
use crate::error::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

pub(crate) fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    b: &GroupedBars,
) -> Result<()> {
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
        .x_desc(&b.x_label)
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

pub(crate) fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &Heatmap,
) -> Result<()> {
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
    // Room for the longest row label (about 7 px per character at 13 px) and the axis title.
    let longest = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0) as u32;
    let mut chart = ChartBuilder::on(root)
        .caption(&h.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(40 + 7 * longest)
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
        .x_desc(&h.x_label)
        .y_desc(&h.y_label)
        .axis_desc_style(("sans-serif", 15))
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
