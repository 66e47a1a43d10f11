//! Line charts as SVG text, for benchmarks whose table is better read as a
//! picture (`scaling`). Hand-written SVG 1.1, no dependencies: a chart is
//! pure data in, a `String` out, so it is tested byte by byte.
//!
//! ```text
//!   title
//!   y ▲                         ┌ legend ───────┐
//!     │        ●────●           │ ── series 1   │
//!     │   ●───●       ●         │ -- series 2   │
//!     │ ●                       └───────────────┘
//!     └──┬────┬────┬────┬──► x (log2 axis: one tick per power of two)
//! ```
//!
//! Each panel has its own axes; a figure holds panels side by side.

use std::fmt::Write as _;

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's text.
    pub name: String,
    /// An SVG colour (`#1f77b4`).
    pub color: &'static str,
    /// Drawn dashed rather than solid.
    pub dashed: bool,
    /// (x, y) points, drawn in this order; points with a non-finite or
    /// non-positive coordinate on a log axis are left out.
    pub points: Vec<(f64, f64)>,
}

/// How an axis maps values to pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear from 0 to the largest value (rounded up to a neat step).
    Linear,
    /// Base-2 logarithmic, a tick per power of two.
    Log2,
    /// Base-10 logarithmic, a tick per power of ten.
    Log10,
}

/// One chart: axes, labels and its lines.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Along the y axis.
    pub y_label: String,
    /// The x axis's scale.
    pub x_scale: Scale,
    /// The y axis's scale.
    pub y_scale: Scale,
    /// The lines, drawn and listed in the legend in this order.
    pub series: Vec<Series>,
}

const PANEL_WIDTH: f64 = 560.0;
const PANEL_HEIGHT: f64 = 400.0;
/// Space around a panel's plot area: left (y labels), right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (80.0, 20.0, 40.0, 60.0);
const LEGEND_WIDTH: f64 = 190.0;
const LEGEND_LINE: f64 = 16.0;
const HEADER: f64 = 30.0;

/// A figure: `title` above `panels` side by side, and one legend (the first
/// panel's series) at the right.
pub fn figure(title: &str, panels: &[Panel]) -> String {
    let legend_rows = panels.first().map_or(0, |p| p.series.len());
    let width = PANEL_WIDTH * panels.len() as f64 + LEGEND_WIDTH;
    let height = (PANEL_HEIGHT + HEADER).max(HEADER + 40.0 + LEGEND_LINE * legend_rows as f64);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{:.0}" y="20" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<g transform="translate({:.0},{HEADER:.0})">"#,
            PANEL_WIDTH * i as f64
        );
        draw_panel(&mut out, panel);
        out.push_str("</g>\n");
    }
    if let Some(first) = panels.first() {
        let x = PANEL_WIDTH * panels.len() as f64;
        let _ = writeln!(
            out,
            r#"<g transform="translate({x:.0},{:.0})">"#,
            HEADER + MARGIN.2
        );
        for (row, s) in first.series.iter().enumerate() {
            let y = LEGEND_LINE * row as f64;
            let _ = writeln!(
                out,
                r#"<line x1="0" y1="{y:.0}" x2="28" y2="{y:.0}" stroke="{}" stroke-width="2"{}/><text x="34" y="{:.0}">{}</text>"#,
                s.color,
                dash(s.dashed),
                y + 4.0,
                escape(&s.name)
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

fn dash(dashed: bool) -> &'static str {
    if dashed {
        r#" stroke-dasharray="6,4""#
    } else {
        ""
    }
}

/// An axis: the range of values it shows and where its ticks go.
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// An axis that holds every value of `values` the scale can show.
    fn fit(scale: Scale, values: impl Iterator<Item = f64>) -> Axis {
        let values: Vec<f64> = values.filter(|v| shown(scale, *v)).collect();
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        match scale {
            Scale::Linear => {
                let max = if max.is_finite() && max > 0.0 {
                    max
                } else {
                    1.0
                };
                let step = neat_step(max / 5.0);
                let hi = (max / step).ceil() * step;
                let ticks = (0..=(hi / step).round() as usize)
                    .map(|i| i as f64 * step)
                    .collect();
                Axis {
                    scale,
                    lo: 0.0,
                    hi,
                    ticks,
                }
            }
            Scale::Log2 | Scale::Log10 => {
                let base: f64 = if scale == Scale::Log2 { 2.0 } else { 10.0 };
                let (min, max) = if min.is_finite() {
                    (min, max)
                } else {
                    (1.0, base)
                };
                let lo = min.log(base).floor();
                let hi = max.log(base).ceil().max(lo + 1.0);
                let ticks = (lo as i32..=hi as i32).map(|e| base.powi(e)).collect();
                Axis {
                    scale,
                    lo: base.powf(lo),
                    hi: base.powf(hi),
                    ticks,
                }
            }
        }
    }

    /// Where `v` falls, from 0 (`lo`) to 1 (`hi`).
    fn fraction(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log2 | Scale::Log10 => (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln()),
        }
    }
}

/// Whether `v` can be drawn on an axis of `scale`.
fn shown(scale: Scale, v: f64) -> bool {
    v.is_finite() && (scale == Scale::Linear || v > 0.0)
}

/// 1, 2 or 5 times a power of ten, at least `rough`.
fn neat_step(rough: f64) -> f64 {
    let p = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * p)
}

/// A tick's text: `1,024`, `250k`, `1.5M`.
fn tick_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else if v >= 1.0 {
        crate::echo::group_thousands(v.round() as u64)
    } else {
        trim(v)
    }
}

/// `v` with at most two decimals and no trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn draw_panel(out: &mut String, p: &Panel) {
    let (left, right, top, bottom) = MARGIN;
    let (w, h) = (PANEL_WIDTH - left - right, PANEL_HEIGHT - top - bottom);
    let points = || p.series.iter().flat_map(|s| s.points.iter().copied());
    let xa = Axis::fit(p.x_scale, points().map(|(x, _)| x));
    let ya = Axis::fit(p.y_scale, points().map(|(_, y)| y));
    let px = |x: f64| left + xa.fraction(x) * w;
    let py = |y: f64| top + h - ya.fraction(y) * h;
    let _ = writeln!(
        out,
        r#"<text x="{:.0}" y="20" text-anchor="middle" font-size="13">{}</text>"#,
        left + w / 2.0,
        escape(&p.title)
    );
    // Grid, ticks and their labels.
    for &t in &xa.ticks {
        let x = px(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top:.0}" x2="{x:.1}" y2="{:.0}" stroke="#ddd"/><text x="{x:.1}" y="{:.0}" text-anchor="middle">{}</text>"##,
            top + h,
            top + h + 16.0,
            tick_label(t)
        );
    }
    for &t in &ya.ticks {
        let y = py(t);
        let _ = writeln!(
            out,
            r##"<line x1="{left:.0}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + w,
            left - 6.0,
            y + 4.0,
            tick_label(t)
        );
    }
    // Axes and their labels.
    let _ = writeln!(
        out,
        r#"<rect x="{left:.0}" y="{top:.0}" width="{w:.0}" height="{h:.0}" fill="none" stroke="black"/>
<text x="{:.0}" y="{:.0}" text-anchor="middle">{}</text>
<text x="16" y="{:.0}" text-anchor="middle" transform="rotate(-90 16 {:.0})">{}</text>"#,
        left + w / 2.0,
        top + h + 40.0,
        escape(&p.x_label),
        top + h / 2.0,
        top + h / 2.0,
        escape(&p.y_label)
    );
    // The lines, each with a dot per point.
    for s in &p.series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| shown(p.x_scale, x) && shown(p.y_scale, y))
            .map(|(x, y)| (px(x), py(y)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{}/>"#,
            path.join(" "),
            s.color,
            dash(s.dashed)
        );
        for (x, y) in pts {
            let _ = writeln!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{}"/>"#,
                s.color
            );
        }
    }
}

/// `s` with XML's special characters escaped.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(series: Vec<Series>) -> Panel {
        Panel {
            title: "QPS <by> in-flight".into(),
            x_label: "calls in flight".into(),
            y_label: "QPS".into(),
            x_scale: Scale::Log2,
            y_scale: Scale::Linear,
            series,
        }
    }

    #[test]
    fn axes_hold_their_values_on_neat_ticks() {
        let a = Axis::fit(Scale::Log2, [1.0, 1024.0].into_iter());
        assert_eq!((a.lo, a.hi, a.ticks.len()), (1.0, 1024.0, 11));
        assert_eq!(a.fraction(32.0), 0.5);
        let a = Axis::fit(Scale::Linear, [0.0, 123_000.0].into_iter());
        assert_eq!((a.lo, a.hi), (0.0, 150_000.0));
        assert_eq!(a.ticks[1], 50_000.0);
        let a = Axis::fit(Scale::Log10, [37.0, 4_100.0, f64::NAN, 0.0].into_iter());
        assert_eq!((a.lo, a.hi), (10.0, 10_000.0));
        // Nothing to show still gives an axis.
        let a = Axis::fit(Scale::Log2, std::iter::empty());
        assert!(a.hi > a.lo);
        assert_eq!(neat_step(0.3), 0.5);
        assert_eq!(tick_label(250_000.0), "250k");
        assert_eq!(tick_label(1_500_000.0), "1.5M");
        assert_eq!(tick_label(1024.0), "1,024");
    }

    #[test]
    fn a_figure_is_one_svg_with_a_line_and_legend_entry_per_series() {
        let series = vec![
            Series {
                name: "keel 1 conn".into(),
                color: "#1f77b4",
                dashed: false,
                points: vec![(1.0, 10_000.0), (4.0, 40_000.0), (16.0, f64::NAN)],
            },
            Series {
                name: "tonic 1 conn".into(),
                color: "#1f77b4",
                dashed: true,
                points: vec![(1.0, 8_000.0), (4.0, 20_000.0)],
            },
        ];
        let svg = figure("scaling & more", &[panel(series.clone()), panel(series)]);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        // Two legend entries, drawn once.
        assert_eq!(svg.matches(">keel 1 conn</text>").count(), 1);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2 + 1);
        assert!(svg.contains("scaling &amp; more"));
        assert!(svg.contains("QPS &lt;by&gt; in-flight"));
        assert!(!svg.contains("NaN"));
        assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
    }
}
