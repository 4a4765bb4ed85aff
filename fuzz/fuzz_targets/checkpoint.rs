//! Checkpoints restored into a run (see `normwd::fuzzing::CheckpointTarget`).
#![no_main]

use normwd::fuzzing::CheckpointTarget;
use std::cell::RefCell;

thread_local! {
    static TARGET: RefCell<Option<CheckpointTarget>> = const { RefCell::new(None) };
}

libfuzzer_sys::fuzz_target!(
    init: {
        let t = CheckpointTarget::new();
        // `NORMWD_FUZZ_SEEDS=dir` writes the real header as the corpus seed (scripts/fuzz.sh).
        if let Some(dir) = std::env::var_os("NORMWD_FUZZ_SEEDS") {
            std::fs::write(std::path::Path::new(&dir).join("tiny-run-header"), &t.seed).expect("write the seed");
        }
        TARGET.with(|c| *c.borrow_mut() = Some(t));
    },
    |input: &[u8]| {
        TARGET.with(|c| c.borrow_mut().as_mut().expect("initialized").run(input));
    }
);
