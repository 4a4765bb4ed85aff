//! Flax msgpack checkpoints (`normwd inspect ckpt.msgpack`) from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| normwd::fuzzing::flax(input));
