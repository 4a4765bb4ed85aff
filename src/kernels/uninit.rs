//! Output buffers that the kernels write in full, handed out without zeroing them first:
//! zeroing megabytes per layer on the calling thread, only to overwrite them, was a visible
//! part of a training step.

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
