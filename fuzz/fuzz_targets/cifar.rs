//! CIFAR-10 binary batches from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| normwd::fuzzing::cifar(input));
