//! The sweep report: heatmaps over the (lr, weight decay) grid with the constant `lr*wd`
//! diagonals, the grid collapsed onto `lr*wd`, and the spread of accuracy along diagonals
//! against the spread across them.

use super::svg::{Heatmap, LineChart, Series, COLORS};
use super::{html_escape, Figure};
use crate::sweep::{Outcome, Row, Spec};
use std::collections::BTreeMap;

/// Spread of final test accuracy (in accuracy units, 0..1) along and across lines of the grid.
#[derive(Debug, Clone)]
pub struct Spread {
    /// Pooled standard deviation within lines of constant `lr*wd`.
    pub within_diag: f64,
    /// Standard deviation of the means of those lines.
    pub across_diag: f64,
    /// Pooled standard deviation within columns of constant `lr`.
    pub within_lr: f64,
    /// Pooled standard deviation within lines of constant `lr^2/wd` (Adam's invariant).
    pub within_lr2_wd: f64,
    /// Number of diagonals with at least two finished points.
    pub diagonals: usize,
}

fn pooled(groups: &BTreeMap<i64, Vec<f64>>) -> f64 {
    let (mut ss, mut df) = (0.0, 0usize);
    for v in groups.values().filter(|v| v.len() >= 2) {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        ss += v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
        df += v.len() - 1;
    }
    if df == 0 {
        f64::NAN
    } else {
        (ss / df as f64).sqrt()
    }
}

fn key(x: f64) -> i64 {
    (x.log10() * 1e6).round() as i64
}

/// Computes the spreads for points `(lr, wd, acc)` (all positive lr and wd).
pub fn spread(points: &[(f64, f64, f64)]) -> Spread {
    let group = |f: &dyn Fn(f64, f64) -> f64| {
        let mut g: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for &(lr, wd, acc) in points {
            g.entry(key(f(lr, wd))).or_default().push(acc);
        }
        g
    };
    let diag = group(&|lr, wd| lr * wd);
    let means: Vec<f64> = diag.values().map(|v| v.iter().sum::<f64>() / v.len() as f64).collect();
    let mm = means.iter().sum::<f64>() / means.len().max(1) as f64;
    let across =
        if means.len() >= 2 { (means.iter().map(|m| (m - mm).powi(2)).sum::<f64>() / (means.len() - 1) as f64).sqrt() } else { f64::NAN };
    Spread {
        within_diag: pooled(&diag),
        across_diag: across,
        within_lr: pooled(&group(&|lr, _| lr)),
        within_lr2_wd: pooled(&group(&|lr, wd| lr * lr / wd)),
        diagonals: diag.values().filter(|v| v.len() >= 2).count(),
    }
}

fn setting(r: &Row, k: &str) -> Option<toml::Value> {
    r.point.settings.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone())
}

fn uniq(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a / *b - 1.0).abs() < 1e-9);
    v
}

/// One slice of a sweep: the points that share every setting except lr and weight decay.
pub struct Slice {
    /// The shared settings (`norm=bn`), empty when only lr and wd vary.
    pub label: String,
    /// `(lr, wd, outcome row)`.
    pub rows: Vec<(f64, f64, Row)>,
}

/// Splits the rows into slices over the keys other than `lr` and `weight_decay`.
pub fn slices(spec: &Spec, rows: &[Row]) -> Vec<Slice> {
    let others: Vec<&String> = spec.keys.iter().filter(|k| *k != "lr" && *k != "weight_decay").collect();
    let mut out: Vec<Slice> = Vec::new();
    for r in rows {
        let label = others
            .iter()
            .map(|k| format!("{k}={}", setting(r, k).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", ");
        let (lr, wd) = (r.point.config.lr, r.point.config.weight_decay);
        match out.iter_mut().find(|s| s.label == label) {
            Some(s) => s.rows.push((lr, wd, r.clone())),
            None => out.push(Slice { label, rows: vec![(lr, wd, r.clone())] }),
        }
    }
    out
}

/// The relative spread `max/min - 1` of a value among the points of each diagonal (constant
/// `lr*wd`, at least two points with a value), with that diagonal's `lr*wd`.
fn diagonal_spreads(points: &[(f64, f64, f64)]) -> Vec<(f64, f64)> {
    let mut g: BTreeMap<i64, (f64, Vec<f64>)> = BTreeMap::new();
    for &(lr, wd, e) in points {
        g.entry(key(lr * wd)).or_insert((lr * wd, Vec::new())).1.push(e);
    }
    g.values()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(p, v)| (v.iter().copied().fold(f64::MIN, f64::max) / v.iter().copied().fold(f64::MAX, f64::min) - 1.0, *p))
        .collect()
}

/// The finished points whose schedule ends a phase before two relaxation times of their
/// scale-invariant weights ([`crate::budget`]), by name.
fn short_of_equilibrium(rows: &[&(f64, f64, Row)]) -> Vec<String> {
    rows.iter()
        .filter_map(|(_, _, r)| match &r.outcome {
            Outcome::Done(s) if s.epochs > 0 => {
                let short = crate::budget::shortfalls(&r.point.config, (s.steps as usize) / s.epochs);
                (!short.is_empty()).then(|| r.point.name.clone())
            }
            _ => None,
        })
        .collect()
}

fn acc(r: &Row) -> Option<f64> {
    match &r.outcome {
        Outcome::Done(s) => Some(s.test_acc),
        _ => None,
    }
}

/// Figures and the spread statement of one slice.
pub fn slice_figures(s: &Slice) -> (Vec<Figure>, Option<Spread>, String) {
    let pos: Vec<&(f64, f64, Row)> = s.rows.iter().filter(|(lr, wd, _)| *lr > 0.0 && *wd > 0.0).collect();
    let xs = uniq(pos.iter().map(|p| p.0).collect());
    let ys = uniq(pos.iter().map(|p| p.1).collect());
    let tag = if s.label.is_empty() { String::new() } else { format!(" ({})", s.label) };
    let stem = super::super::sweep::safe_name(&s.label);
    let grid = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<Vec<Option<f64>>> {
        ys.iter()
            .map(|y| {
                xs.iter()
                    .map(|x| pos.iter().find(|p| (p.0 / x - 1.0).abs() < 1e-9 && (p.1 / y - 1.0).abs() < 1e-9).and_then(|p| f(&p.2)))
                    .collect()
            })
            .collect()
    };
    let heat = |title: &str, label: &str, values: Vec<Vec<Option<f64>>>| Heatmap {
        title: format!("{title}{tag}"),
        x_label: "learning rate".into(),
        y_label: "weight decay".into(),
        xs: xs.clone(),
        ys: ys.clone(),
        values,
        value_label: label.into(),
        diagonals: true,
    };
    let mut figs = Vec::new();
    let done: Vec<(f64, f64, f64)> = pos.iter().filter_map(|p| Some((p.0, p.1, acc(&p.2)?))).collect();
    let sp = (done.len() >= 3).then(|| spread(&done));
    let diverged: Vec<String> =
        s.rows.iter().filter(|r| matches!(r.2.outcome, Outcome::Diverged(_))).map(|r| r.2.point.name.clone()).collect();
    let statement = match &sp {
        Some(sp) => format!(
            "Final test accuracy{tag}: standard deviation {:.2} points along lines of constant lr*wd (pooled over {} diagonals) vs {:.2} points across them (between diagonal means); {:.2} points along columns of constant lr, {:.2} along lines of constant lr^2/wd. {}{}",
            100.0 * sp.within_diag,
            sp.diagonals,
            100.0 * sp.across_diag,
            100.0 * sp.within_lr,
            100.0 * sp.within_lr2_wd,
            if sp.within_diag < sp.across_diag && sp.within_diag < sp.within_lr {
                "Accuracy varies less along the diagonals than across them or along columns: lr and wd act mainly through their product."
            } else if sp.within_diag < sp.across_diag {
                "Accuracy varies less along the diagonals than across them, but still less along columns of constant lr: the learning rate itself matters too here (it also drives the parameters that are not scale-invariant, and points with a small lr*wd have not reached equilibrium within the budget)."
            } else {
                "Accuracy does not vary less along the diagonals than across them here."
            },
            if diverged.is_empty() { String::new() } else { format!(" Diverged (n/a in the maps): {}.", diverged.join(", ")) }
        ),
        None => format!("Too few finished points with lr > 0 and wd > 0 to compare diagonals{tag}."),
    };
    let eff: Vec<(f64, f64, f64)> = pos.iter().filter_map(|p| Some((p.0, p.1, p.2.eff_lr_end?))).collect();
    let short = short_of_equilibrium(&pos);
    let mut statement = statement;
    let spreads = diagonal_spreads(&eff);
    if let Some(&(worst, product)) = spreads.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
        statement += &format!(
            " End-of-run effective lr{tag}: {} along every diagonal (largest spread {:.0}%, at lr*wd = {}).",
            if worst <= 0.10 { "equal within 10%" } else { "not equal within 10%" },
            100.0 * worst,
            super::svg::fmt_num(product)
        );
        // At equilibrium the effective lr is a function of lr*wd and of the gradient at unit
        // norm: where it differs, say by how much that gradient does.
        let unit: Vec<(f64, f64, f64)> = pos.iter().filter_map(|p| Some((p.0, p.1, p.2.unit_grad_end?))).collect();
        let unit = diagonal_spreads(&unit);
        for &(e, prod) in spreads.iter().filter(|(e, _)| *e > 0.10) {
            let Some(&(u, _)) = unit.iter().find(|(_, q)| (q / prod - 1.0).abs() < 1e-9) else { continue };
            statement += &format!(
                " At lr*wd = {} the effective lr is {:.0}% apart while the gradient at unit norm ||g||*||w||, which with lr*wd sets it at equilibrium (F5/F7), is {:.0}% apart: {}",
                super::svg::fmt_num(prod),
                100.0 * e,
                100.0 * u,
                if u >= e / 2.0 {
                    "those points ended in different states of training."
                } else {
                    "the noise model behind F5/F7 does not account for the difference there (measured, not explained; the lr also drives the layers that are not scale-invariant)."
                }
            );
        }
    }
    if !short.is_empty() {
        statement += &format!(
            " {} of {} points end before two relaxation times of their scale-invariant weights, out of equilibrium: {}.",
            short.len(),
            pos.len(),
            short.join(", ")
        );
    }
    figs.push(Figure {
        name: format!("sweep-acc{stem}"),
        svg: heat("Final test accuracy", "test accuracy (%)", grid(&|r| acc(r).map(|a| 100.0 * a))).to_svg(),
        reading: statement.clone(),
    });
    figs.push(Figure {
        name: format!("sweep-loss{stem}"),
        svg: heat(
            "Final test loss",
            "test loss (cross-entropy)",
            grid(&|r| match &r.outcome {
                Outcome::Done(s) => Some(s.test_loss),
                _ => None,
            }),
        )
        .to_svg(),
        reading: "The same grid, final test loss. Dashed white lines join points with equal lr*wd.".into(),
    });
    figs.push(Figure {
        name: format!("sweep-efflr{stem}"),
        svg: heat("Effective lr at the end of training", "lr/||w||^2 (mean over scale-invariant weights)", grid(&|r| r.eff_lr_end)).to_svg(),
        reading: "Effective learning rate of the scale-invariant weights over the last 10% of steps: where the norms reached equilibrium it is constant along the diagonals.".into(),
    });
    let series: Vec<Series> = ys
        .iter()
        .enumerate()
        .map(|(i, wd)| Series {
            label: format!("wd {}", super::svg::fmt_num(*wd)),
            points: {
                let mut p: Vec<(f64, f64)> =
                    done.iter().filter(|d| (d.1 / wd - 1.0).abs() < 1e-9).map(|d| (d.0 * d.1, 100.0 * d.2)).collect();
                p.sort_by(|a, b| a.0.total_cmp(&b.0));
                p
            },
            color: COLORS[i % COLORS.len()].into(),
            dashed: false,
        })
        .collect();
    figs.push(Figure {
        name: format!("sweep-collapse{stem}"),
        svg: LineChart {
            title: format!("Accuracy against lr*wd{tag}"),
            x_label: "lr * weight decay".into(),
            y_label: "test accuracy (%)".into(),
            log_x: true,
            series,
            ..Default::default()
        }
        .to_svg(),
        reading: "One line per weight decay; where lr and wd act only through their product, the lines fall onto one curve.".into(),
    });
    (figs, sp, statement)
}

/// HTML introduction for a sweep report: the spread statements of every slice.
pub fn intro(spec: &Spec, statements: &[String]) -> String {
    let mut h = format!(
        "<p>{} points; varied: {}.</p><h2>Spread along and across constant lr*wd</h2><ul>",
        spec.points.len(),
        html_escape(&spec.keys.join(", "))
    );
    for s in statements {
        h.push_str(&format!("<li>{}</li>", html_escape(s)));
    }
    h.push_str("</ul>");
    h
}

/// Compares slices by the ratio of along-diagonal to across-diagonal spread (smaller = more
/// of the grid explained by lr*wd).
pub fn comparison(labelled: &[(String, Spread)]) -> Option<String> {
    if labelled.len() < 2 {
        return None;
    }
    let mut v: Vec<(String, f64)> =
        labelled.iter().filter(|(_, s)| s.across_diag > 0.0).map(|(l, s)| (l.clone(), s.within_diag / s.across_diag)).collect();
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    Some(format!(
        "Along/across ratio of the spreads (smaller: lr*wd explains more of the grid): {}. The diagonal structure is strongest for {}.",
        v.iter().map(|(l, r)| format!("{l} {r:.2}")).collect::<Vec<_>>().join(", "),
        v.first()?.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_lr_spread_is_per_diagonal() {
        // Two diagonals: one within 5%, one 20% apart.
        let pts = [(0.1, 0.01, 1.0), (0.2, 0.005, 1.05), (0.1, 0.02, 2.0), (0.2, 0.01, 2.4), (0.4, 0.05, 3.0)];
        let spreads = diagonal_spreads(&pts);
        assert_eq!(spreads.len(), 2, "{spreads:?}");
        let (worst, product) = spreads.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
        assert!((worst - 0.2).abs() < 1e-12 && (product - 0.002).abs() < 1e-12, "{worst} {product}");
        assert!(diagonal_spreads(&pts[4..]).is_empty());
    }

    #[test]
    fn spread_separates_product_structure_from_noise() {
        // Accuracy depends only on lr*wd: zero spread along diagonals.
        let lrs = [0.01f64, 0.02, 0.04];
        let wds = [1e-3f64, 2e-3, 4e-3];
        let pts: Vec<(f64, f64, f64)> = lrs.iter().flat_map(|&l| wds.iter().map(move |&w| (l, w, (l * w).log10() / 10.0 + 1.0))).collect();
        let s = spread(&pts);
        assert!(s.within_diag < 1e-12 && s.across_diag > 0.01 && s.within_lr > 0.01, "{s:?}");
        assert_eq!(s.diagonals, 3);
        // Accuracy depends only on lr: large spread along diagonals, none along columns.
        let pts: Vec<(f64, f64, f64)> = lrs.iter().flat_map(|&l| wds.iter().map(move |&w| (l, w, l))).collect();
        let s = spread(&pts);
        assert!(s.within_lr < 1e-12 && s.within_diag > 0.005, "{s:?}");
    }
}
