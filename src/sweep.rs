//! Running sweeps: the points of a sweep file (parsed by the core, [`normwd_core::sweep`]),
//! each a normal training run. Resumable (finished points are skipped, interrupted ones resume
//! from their checkpoint), shardable (`--shard i/n` for job arrays), safe for two sweeps on one
//! folder (per-point lock files).
//!
//! May import `train` and `jobs`.

pub use normwd_core::sweep::*;

use crate::jobs;
use crate::train::store::{write_atomic, StoreError};
use crate::train::{self, files, RunOptions, TrainError};
use normwd_core::exit::ExitCode;
use std::path::{Path, PathBuf};

impl ExitCode for SweepError {
    fn exit_code(&self) -> i32 {
        match self {
            SweepError::Spec(e) => e.exit_code(),
            SweepError::Store(_) => 1,
            SweepError::Run { source, .. } => source.exit_code(),
        }
    }
}

/// Errors of running a sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The sweep file or its folder.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Files of the sweep folder.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A run failed in a way that is not the point's own divergence.
    #[error("point {point}: {source}")]
    Run {
        /// The point.
        point: String,
        /// Why.
        source: TrainError,
    },
}

/// Runs the points of `spec` (those of shard `i/n`) into `out`, `jobs` at a time, skipping
/// finished points and resuming interrupted ones. Calls `warn` with what a point's run says
/// before it trains ([`train::Observer::warning`]) and `progress` after each point.
pub fn run(
    spec: &Spec,
    spec_text: &str,
    out: &Path,
    jobs: usize,
    shard_of: (usize, usize),
    progress: &(dyn Fn(&Point, &Outcome) + Sync),
    warn: &(dyn Fn(&Point, &str) + Sync),
) -> Result<(), SweepError> {
    std::fs::create_dir_all(out).map_err(|e| StoreError::Io { file: out.display().to_string(), source: e })?;
    write_atomic(&out.join(SPEC), spec_text.as_bytes())?;
    let mine = shard(&spec.points, shard_of.0, shard_of.1);
    jobs::run_each(&mine, jobs, &|p: &&Point| -> Result<(), SweepError> {
        let dir = out.join(&p.name);
        if let Outcome::Done(_) | Outcome::Diverged(_) = outcome(&dir) {
            return Ok(());
        }
        let Some(_lock) = PointLock::acquire(&dir)? else { return Ok(()) };
        // Another sweep may have finished it between the check and the lock.
        if let Outcome::Done(_) | Outcome::Diverged(_) = outcome(&dir) {
            return Ok(());
        }
        let resume = dir.join(files::CONFIG).exists();
        let mut observer = Warnings { point: p, warn };
        let o = match train::run(p.config.clone(), RunOptions { dir: dir.clone(), resume, observer: &mut observer }) {
            Ok(s) => Outcome::Done(s),
            Err(e @ TrainError::Diverged { .. }) => {
                write_atomic(&dir.join(FAILED), e.to_string().as_bytes())?;
                Outcome::Diverged(e.to_string())
            }
            Err(e) => return Err(SweepError::Run { point: p.name.clone(), source: e }),
        };
        progress(p, &o);
        Ok(())
    })
}

/// Passes a point's warnings on, and nothing else.
struct Warnings<'a> {
    point: &'a Point,
    warn: &'a (dyn Fn(&Point, &str) + Sync),
}

impl train::Observer for Warnings<'_> {
    fn warning(&mut self, message: &str) {
        (self.warn)(self.point, message);
    }
}

/// A lock on one point's folder, held while it trains; removed on drop. The lock is the
/// kernel's (`flock` on `.lock`), so it ends with its holder: a lock left by a killed sweep is
/// free, and taking it over needs no guess about whether its holder still runs. (Deciding that
/// from a pid in the file let two sweeps that found the same stale lock both remove it and
/// both train the point.) The file holds the holder's pid, for people.
pub struct PointLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl PointLock {
    /// Tries to lock `dir`; `None` when another sweep (or thread) holds it.
    pub fn acquire(dir: &Path) -> Result<Option<Self>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io { file: dir.display().to_string(), source: e })?;
        let path = dir.join(".lock");
        let io = |e| StoreError::Io { file: path.display().to_string(), source: e };
        loop {
            let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            // A holder that let go between our open and our lock removed the file first, so
            // this lock may be on a file no one else can find: it counts only if the path
            // still names it.
            if still_at(&file, &path) {
                use std::io::Write;
                file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id())).map_err(io)?;
                return Ok(Some(PointLock { path, _file: file }));
            }
        }
    }
}

/// Whether `path` still names the open `file`.
fn still_at(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

impl Drop for PointLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this), so a claimant that opened
        // it meanwhile sees, once it gets the lock, that the path no longer names it.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six claimants at once, 400 times, every other time on a lock file a killed sweep
    /// left behind: exactly one gets the lock each time. (Judged by the pid in the file, two
    /// claimants of a stale lock could both remove it and both take the point.)
    #[test]
    fn one_claimant_wins_a_free_or_stale_lock() {
        let dir = std::env::temp_dir().join(format!("normwd-lock-race-{}", std::process::id()));
        for round in 0..400 {
            let _ = std::fs::remove_dir_all(&dir);
            if round % 2 == 1 {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(".lock"), "999999999\n").unwrap();
            }
            let start = std::sync::Barrier::new(6);
            let held: Vec<Option<PointLock>> = std::thread::scope(|sc| {
                let claims: Vec<_> = (0..6)
                    .map(|_| {
                        sc.spawn(|| {
                            start.wait();
                            PointLock::acquire(&dir).unwrap()
                        })
                    })
                    .collect();
                claims.into_iter().map(|c| c.join().unwrap()).collect()
            });
            assert_eq!(held.iter().filter(|l| l.is_some()).count(), 1, "one holder per lock (round {round})");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Claimants that take and release the same point over and over are never two at once,
    /// including while one releases (removes the file) as another locks what it opened.
    #[test]
    fn released_locks_pass_to_one_claimant_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = std::env::temp_dir().join(format!("normwd-lock-pass-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (holders, taken) = (AtomicUsize::new(0), AtomicUsize::new(0));
        // Until 400 handoffs, not for a number of tries: on a loaded machine a holder can sleep
        // through the others' tries.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    while taken.load(Ordering::Relaxed) < 400 && std::time::Instant::now() < deadline {
                        if let Some(lock) = PointLock::acquire(&dir).unwrap() {
                            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                            taken.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                            holders.fetch_sub(1, Ordering::SeqCst);
                            drop(lock);
                        }
                    }
                });
            }
        });
        let n = taken.load(Ordering::Relaxed);
        assert!(n >= 400, "the lock changed hands only {n} times in 30 s");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_lock_is_taken_over_and_live_lock_is_respected() {
        let dir = std::env::temp_dir().join(format!("normwd-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = PointLock::acquire(&dir).unwrap().expect("free");
        assert!(PointLock::acquire(&dir).unwrap().is_none(), "held by a live process (this one)");
        assert_eq!(std::fs::read_to_string(dir.join(".lock")).unwrap(), format!("{}\n", std::process::id()), "names its holder");
        drop(a);
        assert!(!dir.join(".lock").exists(), "removed on release");
        std::fs::write(dir.join(".lock"), "999999999\n").unwrap();
        assert!(PointLock::acquire(&dir).unwrap().is_some(), "a lock file without a living lock is taken over");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
