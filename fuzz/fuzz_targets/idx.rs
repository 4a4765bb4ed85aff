//! IDX images, labels, and whole four-file datasets (raw or gzip) from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| normwd::fuzzing::idx(input));
