//! Layer and RMS normalization over the last dimension of `[rows, features]` data, forward and
//! backward: one pass per row with the row's statistics kept for the backward pass (burn's
//! composite ops stored every intermediate and walked the data once per op). Rows run in
//! parallel; the weight and bias gradients are summed per fixed block of rows, then the blocks
//! in order, so the result does not depend on the thread count.

use super::uninit::filled;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows per parallel job.
const ROWS: usize = 64;

/// The statistics of each row the backward pass needs.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Row means (zero for RMS normalization).
    pub mean: Vec<f32>,
    /// `1/sqrt(var + eps)` (RMS: `1/sqrt(mean(x^2) + eps)`).
    pub rstd: Vec<f32>,
}

/// Normalizes each row of `x` (`features` per row): `(x - mean) * rstd * weight + bias`, the mean
/// left out when `rms`.
pub fn forward(x: &[f32], features: usize, weight: &[f32], bias: Option<&[f32]>, epsilon: f64, rms: bool) -> (Vec<f32>, Stats) {
    let c = features;
    assert!(c > 0 && x.len().is_multiple_of(c) && weight.len() == c, "feature norm: {} values, {c} features", x.len());
    let rows = x.len() / c;
    let mut mean = vec![0f32; rows];
    let mut rstd = vec![0f32; rows];
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(ROWS * c).zip(x.par_chunks(ROWS * c)).zip(mean.par_chunks_mut(ROWS).zip(rstd.par_chunks_mut(ROWS))).for_each(
            |((y, x), (mean, rstd))| {
                for ((y, x), (m, r)) in y.chunks_mut(c).zip(x.chunks(c)).zip(mean.iter_mut().zip(rstd.iter_mut())) {
                    let mu = if rms { 0.0 } else { x.iter().map(|&v| v as f64).sum::<f64>() / c as f64 };
                    let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / c as f64;
                    let (mu, rs) = (mu as f32, (1.0 / (var + epsilon).sqrt()) as f32);
                    match bias {
                        Some(b) => y.iter_mut().zip(x).zip(weight.iter().zip(b)).for_each(|((y, &x), (&w, &b))| {
                            y.write((x - mu) * rs * w + b);
                        }),
                        None => y.iter_mut().zip(x).zip(weight).for_each(|((y, &x), &w)| {
                            y.write((x - mu) * rs * w);
                        }),
                    }
                    (*m, *r) = (mu, rs);
                }
            },
        )
    };
    // SAFETY: the row blocks cover every slot, and each row writes all of its `c` slots.
    let y = unsafe { filled(x.len(), fill) };
    (y, Stats { mean, rstd })
}

/// Gradients `(dx, dweight, dbias)` from the output's `dy`, with `st` from [`forward`]:
/// `dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))` with `dxhat = dy * weight`
/// (RMS: without the `mean(dxhat)` term).
pub fn backward(x: &[f32], dy: &[f32], features: usize, weight: &[f32], st: &Stats, rms: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = features;
    assert_eq!(x.len(), dy.len(), "feature norm backward: input and gradient differ in length");
    let mut partial: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    let fill = |dx: &mut [MaybeUninit<f32>]| {
        partial = dx
            .par_chunks_mut(ROWS * c)
            .zip(x.par_chunks(ROWS * c).zip(dy.par_chunks(ROWS * c)))
            .zip(st.mean.par_chunks(ROWS).zip(st.rstd.par_chunks(ROWS)))
            .map(|((dx, (x, dy)), (mean, rstd))| {
                let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
                let mut xhat = vec![0f32; c];
                for (((dx, x), dy), (&mu, &rs)) in dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c)).zip(mean.iter().zip(rstd)) {
                    let (mut s1, mut s2) = (0f64, 0f64);
                    for j in 0..c {
                        xhat[j] = (x[j] - mu) * rs;
                        let g = dy[j] * weight[j];
                        s1 += g as f64;
                        s2 += (g * xhat[j]) as f64;
                        dw[j] += (dy[j] * xhat[j]) as f64;
                        db[j] += dy[j] as f64;
                    }
                    let m1 = if rms { 0.0 } else { (s1 / c as f64) as f32 };
                    let m2 = (s2 / c as f64) as f32;
                    for j in 0..c {
                        dx[j].write(rs * (dy[j] * weight[j] - m1 - xhat[j] * m2));
                    }
                }
                (dw, db)
            })
            .collect()
    };
    // SAFETY: the row blocks cover all `x.len()` slots, and each row writes all of its `c` slots
    // (`x.len()` is a whole number of rows: the forward pass checked it).
    let dx = unsafe { filled(x.len(), fill) };
    let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
    for (w, b) in &partial {
        dw.iter_mut().zip(w).for_each(|(a, v)| *a += v);
        db.iter_mut().zip(b).for_each(|(a, v)| *a += v);
    }
    (dx, dw.into_iter().map(|v| v as f32).collect(), db.into_iter().map(|v| v as f32).collect())
}
