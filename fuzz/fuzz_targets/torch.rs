//! `torch.save` checkpoints (`normwd inspect ckpt.pt`) from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| normwd::fuzzing::torch(input));
