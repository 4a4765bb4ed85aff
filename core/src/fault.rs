//! Fault points for crash tests. A crash in the middle of writing a file cannot be timed from
//! outside reliably, so tests name the moment instead: `NORMWD_FAULT=mid-write:checkpoint.safetensors@2`
//! aborts the process (like `kill -9`, no cleanup) half-way through the second write of that
//! file. Without the variable every point is a single cached comparison.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The environment variable holding `"{point}:{file}[@{occurrence}]"`.
pub const VAR: &str = "NORMWD_FAULT";

struct Armed {
    point: String,
    file: String,
    occurrence: usize,
    seen: AtomicUsize,
}

/// The fault a value names: point, file and occurrence (from 1), if the value is well formed.
fn parse(v: &str) -> Option<(&str, &str, usize)> {
    let (point, rest) = v.split_once(':')?;
    let (file, occurrence) = match rest.rsplit_once('@') {
        Some((f, n)) => (f, n.parse().ok()?),
        None => (rest, 1),
    };
    let known = matches!(point, "mid-write" | "before-rename");
    (known && !file.is_empty() && occurrence >= 1).then_some((point, file, occurrence))
}

/// Whether `v` is a well-formed [`VAR`] value (checked at start by the engine at start (`normwd::env::check`)).
pub fn valid(v: &str) -> bool {
    parse(v).is_some()
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var(VAR).ok()?;
            let (point, file, occurrence) = parse(&v)?;
            Some(Armed { point: point.into(), file: file.into(), occurrence, seen: AtomicUsize::new(0) })
        })
        .as_ref()
}

/// Aborts the process when the armed fault names this `point` and `file` and this is its
/// chosen occurrence. Points: `mid-write` (half the bytes of the temporary file are on disk),
/// `before-rename` (the whole temporary file is synced, the rename has not happened).
pub fn point(point: &str, file: &str) {
    let Some(a) = armed() else { return };
    if a.point == point && a.file == file && a.seen.fetch_add(1, Ordering::SeqCst) + 1 == a.occurrence {
        eprintln!("{VAR}: aborting at {point}:{file}");
        std::process::abort();
    }
}

/// Whether a fault is armed (writers then sync before a fault point, so the crash leaves
/// exactly the bytes written so far on disk).
pub fn is_armed() -> bool {
    armed().is_some()
}
