//! What handing work to rayon's pool costs on this machine: the median time of a `join` of two
//! 10 us tasks after the caller worked alone for a while (`gap`), called from outside the pool
//! (as burn's ops are from a plain thread) and from a pool thread (as `normwd` runs its
//! training steps, `kernels::on_workers`). Ideal: 10 us. Run:
//! `RAYON_NUM_THREADS=2 cargo run --release --example rayon_latency`; `NORMWD_POOL_SPIN_US=0`
//! for rayon's own idle policy (workers asleep after ~20 us), which the vendored rayon-core
//! (vendor/rayon-core) replaces with 5 ms of spinning.
use std::time::Instant;

fn busy(us: f64) {
    let t = Instant::now();
    while t.elapsed().as_secs_f64() * 1e6 < us {}
}

fn run(label: &str) {
    for gap in [0.0, 5.0, 20.0, 100.0, 1000.0, 10000.0] {
        let mut v = vec![];
        let reps = if gap > 1000.0 { 200 } else { 2000 };
        for _ in 0..reps {
            busy(gap);
            let t = Instant::now();
            rayon::join(|| busy(10.0), || busy(10.0));
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        v.sort_by(f64::total_cmp);
        println!("{label:8} gap {gap:6} us: join(10 us, 10 us) median {:.1} us, p90 {:.1} us", v[v.len() / 2], v[v.len() * 9 / 10]);
    }
}

fn main() {
    run("outside");
    rayon::scope(|_| run("inside"));
}
