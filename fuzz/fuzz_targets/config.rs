//! Run configs (`--config run.toml`) and sweep specs from arbitrary text. A run config that
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| normwd::fuzzing::config(input));
