//! The charts of `inspect`'s report: norms and angular updates between checkpoints, with the
//! theory's equilibrium dashed, drawn with the core's report pieces.

use super::TensorReport;
use crate::params::Role;
use crate::report::svg::{LineChart, Series, COLORS};
use crate::report::Figure;

/// The report's figures for tensors measured at checkpoints taken at `steps`.
pub fn figures(reports: &[TensorReport], steps: &[u64]) -> Vec<Figure> {
    let pick: Vec<&TensorReport> = reports.iter().filter(|r| r.scale_invariant || r.role == Role::NormScale).collect();
    let series = |f: &dyn Fn(&TensorReport) -> Vec<(f64, f64)>, dashed: bool| -> Vec<Series> {
        pick.iter()
            .enumerate()
            .map(|(i, r)| Series { label: r.name.clone(), points: f(r), color: COLORS[i % COLORS.len()].into(), dashed })
            .collect()
    };
    let norms = series(&|r| steps.iter().zip(&r.norms).map(|(s, n)| (*s as f64, *n)).collect(), false);
    let mut angles =
        series(&|r| steps.windows(2).zip(&r.angles).filter(|_| r.scale_invariant).map(|(s, a)| (s[1] as f64, *a)).collect(), false);
    angles.extend(
        series(&|r| steps.windows(2).zip(&r.pred_gap_angles).map(|(s, a)| (s[1] as f64, *a)).collect(), true)
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .map(|mut s| {
                s.label = format!("{} predicted", s.label);
                s
            }),
    );
    let grown: Vec<String> =
        pick.iter().map(|r| format!("{} x{:.2}", r.name, r.norms.last().unwrap_or(&1.0) / r.norms.first().unwrap_or(&1.0))).collect();
    vec![
        Figure {
            name: "inspect-norms".into(),
            svg: LineChart { title: "Norms of scale-invariant weights and norm-layer scales".into(), x_label: "step".into(), y_label: "||w|| (L2 norm)".into(), series: norms, ..Default::default() }.to_svg(),
            reading: format!("Norm change from the first to the last checkpoint: {}.", grown.join(", ")),
        },
        Figure {
            name: "inspect-angles".into(),
            svg: LineChart { title: "Angle between consecutive checkpoints".into(), x_label: "step".into(), y_label: "angle over the gap (rad)".into(), log_y: true, series: angles, ..Default::default() }.to_svg(),
            reading: "Angle between each checkpoint and the one before it; dashed: the equilibrium angle over a gap of the same length for the given optimizer settings (F17, docs/theory-f17.md: exact for gaps of a few steps, an upper bound over long gaps, where real gradients turn the weight less).".into(),
        },
    ]
}
