//! Charts with plotters. A [`Figure`] keeps what to draw and renders it on demand as SVG or
//! PNG; in an evcxr notebook it shows inline (`evcxr_display`). Drawing errors are returned,
//! never panicked.

mod charts;
mod draw;

use crate::error::{Error, Result};
use draw::{draw_bars, draw_forest, draw_heatmap};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub(crate) fn perr(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// Grouped bars: one group per model, one bar per setting, with CI error bars.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupedBars {
    /// Chart title.
    pub title: String,
    /// A second line under the title: sample sizes and the judge.
    pub subtitle: String,
    /// Y axis label.
    pub y_label: String,
    /// X axis label.
    pub x_label: String,
    /// Group names (x axis).
    pub groups: Vec<String>,
    /// Series names (legend).
    pub series: Vec<String>,
    /// `values[group][series]` = (mean, ci_low, ci_high); NaN draws nothing.
    pub values: Vec<Vec<(f64, f64, f64)>>,
    /// Y axis range (the scale's own range for scores).
    pub y_range: (f64, f64),
}

/// A heatmap of values with row and column labels, and a colour scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Chart title.
    pub title: String,
    /// A second line under the title: sample sizes and the judge.
    pub subtitle: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Row labels (top to bottom).
    pub rows: Vec<String>,
    /// Column labels.
    pub cols: Vec<String>,
    /// `values[row][col]`; NaN is drawn grey.
    pub values: Vec<Vec<f64>>,
    /// The values the colour scale runs over (the score's own range).
    pub range: (f64, f64),
    /// What the colour scale measures.
    pub scale_label: String,
}

/// A forest plot: one estimate with its interval per row, and a line at zero, in one panel
/// per unit (points, preference) so that each unit's intervals are drawn on their own axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Forest {
    /// Chart title.
    pub title: String,
    /// A second line under the title.
    pub subtitle: String,
    /// The panels, top to bottom; no panel (or none with a row) draws the figure's
    /// "nothing to draw" note.
    pub panels: Vec<ForestPanel>,
}

/// One panel of a [`Forest`]: estimates in one unit on one axis.
#[derive(Clone, Debug, PartialEq)]
pub struct ForestPanel {
    /// X axis label (the unit).
    pub x_label: String,
    /// Row labels (top to bottom).
    pub rows: Vec<String>,
    /// `(estimate, low, high)` per row (a row without one, or a value without a row, is
    /// not drawn).
    pub values: Vec<(f64, f64, f64)>,
}

impl Forest {
    /// A forest of `rows` (`(x_label, row label, (estimate, low, high))`), one panel per
    /// distinct x label in order of first appearance, rows keeping their order within it.
    pub fn grouped(
        title: impl Into<String>,
        subtitle: impl Into<String>,
        rows: impl IntoIterator<Item = (String, String, (f64, f64, f64))>,
    ) -> Self {
        let mut panels: Vec<ForestPanel> = Vec::new();
        for (x_label, row, value) in rows {
            let i = match panels.iter().position(|p| p.x_label == x_label) {
                Some(i) => i,
                None => {
                    panels.push(ForestPanel {
                        x_label,
                        rows: Vec::new(),
                        values: Vec::new(),
                    });
                    panels.len() - 1
                }
            };
            panels[i].rows.push(row);
            panels[i].values.push(value);
        }
        Self {
            title: title.into(),
            subtitle: subtitle.into(),
            panels,
        }
    }

    /// The panels that are drawn: those with a row.
    pub fn drawn(&self) -> impl Iterator<Item = &ForestPanel> {
        self.panels.iter().filter(|p| !p.rows.is_empty())
    }

    /// Rows over all panels.
    pub fn n_rows(&self) -> usize {
        self.panels.iter().map(|p| p.rows.len()).sum()
    }

    /// Every row label, panel by panel.
    pub fn rows(&self) -> impl Iterator<Item = &String> {
        self.panels.iter().flat_map(|p| &p.rows)
    }
}

/// What a figure draws.
#[derive(Clone, Debug, PartialEq)]
pub enum Chart {
    /// Grouped bar chart.
    Bars(GroupedBars),
    /// Heatmap.
    Heatmap(Heatmap),
    /// Forest plot.
    Forest(Forest),
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
    /// True when the figure has nothing plotted (a forest plot without comparisons), so a
    /// caller that saves charts can leave it out.
    pub fn is_empty(&self) -> bool {
        matches!(&self.chart, Chart::Forest(f) if f.n_rows() == 0)
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

    /// Shows the figure inline in an evcxr notebook, as a PNG (an image every notebook
    /// viewer and HTML export shows the same way, with its fonts already drawn).
    pub fn evcxr_display(&self) {
        match self.to_png_base64() {
            Ok(b64) => crate::evcxr::show("image/png", &b64),
            Err(e) => crate::evcxr::show("text/plain", &format!("plot error: {e}")),
        }
    }

    /// The figure as a PNG file's bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let (w, h) = (self.width, self.height);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(perr)?;
        }
        let img = image::RgbImage::from_raw(w, h, rgb)
            .ok_or_else(|| Error::Plot("the image buffer has the wrong size".into()))?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .map_err(perr)?;
        Ok(out.into_inner())
    }

    /// The PNG, base64-encoded (for inline `data:` images).
    pub fn to_png_base64(&self) -> Result<String> {
        Ok(base64(&self.to_png()?))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(perr)?;
        match &self.chart {
            Chart::Bars(b) => draw_bars(root, b),
            Chart::Heatmap(h) => draw_heatmap(root, h),
            Chart::Forest(f) => draw_forest(root, f),
        }
    }
}

/// Standard base64 (RFC 4648) with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (i, shift) in [18, 12, 6, 0].iter().enumerate() {
            if i <= c.len() {
                out.push(A[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
