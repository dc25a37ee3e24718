//! Drawing the chart kinds with plotters.

use super::charts::PANEL_AXIS;
use super::{perr, Forest, ForestPanel, GroupedBars, Heatmap, PALETTE};
use crate::error::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Title and subtitle at the top; returns the area below them.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
) -> Result<DrawingArea<DB, Shift>> {
    let (top, rest) = root.split_vertically(if subtitle.is_empty() { 34 } else { 58 });
    top.draw(&Text::new(title.to_string(), (16, 8), ("sans-serif", 21)))
        .map_err(perr)?;
    if !subtitle.is_empty() {
        top.draw(&Text::new(
            subtitle.to_string(),
            (16, 34),
            ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(perr)?;
    }
    Ok(rest)
}

/// Labels at the middle of unit-wide bands: `x.5` for `x` in `0..labels.len()`.
fn band_label(labels: &[String], x: f64) -> String {
    let i = x.floor() as usize;
    if (x - i as f64 - 0.5).abs() < 1e-6 && i < labels.len() {
        labels[i].clone()
    } else {
        String::new()
    }
}

pub(crate) fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    b: &GroupedBars,
) -> Result<()> {
    let area = titled(root, &b.title, &b.subtitle)?;
    let n = b.groups.len();
    let k = b.series.len().max(1);
    let (y0, y1) = b.y_range;
    let mut chart = ChartBuilder::on(&area)
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n as f64, y0..y1)
        .map_err(perr)?;
    let groups = b.groups.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| band_label(&groups, *x))
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
                Rectangle::new([(x0, y0), (x0 + width * 0.92, m.max(y0))], color.filled())
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

/// White to blue over `t` in 0..=1.
fn shade(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    RGBColor(
        (255.0 * (1.0 - t) + 31.0 * t) as u8,
        (255.0 * (1.0 - t) + 119.0 * t) as u8,
        (255.0 * (1.0 - t) + 180.0 * t) as u8,
    )
}

pub(crate) fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &Heatmap,
) -> Result<()> {
    let area = titled(root, &h.title, &h.subtitle)?;
    let (w, _) = area.dim_in_pixel();
    let (main, legend) = area.split_horizontally(w.saturating_sub(110));
    let (nr, nc) = (h.rows.len(), h.cols.len());
    let (lo, hi) = h.range;
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (rows, cols) = (h.rows.clone(), h.cols.clone());
    // Room for the longest row label (about 7 px per character at 13 px) and the axis title.
    let longest = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0) as u32;
    let mut chart = ChartBuilder::on(&main)
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
        .x_label_formatter(&|x| band_label(&cols, *x))
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
                shade((v - lo) / span)
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
    // The colour scale: a bar from the range's low end (bottom) to its high end (top).
    let (_, lh) = legend.dim_in_pixel();
    let (top, bottom) = (30i32, lh as i32 - 80);
    let steps = 40;
    for s in 0..steps {
        let y0 = bottom - (bottom - top) * s / steps;
        let y1 = bottom - (bottom - top) * (s + 1) / steps;
        legend
            .draw(&Rectangle::new(
                [(20, y1), (44, y0)],
                shade((s as f64 + 0.5) / steps as f64).filled(),
            ))
            .map_err(perr)?;
    }
    legend
        .draw(&Rectangle::new(
            [(20, top), (44, bottom)],
            BLACK.stroke_width(1),
        ))
        .map_err(perr)?;
    for (v, y) in [
        (hi, top),
        ((lo + hi) / 2.0, (top + bottom) / 2),
        (lo, bottom),
    ] {
        legend
            .draw(&Text::new(
                format!("{v:.3}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string(),
                (50, y - 7),
                ("sans-serif", 13),
            ))
            .map_err(perr)?;
    }
    legend
        .draw(&Text::new(
            h.scale_label.clone(),
            (8, bottom + 16),
            ("sans-serif", 12),
        ))
        .map_err(perr)?;
    legend
        .draw(&Rectangle::new(
            [(20, bottom + 40), (44, bottom + 54)],
            RGBColor(200, 200, 200).filled(),
        ))
        .map_err(perr)?;
    legend
        .draw(&Text::new(
            "no score",
            (50, bottom + 40),
            ("sans-serif", 12),
        ))
        .map_err(perr)?;
    Ok(())
}

pub(crate) fn draw_forest<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    f: &Forest,
) -> Result<()> {
    let area = titled(root, &f.title, &f.subtitle)?;
    let panels: Vec<&ForestPanel> = f.drawn().collect();
    if panels.is_empty() {
        area.draw(&Text::new(
            "No paired comparison to draw".to_string(),
            (16, 24),
            ("sans-serif", 16),
        ))
        .map_err(perr)?;
        return Ok(());
    }
    // Every panel's label area as wide as the longest label of all, so that their zero
    // lines (each axis runs symmetrically around zero) stand one above the other.
    let longest = f.rows().map(|r| r.chars().count()).max().unwrap_or(0) as u32;
    // Each panel's share of the height: its rows, and an axis.
    let weights: Vec<u32> = panels
        .iter()
        .map(|p| 42 * p.rows.len() as u32 + PANEL_AXIS)
        .collect();
    let total: u32 = weights.iter().sum();
    let height = area.dim_in_pixel().1;
    let mut breaks = Vec::with_capacity(panels.len());
    let mut acc = 0u32;
    for w in &weights[..weights.len() - 1] {
        acc += w;
        breaks.push((acc as u64 * height as u64 / total.max(1) as u64) as i32);
    }
    for (panel, sub) in panels
        .iter()
        .zip(area.split_by_breakpoints(Vec::<i32>::new(), breaks))
    {
        forest_panel(&sub, panel, longest)?;
    }
    Ok(())
}

/// One panel of a forest plot: its rows on an axis symmetric around zero.
fn forest_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    f: &ForestPanel,
    longest: u32,
) -> Result<()> {
    let n = f.rows.len();
    let ext = f
        .values
        .iter()
        .flat_map(|(m, lo, hi)| [*m, *lo, *hi])
        .filter(|v| v.is_finite())
        .fold(0.0f64, |a, v| a.max(v.abs()));
    let ext = if ext > 0.0 { ext * 1.15 } else { 1.0 };
    let rows = f.rows.clone();
    let mut chart = ChartBuilder::on(area)
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(30 + 7 * longest)
        .build_cartesian_2d(-ext..ext, 0f64..n as f64)
        .map_err(perr)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = y.floor() as usize;
            if (y - i as f64 - 0.5).abs() < 1e-6 && i < rows.len() {
                rows[rows.len() - 1 - i].clone()
            } else {
                String::new()
            }
        })
        .x_desc(&f.x_label)
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(perr)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (0.0, n as f64)],
            RGBColor(214, 39, 40).stroke_width(2),
        )))
        .map_err(perr)?;
    for (i, (m, lo, hi)) in f.values.iter().take(n).enumerate() {
        let y = (n - 1 - i) as f64 + 0.5;
        if lo.is_finite() && hi.is_finite() {
            chart
                .draw_series(std::iter::once(ErrorBar::new_horizontal(
                    y,
                    *lo,
                    *m,
                    *hi,
                    BLACK.stroke_width(2),
                    10,
                )))
                .map_err(perr)?;
        }
        if m.is_finite() {
            chart
                .draw_series(std::iter::once(Circle::new(
                    (*m, y),
                    5,
                    PALETTE[0].filled(),
                )))
                .map_err(perr)?;
        }
    }
    Ok(())
}
