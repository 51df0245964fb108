//! `acs stats --plot`: histograms of a dataset's metrics (ssim, finite psnr, changed_area,
//! latent_cosine, and the NudeNet scores when a detector filled them) as a grid of small
//! panels, valid and invalid rows stacked in two colours; the charts are laid out and drawn by
//! plotters on acs's canvas ([`crate::commands::plot_backend`]).

use std::path::{Path, PathBuf};

use acs_schema::Dataset;
use polars::prelude::*;

use plotters::prelude::*;
// The colour methods (`filled`, `stroke_width`); acs's `Color` is the RGB array type below.
use plotters::style::Color as _;

use crate::commands::draw::{self, Canvas, Color, GLYPH, GLYPH_HEIGHT};
use crate::commands::plot_backend::CanvasBackend;
use crate::error::{one_line, AcsError};

/// Metrics always plotted.
pub const METRICS: [&str; 4] = ["ssim", "psnr", "changed_area", "latent_cosine"];
/// Metrics plotted when at least one row has a value.
pub const OPTIONAL_METRICS: [&str; 2] = ["nudenet_unsafe", "nudenet_safe"];
/// Bars of a histogram.
pub const BINS: usize = 24;
/// Width and height of one histogram panel.
pub const PANEL_SIZE: (u32, u32) = (300, 190);

const MARGIN: u32 = 12;
const GAP: u32 = 12;
const HEADER: u32 = MARGIN + GLYPH_HEIGHT + 8 + GLYPH_HEIGHT + 12;
const BACKGROUND: Color = [28, 28, 30];
const PANEL_BACKGROUND: Color = [44, 44, 48];
const AXIS: Color = [150, 150, 155];
/// Horizontal grid lines at the count ticks.
const GRID: Color = [62, 62, 68];
const TEXT: Color = [232, 232, 232];
const DIM_TEXT: Color = [165, 165, 170];
/// The manifest's threshold line.
const THRESHOLD_COLOR: Color = [235, 90, 200];
/// Bar colour of valid rows (viridis blue-green).
pub const VALID_COLOR: Color = [33, 144, 141];
/// Bar colour of invalid rows (inferno orange).
pub const INVALID_COLOR: Color = [249, 140, 10];

/// Where the panels of a plot sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlotLayout {
    /// Panels.
    pub panels: u32,
    /// Panels per grid row.
    pub columns: u32,
    /// Grid rows.
    pub rows: u32,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
}

impl PlotLayout {
    /// The layout of `panels` histograms: two per row up to four, else three per row.
    pub fn new(panels: u32) -> Self {
        let panels = panels.max(1);
        let columns = if panels <= 4 { panels.min(2) } else { 3 };
        let rows = panels.div_ceil(columns);
        let (pw, ph) = PANEL_SIZE;
        Self {
            panels,
            columns,
            rows,
            width: 2 * MARGIN + columns * pw + (columns - 1) * GAP,
            height: HEADER + rows * ph + (rows - 1) * GAP + MARGIN,
        }
    }

    /// Top-left corner of panel `i` (row-major).
    pub fn origin(&self, i: u32) -> (u32, u32) {
        let (pw, ph) = PANEL_SIZE;
        let (col, row) = (i % self.columns, i / self.columns);
        (MARGIN + col * (pw + GAP), HEADER + row * (ph + GAP))
    }
}

/// One metric's values, each with its row's verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricValues {
    /// Column name.
    pub name: String,
    /// (value, valid) of the rows with a finite value.
    pub values: Vec<(f64, bool)>,
    /// The manifest's validity threshold on this metric (`ssim_min`, `changed_area_max`),
    /// when it sets one that can reject a row.
    pub threshold: Option<f64>,
}

/// A histogram: `bins` equal-width bins over [min, max], counts split by verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Left edge of the first bin.
    pub min: f64,
    /// Right edge of the last bin.
    pub max: f64,
    /// Valid rows per bin.
    pub valid: Vec<u64>,
    /// Invalid rows per bin.
    pub invalid: Vec<u64>,
}

impl Histogram {
    /// Bins `values` into `bins` bins over their range (widened around a single value); `None`
    /// when there are no values.
    pub fn new(values: &[(f64, bool)], bins: usize) -> Option<Self> {
        let bins = bins.max(1);
        let finite = values.iter().filter(|(v, _)| v.is_finite());
        let (lo, hi) = finite.fold(None, |range: Option<(f64, f64)>, &(v, _)| {
            Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })?;
        let (min, max) = if hi > lo {
            (lo, hi)
        } else {
            let half = (lo.abs() * 0.01).max(1e-3);
            (lo - half, hi + half)
        };
        let mut histogram = Self {
            min,
            max,
            valid: vec![0; bins],
            invalid: vec![0; bins],
        };
        for &(v, valid) in values.iter().filter(|(v, _)| v.is_finite()) {
            let bin = (((v - min) / (max - min)) * bins as f64).floor() as usize;
            let bin = bin.min(bins - 1);
            if valid {
                histogram.valid[bin] += 1;
            } else {
                histogram.invalid[bin] += 1;
            }
        }
        Some(histogram)
    }

    /// The tallest stacked bar.
    pub fn max_count(&self) -> u64 {
        self.valid
            .iter()
            .zip(&self.invalid)
            .map(|(v, i)| v + i)
            .max()
            .unwrap_or(0)
    }
}

/// Everything a plot shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlotData {
    /// The metrics, in panel order.
    pub metrics: Vec<MetricValues>,
    /// Rows of the dataset.
    pub rows: usize,
    /// Rows whose verdict is valid.
    pub valid_rows: usize,
}

/// What [`plot_metrics`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotReport {
    /// The PNG file.
    pub out: PathBuf,
    /// The metrics plotted, in panel order.
    pub metrics: Vec<String>,
    /// Rows of the dataset.
    pub rows: usize,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
}

fn polars_error(dir: &Path) -> impl Fn(PolarsError) -> AcsError + '_ {
    move |e| AcsError::integrity(format!("{}: {}", dir.display(), one_line(&e.to_string())))
}

/// Reads the plotted metrics of every row with polars: the fixed ones always, the NudeNet
/// scores when some row has one; nulls and non-finite values (infinite PSNR) are left out.
pub fn read_metrics(dir: &Path) -> Result<PlotData, AcsError> {
    let dataset = Dataset::open(dir)?;
    let names: Vec<&str> = METRICS.iter().chain(&OPTIONAL_METRICS).copied().collect();
    if dataset.manifest().shards.is_empty() {
        let empty = METRICS.iter().map(|n| MetricValues {
            name: (*n).to_owned(),
            values: Vec::new(),
            threshold: None,
        });
        return Ok(PlotData {
            metrics: empty.collect(),
            ..PlotData::default()
        });
    }
    let err = polars_error(dir);
    let mut columns = vec![col("valid")];
    columns.extend(names.iter().map(|n| col(*n).cast(DataType::Float64)));
    let frame = dataset.lazy()?.select(columns).collect().map_err(&err)?;
    let valid: Vec<bool> = frame
        .column("valid")
        .map_err(&err)?
        .bool()
        .map_err(&err)?
        .iter()
        .map(|v| v.unwrap_or(false))
        .collect();
    let mut metrics = Vec::new();
    for name in names {
        let column = frame.column(name).map_err(&err)?.f64().map_err(&err)?;
        let values: Vec<(f64, bool)> = column
            .iter()
            .zip(&valid)
            .filter_map(|(v, &ok)| v.filter(|x| x.is_finite()).map(|x| (x, ok)))
            .collect();
        let any = column.iter().any(|v| v.is_some());
        if METRICS.contains(&name) || any {
            metrics.push(MetricValues {
                name: name.to_owned(),
                values,
                threshold: threshold_of(&dataset.manifest().build_config, name),
            });
        }
    }
    Ok(PlotData {
        metrics,
        rows: frame.height(),
        valid_rows: valid.iter().filter(|v| **v).count(),
    })
}

/// The recorded manifest's threshold on `metric`: `ssim_min` above 0, `changed_area_max` below
/// 1 (the defaults reject nothing and are not drawn).
fn threshold_of(build_config: &serde_json::Value, metric: &str) -> Option<f64> {
    let alignment = &build_config["manifest"]["alignment"];
    match metric {
        "ssim" => alignment["ssim_min"].as_f64().filter(|&t| t > 0.0),
        "changed_area" => alignment["changed_area_max"].as_f64().filter(|&t| t < 1.0),
        _ => None,
    }
}

/// Draws the histograms of `dir`'s metrics into a PNG at `out_png`, atomically.
pub fn plot_metrics(dir: &Path, out_png: &Path) -> Result<PlotReport, AcsError> {
    let data = read_metrics(dir)?;
    let canvas = render(dir, &data)?;
    canvas.write_png(out_png)?;
    Ok(PlotReport {
        out: out_png.to_path_buf(),
        metrics: data.metrics.iter().map(|m| m.name.clone()).collect(),
        rows: data.rows,
        width: canvas.width(),
        height: canvas.height(),
    })
}

/// The whole plot: header with legend, then one panel per metric, its chart drawn by
/// plotters on the canvas ([`CanvasBackend`]).
pub fn render(dir: &Path, data: &PlotData) -> Result<Canvas, AcsError> {
    let layout = PlotLayout::new(data.metrics.len() as u32);
    let mut canvas = Canvas::new(layout.width, layout.height, BACKGROUND);
    draw_header(&mut canvas, &layout, dir, data);
    for (i, metric) in data.metrics.iter().enumerate() {
        let origin = layout.origin(i as u32);
        draw_histogram(&mut canvas, origin, metric)?;
    }
    Ok(canvas)
}

fn draw_header(canvas: &mut Canvas, layout: &PlotLayout, dir: &Path, data: &PlotData) {
    let inner = layout.width - 2 * MARGIN;
    let origin = (MARGIN as i32, MARGIN as i32);
    draw::path_title(canvas, origin, "acs stats: ", dir, inner, TEXT);
    let y = (MARGIN + GLYPH_HEIGHT + 8) as i32;
    let mut x = MARGIN as i32;
    let counts = format!("{} rows ({} valid)   ", data.rows, data.valid_rows);
    x = canvas.text(x, y, &counts, 1, DIM_TEXT);
    for (label, color) in [("valid", VALID_COLOR), ("invalid", INVALID_COLOR)] {
        canvas.fill_rect(x, y + 4, GLYPH, GLYPH, color);
        x = canvas.text(x + GLYPH as i32 + 4, y, label, 1, TEXT) + 16;
    }
    canvas.text(x, y, "(psnr: finite values only)", 1, DIM_TEXT);
}

/// A tick label with as many decimals as the range needs.
pub fn tick(value: f64, range: f64) -> String {
    let decimals = if range > 0.0 && range.is_finite() {
        (2.0 - range.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        3
    };
    format!("{value:.decimals$}")
}

/// The plotters colour of `color`.
fn plotters_color([r, g, b]: Color) -> RGBColor {
    RGBColor(r, g, b)
}

fn draw_histogram(
    canvas: &mut Canvas,
    (x, y): (u32, u32),
    metric: &MetricValues,
) -> Result<(), AcsError> {
    let (pw, ph) = PANEL_SIZE;
    canvas.fill_rect(x as i32, y as i32, pw, ph, PANEL_BACKGROUND);
    let max_chars = ((pw - 12) / GLYPH) as usize;
    let histogram = Histogram::new(&metric.values, BINS);
    // The manifest's threshold is named at the right of the title line.
    let threshold_label = metric.threshold.zip(histogram.as_ref()).map(|(t, h)| {
        let label = format!("limit {}", tick(t, (h.max - h.min).max(1e-6)));
        let lx = x + pw - 6 - draw::text_width(&label, 1);
        canvas.text(lx as i32, y as i32 + 6, &label, 1, THRESHOLD_COLOR);
        label
    });
    let room = max_chars.saturating_sub(threshold_label.map_or(0, |l| draw::text_columns(&l) + 2));
    let title = format!("{}  (n={})", metric.name, metric.values.len());
    canvas.text(
        x as i32 + 6,
        y as i32 + 6,
        &draw::truncate(&title, room),
        1,
        TEXT,
    );
    let top = y + 6 + GLYPH_HEIGHT + 10;
    let Some(histogram) = histogram else {
        let text = "no values";
        let tx = x + (pw - draw::text_width(text, 1)) / 2;
        canvas.text(tx as i32, ((top + y + ph) / 2) as i32, text, 1, DIM_TEXT);
        return Ok(());
    };
    let fail =
        |e: &dyn std::fmt::Display| AcsError::internal(format!("plot of {}: {e}", metric.name));
    let range = histogram.max - histogram.min;
    let max_count = histogram.max_count().max(1);
    let root = CanvasBackend::area(canvas);
    // The chart's box in the panel: title above, a margin on the right for the last x label.
    let area = root.shrink((x + 6, top), (pw - 6 - 12, y + ph - 4 - top));
    let label_font = || {
        ("sans-serif", GLYPH_HEIGHT)
            .into_font()
            .color(&plotters_color(DIM_TEXT))
    };
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(GLYPH_HEIGHT + 8)
        .y_label_area_size(draw::text_width(&max_count.to_string(), 1) + 8)
        .build_cartesian_2d(histogram.min..histogram.max, 0..max_count)
        .map_err(|e| fail(&e))?;
    let x_label = |v: &f64| tick(*v, range);
    chart
        .configure_mesh()
        .disable_x_mesh()
        // No minor grid lines: transparent, since `y_max_light_lines(0)` never returns for an
        // integer axis (plotters 0.3.7's integer key-point search loops on a budget of 0).
        .light_line_style(TRANSPARENT)
        .bold_line_style(plotters_color(GRID))
        .axis_style(plotters_color(AXIS))
        .label_style(label_font())
        .x_labels(3)
        .y_labels(4)
        .x_label_formatter(&x_label)
        .draw()
        .map_err(|e| fail(&e))?;
    let width = range / BINS as f64;
    let edges = |bin: usize| {
        let left = histogram.min + bin as f64 * width;
        (left, left + width)
    };
    // Valid rows at the bottom of each bar, invalid rows stacked on them; 1 px between bars.
    let bars = (0..BINS).flat_map(|bin| {
        let (left, right) = edges(bin);
        let (valid, invalid) = (histogram.valid[bin], histogram.invalid[bin]);
        [
            (0, valid, VALID_COLOR),
            (valid, valid + invalid, INVALID_COLOR),
        ]
        .into_iter()
        .filter(|(from, to, _)| to > from)
        .map(move |(from, to, color)| {
            let mut bar =
                Rectangle::new([(left, from), (right, to)], plotters_color(color).filled());
            bar.set_margin(0, 0, 0, 1);
            bar
        })
    });
    chart.draw_series(bars).map_err(|e| fail(&e))?;
    if let Some(threshold) = metric.threshold {
        // The manifest's threshold as a dashed vertical line (at the chart's edge when the
        // values all lie on one side of it).
        let at = threshold.clamp(histogram.min, histogram.max);
        let style = plotters_color(THRESHOLD_COLOR).stroke_width(2);
        let line = DashedLineSeries::new([(at, 0), (at, max_count)], 4, 3, style);
        chart.draw_series(line).map_err(|e| fail(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_and_stacks_by_verdict() {
        let values = [
            (0.0, true),
            (0.5, false),
            (1.0, true),
            (1.0, false),
            (f64::NAN, true),
        ];
        let h = Histogram::new(&values, 4).unwrap();
        assert_eq!((h.min, h.max), (0.0, 1.0));
        assert_eq!(h.valid, vec![1, 0, 0, 1]);
        assert_eq!(h.invalid, vec![0, 0, 1, 1]);
        assert_eq!(h.max_count(), 2);
        assert!(Histogram::new(&[], 4).is_none());
        assert!(Histogram::new(&[(f64::INFINITY, true)], 4).is_none());
    }

    #[test]
    fn a_single_value_gets_a_widened_range() {
        let h = Histogram::new(&[(0.5, true), (0.5, true)], 5).unwrap();
        assert!(h.min < 0.5 && h.max > 0.5);
        assert_eq!(h.valid, vec![0, 0, 2, 0, 0]);
    }

    #[test]
    fn layout_grid() {
        let four = PlotLayout::new(4);
        assert_eq!((four.columns, four.rows), (2, 2));
        assert_eq!(four.width, 2 * MARGIN + 2 * PANEL_SIZE.0 + GAP);
        assert_eq!(four.height, HEADER + 2 * PANEL_SIZE.1 + GAP + MARGIN);
        let six = PlotLayout::new(6);
        assert_eq!((six.columns, six.rows), (3, 2));
        assert_eq!(
            six.origin(4),
            (MARGIN + PANEL_SIZE.0 + GAP, HEADER + PANEL_SIZE.1 + GAP)
        );
        let five = PlotLayout::new(5);
        assert_eq!((five.columns, five.rows), (3, 2));
    }

    #[test]
    fn ticks_use_the_decimals_the_range_needs() {
        assert_eq!(tick(0.91234, 0.05), "0.9123");
        assert_eq!(tick(21.456, 12.0), "21.5");
        assert_eq!(tick(1234.7, 900.0), "1235");
        assert_eq!(tick(0.5, 0.0), "0.500");
    }

    #[test]
    fn render_draws_bars_in_both_colours() {
        let metrics = vec![
            MetricValues {
                name: "ssim".into(),
                values: vec![(0.1, true), (0.2, false), (0.9, true)],
                threshold: None,
            },
            MetricValues {
                name: "psnr".into(),
                values: Vec::new(),
                threshold: None,
            },
        ];
        let data = PlotData {
            metrics,
            rows: 3,
            valid_rows: 2,
        };
        let canvas = render(Path::new("/tmp/ds"), &data).unwrap();
        let layout = PlotLayout::new(2);
        assert_eq!(
            (canvas.width(), canvas.height()),
            (layout.width, layout.height)
        );
        let count = |color: Color| {
            canvas
                .pixels()
                .chunks_exact(3)
                .filter(|p| *p == color)
                .count()
        };
        // Bars plus the legend swatches.
        assert!(count(VALID_COLOR) > (GLYPH * GLYPH) as usize);
        assert!(count(INVALID_COLOR) > (GLYPH * GLYPH) as usize);
        assert_eq!(count(THRESHOLD_COLOR), 0);

        // A manifest threshold is drawn as a line in its own colour.
        let mut data = data;
        data.metrics[0].threshold = Some(0.5);
        let canvas = render(Path::new("/tmp/ds"), &data).unwrap();
        let marked = canvas
            .pixels()
            .chunks_exact(3)
            .filter(|p| *p == THRESHOLD_COLOR)
            .count();
        assert!(marked > 40, "{marked}");
    }

    #[test]
    fn only_thresholds_that_can_reject_are_drawn() {
        let config = |ssim: f64, area: f64| serde_json::json!({"manifest": {"alignment": {"ssim_min": ssim, "changed_area_max": area}}});
        assert_eq!(threshold_of(&config(0.4, 0.3), "ssim"), Some(0.4));
        assert_eq!(threshold_of(&config(0.4, 0.3), "changed_area"), Some(0.3));
        assert_eq!(threshold_of(&config(0.0, 1.0), "ssim"), None);
        assert_eq!(threshold_of(&config(0.0, 1.0), "changed_area"), None);
        assert_eq!(threshold_of(&config(0.4, 0.3), "psnr"), None);
    }
}
