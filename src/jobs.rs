//! Work spread over a few OS threads (`--jobs`): sweep points and demo regimes run side by
//! side, each a whole training run. (Not the CPU kernels' rayon workers, nor max pooling.)
//!
//! Imports nothing of the engine.

/// Runs `work` on every item, `jobs` threads at a time taking items in order; the first error
/// is returned once all threads stop (each thread stops at its own first error).
pub fn run_each<T: Sync, E: Send>(items: &[T], jobs: usize, work: &(dyn Fn(&T) -> Result<(), E> + Sync)) -> Result<(), E> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(), E>> = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                sc.spawn(|| -> Result<(), E> {
                    while let Some(item) = items.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) {
                        work(item)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("job threads do not panic")).collect()
    });
    results.into_iter().collect()
}
