//! Causal multi-head self-attention, forward and backward, for `[batch * seq, heads * head_dim]`
//! queries, keys and values (the layout the projections produce), scale `1/sqrt(head_dim)`.
//! Each (sequence, head) pair is one parallel job on contiguous `[seq, head_dim]` copies: its
//! five products are single-threaded GEMMs (the whole score matrix, the future half then
//! masked: a GEMM does it faster than loops do half), the softmax one pass per row with a
//! vectorized `exp`. The softmax is kept for the backward pass
//! (`batch * heads * seq^2` floats: 2 MB per layer at nanoGPT's CPU scale) instead of the
//! scores, mask and exponentials burn's composite op stored.

use super::gelu::exp_neg;
use super::gemm::{matmul, Mat};
use super::uninit::filled;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Sequences.
    pub batch: usize,
    /// Positions per sequence.
    pub seq: usize,
    /// Heads.
    pub heads: usize,
    /// Width of a head.
    pub head_dim: usize,
}

impl Shape {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Head `h` of sequence `b` of `x` as a contiguous `[seq, head_dim]` block.
    fn gather(&self, x: &[f32], b: usize, h: usize) -> Vec<f32> {
        let (t, d, c) = (self.seq, self.head_dim, self.width());
        let mut out = Vec::with_capacity(t * d);
        for i in 0..t {
            let row = (b * t + i) * c + h * d;
            out.extend_from_slice(&x[row..row + d]);
        }
        out
    }

    /// Writes the `[seq, head_dim]` blocks of every (sequence, head) job back into `[n, width]`.
    fn scatter(&self, blocks: &[Vec<f32>]) -> Vec<f32> {
        let (t, d, c) = (self.seq, self.head_dim, self.width());
        assert!(
            blocks.len() == self.batch * self.heads && blocks.iter().all(|b| b.len() == t * d),
            "attention: one [seq, head_dim] block per (sequence, head)"
        );
        // One sequence per job, in parallel, into an unzeroed buffer: zeroed and copied on the
        // calling thread it was ~1.5% of a `gpt` step.
        let fill = |out: &mut [MaybeUninit<f32>]| {
            out.par_chunks_mut(t * c).zip(blocks.par_chunks(self.heads)).for_each(|(seq, heads)| {
                for (h, blk) in heads.iter().enumerate() {
                    for (i, from) in blk.chunks_exact(d).take(t).enumerate() {
                        for (o, &v) in seq[i * c + h * d..][..d].iter_mut().zip(from) {
                            o.write(v);
                        }
                    }
                }
            })
        };
        // SAFETY: the heads' `d` columns tile each of the sequence's `t` rows of `c = heads * d`
        // values, so every slot is written once.
        unsafe { filled(self.batch * t * c, fill) }
    }
}

/// `dst[m, n] = lhs @ rhs` on one thread (the (sequence, head) jobs are the parallel part).
fn mm(dst: &mut [f32], m: usize, n: usize, k: usize, lhs: Mat<'_>, rhs: Mat<'_>) {
    matmul(dst, m, n, k, lhs, rhs, gemm::Parallelism::None, false);
}

/// The output `[n, width]` and the softmax of every (sequence, head), `[seq, seq]` row-major
/// with zeros above the diagonal.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], s: Shape) -> (Vec<f32>, Vec<Vec<f32>>) {
    let (t, d) = (s.seq, s.head_dim);
    let scale = 1.0 / (d as f32).sqrt();
    let jobs: Vec<(Vec<f32>, Vec<f32>)> = (0..s.batch * s.heads)
        .into_par_iter()
        .map(|job| {
            let (b, h) = (job / s.heads, job % s.heads);
            let (q, k, v) = (s.gather(q, b, h), s.gather(k, b, h), s.gather(v, b, h));
            // Scores for every pair (the masked half costs less in one GEMM than it saves in loops).
            let mut p = vec![0f32; t * t];
            mm(&mut p, t, t, d, Mat::rows(&q, d), Mat::transposed(&k, d));
            for i in 0..t {
                let row = &mut p[i * t..(i + 1) * t];
                let (seen, future) = row.split_at_mut(i + 1);
                let max = seen.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
                let mut sum = 0f32;
                for x in seen.iter_mut() {
                    *x = exp_neg(*x * scale - max);
                    sum += *x;
                }
                let inv = 1.0 / sum;
                seen.iter_mut().for_each(|x| *x *= inv);
                future.fill(0.0);
            }
            let mut o = vec![0f32; t * d];
            mm(&mut o, t, d, t, Mat::rows(&p, t), Mat::rows(&v, d));
            (o, p)
        })
        .collect();
    let (outs, probs): (Vec<Vec<f32>>, Vec<Vec<f32>>) = jobs.into_iter().unzip();
    (s.scatter(&outs), probs)
}

/// Gradients `(dq, dk, dv)`, each `[n, width]`, from the output's `dout` and the softmax of
/// [`forward`]: `dP = dO V^T`, `dS = P * (dP - rowsum(dP * P)) * scale`, `dQ = dS K`,
/// `dK = dS^T Q`, `dV = P^T dO`.
pub fn backward(q: &[f32], k: &[f32], v: &[f32], probs: &[Vec<f32>], dout: &[f32], s: Shape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, d) = (s.seq, s.head_dim);
    let scale = 1.0 / (d as f32).sqrt();
    let jobs: Vec<[Vec<f32>; 3]> = (0..s.batch * s.heads)
        .into_par_iter()
        .map(|job| {
            let (b, h) = (job / s.heads, job % s.heads);
            let (q, k, v, go) = (s.gather(q, b, h), s.gather(k, b, h), s.gather(v, b, h), s.gather(dout, b, h));
            let p = &probs[job];
            let mut ds = vec![0f32; t * t];
            mm(&mut ds, t, t, d, Mat::rows(&go, d), Mat::transposed(&v, d));
            for (dsr, pr) in ds.chunks_mut(t).zip(p.chunks(t)) {
                let rowdot: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                dsr.iter_mut().zip(pr).for_each(|(g, &p)| *g = p * (*g - rowdot) * scale);
            }
            let (mut dq, mut dk, mut dv) = (vec![0f32; t * d], vec![0f32; t * d], vec![0f32; t * d]);
            mm(&mut dq, t, d, t, Mat::rows(&ds, t), Mat::rows(&k, d));
            mm(&mut dk, t, d, t, Mat::transposed(&ds, t), Mat::rows(&q, d));
            mm(&mut dv, t, d, t, Mat::transposed(p, t), Mat::rows(&go, d));
            [dq, dk, dv]
        })
        .collect();
    let mut parts: [Vec<Vec<f32>>; 3] = Default::default();
    for [a, b, c] in jobs {
        parts[0].push(a);
        parts[1].push(b);
        parts[2].push(c);
    }
    let [dq, dk, dv] = parts.map(|blocks| s.scatter(&blocks));
    (dq, dk, dv)
}
