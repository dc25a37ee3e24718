//! Charts with plotters. A [`Figure`] keeps what to draw and renders it on demand as SVG or
//! PNG; in an evcxr notebook it shows inline (`evcxr_display`). Drawing errors are returned,
//! never panicked.

mod charts;
mod draw;

use crate::error::{Error, Result};
use draw::{draw_bars, draw_heatmap};
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
    /// Y axis upper limit.
    pub y_max: f64,
}

/// A heatmap of values with row and column labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Chart title.
    pub title: String,
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
