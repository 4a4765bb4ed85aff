//! ONNX graphs (`normwd inspect --graph`) from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| normwd::fuzzing::onnx(input));
