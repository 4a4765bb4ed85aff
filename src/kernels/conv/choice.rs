//! Which algorithm computes each part of a stride-1 3x3 convolution: the direct forms or
//! Winograd's F(2x2) or F(4x4). As cuDNN's and oneDNN's algorithm search, `auto` (the default)
//! times every candidate on the layer's own geometry the first time it is seen and keeps the
//! fastest per part (forward, input gradient, weight gradient); the two gradients by one tile
//! size in one pass ([`winograd::backward`]) are timed too, and take the backward where they beat
//! the parts' own choices. A Winograd part must beat the direct one by [`MARGIN`], so timing
//! noise does not trade the direct kernels' rounding for a gain too small to measure.
//!
//! The choices are kept in a file per machine ([`cache_path`]), so every later process on the
//! same machine and geometry, with any thread count, computes the same numbers: the choice, not a fresh
//! timing, decides. `NORMWD_CONV=direct|winograd2|winograd4` forces one algorithm for every part
//! that it computes (for comparison and for reproducing a run elsewhere).

use super::winograd::{self, Tile};
use super::Geometry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// How one part of a convolution runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algo {
    /// The direct SIMD, shifted or im2col forms (whichever suits the geometry).
    Direct,
    /// Winograd's minimal filtering with this tile size.
    Winograd(Tile),
}

impl Algo {
    /// Every candidate, the direct forms first.
    pub const ALL: [Algo; 3] = [Algo::Direct, Algo::Winograd(Tile::F2), Algo::Winograd(Tile::F4)];

    /// The name `NORMWD_CONV` and the cache file use.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Direct => "direct",
            Algo::Winograd(Tile::F2) => "winograd2",
            Algo::Winograd(Tile::F4) => "winograd4",
        }
    }

    fn parse(s: &str) -> Option<Algo> {
        Algo::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// A layer's algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// For the forward.
    pub forward: Algo,
    /// For the input gradient.
    pub input_grad: Algo,
    /// For the weight gradient.
    pub weight_grad: Algo,
}

impl Plan {
    fn all(a: Algo) -> Plan {
        Plan { forward: a, input_grad: a, weight_grad: a }
    }
}

/// FLOPs of the convolution parts run since the last [`take_flops`]: as the direct forms count
/// them (`2 c_out c_in k^2` per output pixel), and as performed (Winograd's products: `2 c_out
/// c_in` per transformed position and tile; the transforms' additions not counted).
static EQUIVALENT: AtomicU64 = AtomicU64::new(0);
static PERFORMED: AtomicU64 = AtomicU64::new(0);

/// Counts one part (a forward, an input or a weight gradient) of `g` run by `a`.
pub(super) fn count(g: &Geometry, a: Algo) {
    let direct = 2 * (g.n * g.c_out * g.c_in * g.k * g.k * g.h_out() * g.w_out()) as u64;
    let done = match a {
        Algo::Direct => direct,
        Algo::Winograd(tile) => winograd::product_flops(g, tile),
    };
    EQUIVALENT.fetch_add(direct, Ordering::Relaxed);
    PERFORMED.fetch_add(done, Ordering::Relaxed);
}

/// The convolution FLOPs counted since the last call, `(direct equivalent, performed)`, and
/// starts counting afresh (for `normwd bench`'s "equivalent direct FLOP rate").
pub fn take_flops() -> (u64, u64) {
    (EQUIVALENT.swap(0, Ordering::Relaxed), PERFORMED.swap(0, Ordering::Relaxed))
}

/// How much faster a Winograd part must run than the direct one to be chosen.
pub const MARGIN: f64 = 0.05;

/// The values `NORMWD_CONV` takes (checked at start by `env::check`).
pub fn valid(v: &str) -> bool {
    v == "auto" || Algo::parse(v).is_some()
}

/// [`force`]'s setting: 0 none (`NORMWD_CONV` decides), 1 `auto`, else 2 + the index in
/// [`Algo::ALL`].
static FORCE: AtomicU8 = AtomicU8::new(0);

/// Sets the algorithm of every later convolution in this process, over `NORMWD_CONV`: one
/// algorithm, or `None` for `auto` (for tests and benchmarks that compare them in one process).
pub fn force(a: Option<Algo>) {
    let v = a.map_or(1, |a| 2 + Algo::ALL.iter().position(|&b| b == a).expect("a candidate") as u8);
    FORCE.store(v, Ordering::Relaxed);
}

/// The forced algorithm, `None` for `auto`: [`force`]'s, else `NORMWD_CONV` (read once).
fn forced() -> Option<Algo> {
    match FORCE.load(Ordering::Relaxed) {
        0 => {
            static FORCED: OnceLock<Option<Algo>> = OnceLock::new();
            *FORCED.get_or_init(|| std::env::var("NORMWD_CONV").ok().and_then(|v| Algo::parse(&v)))
        }
        1 => None,
        v => Some(Algo::ALL[v as usize - 2]),
    }
}

/// The algorithms for `g`: the forced one, or the measured (or cached) choice. Geometries that
/// Winograd does not compute always take the direct forms.
pub fn plan(g: &Geometry) -> Plan {
    if !winograd::applies(g) {
        return Plan::all(Algo::Direct);
    }
    if let Some(a) = forced() {
        return Plan::all(a);
    }
    static PLANS: OnceLock<Mutex<HashMap<Key, Plan>>> = OnceLock::new();
    let plans = PLANS.get_or_init(|| Mutex::new(load()));
    let key = Key::of(g);
    if let Some(p) = plans.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return *p;
    }
    let p = measure(g);
    let mut all = plans.lock().unwrap_or_else(|e| e.into_inner());
    all.insert(key, p);
    save(&all);
    p
}

/// A geometry on this machine. The thread count is not part of it: one choice for every count,
/// so the numbers do not depend on the threads (each algorithm's sums run in an order fixed by
/// the geometry alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    pad: usize,
}

impl Key {
    fn of(g: &Geometry) -> Key {
        Key { n: g.n, c_in: g.c_in, h: g.h, w: g.w, c_out: g.c_out, pad: g.pad }
    }

    fn fields(&self) -> [usize; 6] {
        [self.n, self.c_in, self.h, self.w, self.c_out, self.pad]
    }
}

/// The median of three timed runs of `f` after one untimed (the first call sizes buffers).
fn time(f: &mut dyn FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..3)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[1]
}

/// The fastest of `times` (indexed like [`Algo::ALL`]), a Winograd one only if it beats the
/// direct forms by [`MARGIN`].
fn fastest(times: [f64; 3]) -> Algo {
    let (best, t) = (1..3).map(|i| (i, times[i])).min_by(|a, b| a.1.total_cmp(&b.1)).expect("two candidates");
    if t < times[0] * (1.0 - MARGIN) {
        Algo::ALL[best]
    } else {
        Algo::Direct
    }
}

/// Times every candidate for each part on `g` with made-up values (the values do not change
/// the time; no denormals).
fn measure(g: &Geometry) -> Plan {
    let wave = |len: usize, k: usize| -> Vec<f32> { (0..len).map(|i| (((i * k) % 997) as f32 / 997.0 - 0.5) * 0.5).collect() };
    let x = wave(g.n * g.in_len(), 31);
    let w = wave(g.c_out * g.rows(), 17);
    let dy = wave(g.n * g.out_len(), 13);
    let mut forward = [0.0; 3];
    let mut input_grad = [0.0; 3];
    let mut weight_grad = [0.0; 3];
    for (i, a) in Algo::ALL.into_iter().enumerate() {
        let kernel = match a {
            Algo::Direct => None,
            Algo::Winograd(tile) => Some(winograd::kernel_transform(g, tile, &w)),
        };
        forward[i] = time(&mut || {
            std::hint::black_box(super::forward_with(g, a, &x, &w, None));
        });
        input_grad[i] = time(&mut || {
            std::hint::black_box(super::input_grad_with(g, a, &w, kernel.as_ref(), &dy));
        });
        weight_grad[i] = time(&mut || {
            std::hint::black_box(super::weight_grad_with(g, a, &x, &dy));
        });
    }
    let mut plan = Plan { forward: fastest(forward), input_grad: fastest(input_grad), weight_grad: fastest(weight_grad) };
    if winograd::fuses(g) {
        // Both gradients by one tile size run as one pass (the output gradient spread once), so
        // that pass is timed too: it takes the backward where it beats the parts' own choices.
        let of = |times: &[f64; 3], a: Algo| times[Algo::ALL.iter().position(|&b| b == a).expect("a candidate")];
        let mut best = of(&input_grad, plan.input_grad) + of(&weight_grad, plan.weight_grad);
        for tile in Tile::ALL {
            let kernel = winograd::kernel_transform(g, tile, &w);
            let t = time(&mut || {
                std::hint::black_box(winograd::backward(g, tile, Some(&kernel), &w, &x, super::OutGrad::Given(&dy)));
            });
            // Against a direct part, by the same margin as the parts' own choices.
            let margin = if plan.input_grad == Algo::Direct || plan.weight_grad == Algo::Direct { 1.0 - MARGIN } else { 1.0 };
            if t < best * margin {
                (best, plan.input_grad, plan.weight_grad) = (t, Algo::Winograd(tile), Algo::Winograd(tile));
            }
        }
    }
    plan
}

/// Where the choices are kept: `$NORMWD_CACHE_DIR`, else `$XDG_CACHE_HOME/normwd`, else
/// `~/.cache/normwd`, file `conv-plans.txt`, one line per geometry, prefixed by the CPU's model
/// name (a copied home directory does not carry one machine's choices to another).
pub fn cache_path() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("NORMWD_CACHE_DIR").map(Into::into).or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(|d| std::path::PathBuf::from(d).join("normwd"))
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/normwd")))
    })?;
    Some(dir.join("conv-plans.txt"))
}

/// This CPU's model name (from `/proc/cpuinfo`), spaces as `_`.
fn cpu() -> &'static str {
    static CPU: OnceLock<String> = OnceLock::new();
    CPU.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let name =
            info.lines().find_map(|l| l.strip_prefix("model name")).and_then(|l| l.split_once(':')).map_or("unknown", |(_, v)| v.trim());
        name.replace(char::is_whitespace, "_")
    })
}

/// The cached choices of this CPU; a missing or unreadable file, or a malformed line, is
/// skipped (that geometry is measured again).
fn load() -> HashMap<Key, Plan> {
    let text = cache_path().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    text.lines().filter_map(|line| parse_line(line, cpu())).collect()
}

fn parse_line(line: &str, cpu: &str) -> Option<(Key, Plan)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 10 || f[0] != cpu {
        return None;
    }
    let n: Vec<usize> = f[1..7].iter().map(|v| v.parse().ok()).collect::<Option<_>>()?;
    let key = Key { n: n[0], c_in: n[1], h: n[2], w: n[3], c_out: n[4], pad: n[5] };
    let plan = Plan { forward: Algo::parse(f[7])?, input_grad: Algo::parse(f[8])?, weight_grad: Algo::parse(f[9])? };
    Some((key, plan))
}

/// Writes the choices (the other CPUs' lines kept) atomically, so a concurrent reader sees the
/// old file or the new one.
fn save(plans: &HashMap<Key, Plan>) {
    let Some(path) = cache_path() else { return };
    let others: Vec<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(cpu()))
        .map(str::to_string)
        .collect();
    let mut lines: Vec<String> = plans
        .iter()
        .map(|(k, p)| {
            let f = k.fields().map(|v| v.to_string()).join(" ");
            format!("{} {f} {} {} {}", cpu(), p.forward.name(), p.input_grad.name(), p.weight_grad.name())
        })
        .collect();
    lines.sort();
    lines.extend(others);
    // The core's atomic writer (temporary file, fsync, rename); a failure only costs a later
    // measurement.
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = normwd_core::store::write_atomic(&path, (lines.join("\n") + "\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_line_round_trips_and_other_cpus_or_bad_lines_are_skipped() {
        let line = "AMD_EPYC 128 16 32 32 16 1 winograd2 direct winograd4";
        let (k, p) = parse_line(line, "AMD_EPYC").expect("a valid line");
        assert_eq!(k.fields(), [128, 16, 32, 32, 16, 1]);
        assert_eq!(p, Plan { forward: Algo::Winograd(Tile::F2), input_grad: Algo::Direct, weight_grad: Algo::Winograd(Tile::F4) });
        assert!(parse_line(line, "Intel").is_none());
        assert!(parse_line("AMD_EPYC 128 16 32 32 16 1 winograd3 direct direct", "AMD_EPYC").is_none());
        assert!(parse_line("AMD_EPYC 128 16 32 32 16 winograd2 direct direct", "AMD_EPYC").is_none());
        assert!(valid("auto") && valid("direct") && valid("winograd4") && !valid("winograd"));
    }

    #[test]
    fn winograd_must_beat_the_direct_forms_by_the_margin() {
        assert_eq!(fastest([1.0, 0.97, 0.99]), Algo::Direct);
        assert_eq!(fastest([1.0, 0.90, 0.99]), Algo::Winograd(Tile::F2));
        assert_eq!(fastest([1.0, 0.90, 0.80]), Algo::Winograd(Tile::F4));
    }
}
