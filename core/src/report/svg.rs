//! Small, dependency-free SVG charts (line charts with linear or log axes, heatmaps): text is
//! left to the browser, so no font files are needed to draw a report.

use std::fmt::Write;

/// A palette that stays distinguishable for up to 10 series.
pub const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
    /// Stroke color.
    pub color: String,
    /// Dashed (predictions) or solid (measurements).
    pub dashed: bool,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// X axis label with unit.
    pub x_label: String,
    /// Y axis label with unit.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const W: f64 = 700.0;
const H: f64 = 380.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 52.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Formats a tick value compactly.
pub fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{:.2}", v).trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        // Four significant digits (0.00125 stays 0.00125).
        let decimals = (3.0 - a.log10().floor()).clamp(0.0, 8.0) as usize;
        let s = format!("{v:.decimals$}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// "Nice" linear ticks covering `[lo, hi]`.
fn lin_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-300);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let start = (lo / step).ceil() * step;
    (0..20).map(|i| start + i as f64 * step).take_while(|v| *v <= hi + step * 1e-9).collect()
}

/// Powers of ten (in log10 units) covering `[lo, hi]` (given in log10 units).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut t: Vec<f64> = (lo.ceil() as i32..=hi.floor() as i32).map(|e| e as f64).collect();
    if t.len() < 2 {
        // Less than a decade: add 2x and 5x marks.
        t = (lo.floor() as i32..=hi.ceil() as i32)
            .flat_map(|e| [1.0, 2.0, 5.0].map(|m| (m * 10f64.powi(e)).log10()))
            .filter(|v| *v >= lo - 1e-9 && *v <= hi + 1e-9)
            .collect();
    }
    t
}

/// The opening of a chart: the `<svg>` element, a white background and the title.
fn open_svg(title: &str, plot_width: f64, height: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" height="{height}" font-family="sans-serif" font-size="12"><rect width="{W}" height="{height}" fill="white"/><text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        LEFT + plot_width / 2.0,
        esc(title)
    )
}

struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn fit(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let v: Vec<f64> = values.filter(|x| x.is_finite() && (!log || *x > 0.0)).map(|x| if log { x.log10() } else { x }).collect();
        let (mut lo, mut hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-12 {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            lo -= pad;
            hi += pad;
        }
        let pad = (hi - lo) * 0.04;
        Axis { lo: lo - pad, hi: hi + pad, log }
    }
    fn t(&self, v: f64) -> Option<f64> {
        let x = if self.log {
            if v <= 0.0 {
                return None;
            }
            v.log10()
        } else {
            v
        };
        x.is_finite().then(|| (x - self.lo) / (self.hi - self.lo))
    }
    fn ticks(&self) -> Vec<(f64, String)> {
        if self.log {
            log_ticks(self.lo, self.hi).into_iter().map(|e| ((e - self.lo) / (self.hi - self.lo), fmt_num(10f64.powf(e)))).collect()
        } else {
            lin_ticks(self.lo, self.hi).into_iter().map(|v| ((v - self.lo) / (self.hi - self.lo), fmt_num(v))).collect()
        }
    }
}

impl LineChart {
    /// Renders the chart as a standalone `<svg>` element.
    pub fn to_svg(&self) -> String {
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let xa = Axis::fit(self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), self.log_x);
        let ya = Axis::fit(self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), self.log_y);
        // Taller than the plot when the legend needs it: every series keeps its entry.
        let height = H.max(TOP + 10.0 + self.series.len() as f64 * 18.0 + 8.0);
        let mut s = open_svg(&self.title, pw, height);
        let _ = write!(s, r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
        for (t, label) in xa.ticks() {
            let x = LEFT + t * pw;
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#eee"/><line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph,
                TOP + ph + 5.0,
                TOP + ph + 18.0,
                esc(&label)
            );
        }
        for (t, label) in ya.ticks() {
            let y = TOP + (1.0 - t) * ph;
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><line x1="{}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="#333"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 5.0,
                LEFT - 8.0,
                y + 4.0,
                esc(&label)
            );
        }
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, LEFT + pw / 2.0, H - 12.0, esc(&self.x_label));
        let _ = write!(
            s,
            r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        let _ = write!(s, r#"<clipPath id="c"><rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/></clipPath><g clip-path="url(#c)">"#);
        for ser in &self.series {
            let pts: Vec<String> = ser
                .points
                .iter()
                .filter_map(|&(x, y)| Some(format!("{:.1},{:.1}", LEFT + xa.t(x)? * pw, TOP + (1.0 - ya.t(y)?) * ph)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let dash = if ser.dashed { r#" stroke-dasharray="6,4""# } else { "" };
            if let [only] = &pts[..] {
                // A line needs two points: a one-epoch run's accuracy is a dot.
                let (cx, cy) = only.split_once(',').expect("formatted as x,y");
                let _ = write!(s, r#"<circle cx="{cx}" cy="{cy}" r="3.5" fill="{}"/>"#, ser.color);
                continue;
            }
            let _ = write!(s, r#"<polyline fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}"/>"#, ser.color, pts.join(" "));
        }
        s.push_str("</g>");
        for (i, ser) in self.series.iter().enumerate() {
            let y = TOP + 10.0 + i as f64 * 18.0;
            let x = LEFT + pw + 12.0;
            let dash = if ser.dashed { r#" stroke-dasharray="6,4""# } else { "" };
            let _ = write!(
                s,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                x + 22.0,
                ser.color,
                x + 27.0,
                y + 4.0,
                esc(&ser.label)
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// A heatmap over a 2-D grid with log axes (a sweep over learning rate and weight decay).
#[derive(Debug, Clone, Default)]
pub struct Heatmap {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Grid values along x (positive; drawn on a log axis).
    pub xs: Vec<f64>,
    /// Grid values along y (positive; drawn on a log axis).
    pub ys: Vec<f64>,
    /// `values[j][i]` at `(xs[i], ys[j])`; `None` for missing / diverged.
    pub values: Vec<Vec<Option<f64>>>,
    /// Legend label of the color scale (with unit).
    pub value_label: String,
    /// Draw lines of constant `x*y` through the grid cells.
    pub diagonals: bool,
}

fn viridis(t: f64) -> String {
    let stops = [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let t = t.clamp(0.0, 1.0) * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f64;
    let (a, b) = (stops[i], stops[i + 1]);
    format!("rgb({:.0},{:.0},{:.0})", a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1), a.2 + f * (b.2 - a.2))
}

impl Heatmap {
    /// Renders the heatmap as a standalone `<svg>` element.
    pub fn to_svg(&self) -> String {
        let (nx, ny) = (self.xs.len().max(1), self.ys.len().max(1));
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let (cw, ch) = (pw / nx as f64, ph / ny as f64);
        let vals: Vec<f64> = self.values.iter().flatten().flatten().copied().filter(|v| v.is_finite()).collect();
        let (lo, hi) = vals.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut s = open_svg(&self.title, pw, H);
        for (j, row) in self.values.iter().enumerate() {
            for (i, v) in row.iter().enumerate() {
                let x = LEFT + i as f64 * cw;
                let y = TOP + (ny - 1 - j) as f64 * ch;
                match v {
                    Some(v) if v.is_finite() => {
                        let t = (v - lo) / span;
                        let _ = write!(
                            s,
                            r#"<rect x="{x:.1}" y="{y:.1}" width="{cw:.1}" height="{ch:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{}">{}</text>"#,
                            viridis(t),
                            x + cw / 2.0,
                            y + ch / 2.0 + 4.0,
                            if t > 0.6 { "black" } else { "white" },
                            fmt_num(*v)
                        );
                    }
                    _ => {
                        let _ = write!(
                            s,
                            r##"<rect x="{x:.1}" y="{y:.1}" width="{cw:.1}" height="{ch:.1}" fill="#ccc"/><text x="{:.1}" y="{:.1}" text-anchor="middle">n/a</text>"##,
                            x + cw / 2.0,
                            y + ch / 2.0 + 4.0
                        );
                    }
                }
            }
        }
        if self.diagonals && nx > 1 && ny > 1 {
            // Cells are evenly spaced in log; a line of constant x*y falls with slope -1 in log units.
            let lx: Vec<f64> = self.xs.iter().map(|v| v.log10()).collect();
            let ly: Vec<f64> = self.ys.iter().map(|v| v.log10()).collect();
            let dx = (lx[nx - 1] - lx[0]) / (nx - 1) as f64;
            let dy = (ly[ny - 1] - ly[0]) / (ny - 1) as f64;
            let px = |l: f64| LEFT + ((l - lx[0]) / dx + 0.5) * cw;
            let py = |l: f64| TOP + (ny as f64 - 0.5 - (l - ly[0]) / dy) * ch;
            let sums: Vec<f64> = (0..nx).flat_map(|i| (0..ny).map(move |j| (i, j))).map(|(i, j)| lx[i] + ly[j]).collect();
            let mut uniq: Vec<f64> = Vec::new();
            for v in sums {
                if !uniq.iter().any(|u| (u - v).abs() < 1e-6) {
                    uniq.push(v);
                }
            }
            let _ =
                write!(s, r#"<clipPath id="h"><rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/></clipPath><g clip-path="url(#h)">"#);
            for c in uniq {
                let (x0, x1) = (lx[0] - dx, lx[nx - 1] + dx);
                let _ = write!(
                    s,
                    r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="white" stroke-opacity="0.7" stroke-dasharray="4,3"/>"#,
                    px(x0),
                    py(c - x0),
                    px(x1),
                    py(c - x1)
                );
            }
            s.push_str("</g>");
        }
        let _ = write!(s, r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
        for (i, x) in self.xs.iter().enumerate() {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                LEFT + (i as f64 + 0.5) * cw,
                TOP + ph + 18.0,
                fmt_num(*x)
            );
        }
        for (j, y) in self.ys.iter().enumerate() {
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 8.0,
                TOP + (ny as f64 - 0.5 - j as f64) * ch + 4.0,
                fmt_num(*y)
            );
        }
        let _ =
            write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{} (log scale)</text>"#, LEFT + pw / 2.0, H - 12.0, esc(&self.x_label));
        let _ = write!(
            s,
            r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{} (log scale)</text>"#,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        // Color legend.
        let lx = LEFT + pw + 30.0;
        for k in 0..50 {
            let t = k as f64 / 49.0;
            let _ = write!(
                s,
                r#"<rect x="{lx}" y="{:.1}" width="18" height="{:.2}" fill="{}"/>"#,
                TOP + (1.0 - t) * (ph - 4.0),
                ph / 50.0 + 0.5,
                viridis(t)
            );
        }
        if lo.is_finite() {
            let _ = write!(
                s,
                r#"<text x="{}" y="{}">{}</text><text x="{}" y="{}">{}</text>"#,
                lx + 24.0,
                TOP + 10.0,
                fmt_num(hi),
                lx + 24.0,
                TOP + ph,
                fmt_num(lo)
            );
        }
        let _ = write!(
            s,
            r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            lx + 70.0,
            TOP + ph / 2.0,
            esc(&self.value_label)
        );
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_chart_has_title_axes_legend_and_dashes() {
        let c = LineChart {
            title: "Angle".into(),
            x_label: "step".into(),
            y_label: "angle (rad)".into(),
            log_y: true,
            series: vec![
                Series { label: "measured".into(), points: vec![(0.0, 0.1), (10.0, 0.01)], color: COLORS[0].into(), dashed: false },
                Series { label: "predicted".into(), points: vec![(0.0, 0.02), (10.0, 0.02)], color: COLORS[0].into(), dashed: true },
            ],
            ..Default::default()
        };
        let s = c.to_svg();
        for needle in [">Angle<", ">step<", ">angle (rad)<", ">measured<", ">predicted<", "stroke-dasharray", ">0.1<"] {
            assert!(s.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn one_point_is_a_dot_and_every_series_keeps_its_legend_entry() {
        let one =
            |i: usize| Series { label: format!("run{i}"), points: vec![(1.0, 80.0 + i as f64)], color: COLORS[0].into(), dashed: false };
        let s = LineChart { title: "Test accuracy".into(), series: (0..40).map(one).collect(), ..Default::default() }.to_svg();
        assert_eq!(s.matches("<circle").count(), 40, "each one-point series is drawn");
        let height: f64 = s.split("height=\"").nth(1).and_then(|h| h.split('"').next()).unwrap().parse().unwrap();
        let last_entry_y: f64 =
            s.rsplit("<text x=\"").next().and_then(|t| t.split("y=\"").nth(1)).and_then(|y| y.split('"').next()).unwrap().parse().unwrap();
        assert!(
            s.contains(">run39<") && last_entry_y < height,
            "the 40th legend entry at y={last_entry_y} is inside the {height}-high chart"
        );
    }

    #[test]
    fn ticks_are_nice() {
        assert_eq!(lin_ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(log_ticks(-3.2, -0.5), vec![-3.0, -2.0, -1.0]);
    }
}
