//! Text for `gpt` (characters and bytes) from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| normwd::fuzzing::text(input));
