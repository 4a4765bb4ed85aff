//! Output buffers that the kernels write in full, handed out without zeroing them first:
//! zeroing megabytes per layer on the calling thread, only to overwrite them, was a visible
//! part of a training step.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A vector of `len` values, every one written by `fill`.
///
/// # Safety
/// `fill` must write each of the `len` slots it is given (it may not read one it has not
/// written).
pub(crate) unsafe fn filled(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller promises that `fill` wrote all `len` slots.
    unsafe { v.set_len(len) };
    v
}

/// A vector of `len` values in parts of `part` (the last may be shorter), each zeroed by the
/// rayon task that then hands it to `f(index, part)`: `vec![0.0; len]` zeroed megabytes on the
/// calling thread while the others waited (a ResNet-20 step's strided-layer and pooling
/// gradients, ~1% of it).
pub(crate) fn zeroed_parts(len: usize, part: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let fill = |v: &mut [MaybeUninit<f32>]| {
        v.par_chunks_mut(part.max(1)).enumerate().for_each(|(i, p)| {
            p.fill(MaybeUninit::new(0.0));
            // SAFETY: every slot of the part was just written.
            f(i, unsafe { assume_written(p) })
        })
    };
    // SAFETY: the parts cover all `len` slots, and each is zeroed before anything else.
    unsafe { filled(len, fill) }
}

/// An initialized slice seen as one that a writer of [`filled`]'s kind may write.
pub(crate) fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and what is written through the view is
    // always an initialized `f32`, so `s` stays initialized.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// A slice whose every slot has been written, seen as initialized.
///
/// # Safety
/// Every slot of `s` must have been written.
pub(crate) unsafe fn assume_written(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; the caller promises each slot holds a value.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}
