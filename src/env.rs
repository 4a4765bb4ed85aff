//! The process's environment: the `NORMWD_*` variables that switch or tune kernels, checked once
//! at start, and the allocator settings a training process runs with ([`tune_allocator`]).
//! Each is read where it acts (one inside the vendored thread pool, where no error can be
//! returned), so without this check a misspelt value would quietly mean the default.
//!
//! May import the core (the fault switch).

/// A variable, the values it takes (for the message) and its check.
struct Var {
    name: &'static str,
    expected: &'static str,
    valid: fn(&str) -> bool,
}

const VARS: [Var; 5] = [
    Var { name: "NORMWD_KERNELS", expected: "on or off", valid: |v| matches!(v, "on" | "off") },
    Var { name: "NORMWD_CONV_DIRECT", expected: "on, off or avx2", valid: |v| matches!(v, "on" | "off" | "avx2") },
    Var { name: "NORMWD_CONV", expected: "auto, direct, winograd2 or winograd4", valid: crate::kernels::conv::choice::valid },
    Var { name: "NORMWD_POOL_SPIN_US", expected: "a whole number of microseconds (0 sleeps at once)", valid: |v| v.parse::<u64>().is_ok() },
    Var { name: crate::fault::VAR, expected: "POINT:FILE[@N], POINT mid-write or before-rename", valid: crate::fault::valid },
];

/// Checks every set `NORMWD_*` switch; the error names the variable, its value and what it takes.
pub fn check() -> Result<(), String> {
    check_with(|name| std::env::var(name).ok())
}

fn check_with(get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    for var in &VARS {
        if let Some(v) = get(var.name) {
            if !(var.valid)(&v) {
                return Err(format!("{}={v:?}: expected {}", var.name, var.expected));
            }
        }
    }
    Ok(())
}

/// Keeps a training step's large buffers in the heap between steps (the `normwd` program and
/// the timing examples call it first). A step frees and reallocates the same large activation
/// buffers every step; with glibc's defaults they go back to the kernel and return as fresh
/// zeroed pages (page faults and zeroing were ~10% of a ConvNet step in perf). Keeping them costs
/// no more peak memory than the step needs anyway.
///
/// # Safety
/// Call before any thread starts (glibc's `mallopt` is not meant to race with allocations).
pub unsafe fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; the caller runs this before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        // Steps run on either pool thread (`kernels::on_workers`); with an arena per thread
        // each kept a whole step's buffers, doubling ResNet-20's peak RSS (255 -> 489 MB).
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &'static str) -> Result<(), String> {
        check_with(|n| (n == name).then(|| value.to_string()))
    }

    #[test]
    fn bad_values_are_named_and_good_ones_pass() {
        assert!(check_with(|_| None).is_ok());
        for (name, good, bad) in [
            ("NORMWD_KERNELS", "off", "0"),
            ("NORMWD_CONV_DIRECT", "avx2", "avx512"),
            ("NORMWD_CONV", "winograd2", "winograd"),
            ("NORMWD_POOL_SPIN_US", "0", "5ms"),
            ("NORMWD_FAULT", "mid-write:checkpoint.safetensors@2", "mid-write"),
        ] {
            assert!(with(name, good).is_ok(), "{name}={good}");
            let e = with(name, bad).unwrap_err();
            assert!(e.starts_with(&format!("{name}=\"{bad}\": expected ")), "{e}");
        }
        assert!(with("NORMWD_FAULT", "mid-write:x@0").is_err(), "occurrences count from 1");
        assert!(with("NORMWD_FAULT", "crash:x").is_err(), "unknown point");
    }
}
