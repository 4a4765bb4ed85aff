#!/usr/bin/env bash
# Fuzzes normwd's readers with libFuzzer (cargo fuzz): IDX, CIFAR-10, run/sweep configs,
# checkpoints (safetensors + run state), ONNX graphs, Flax msgpack and torch.save checkpoints
# (fuzz/corpus/torch/ holds two small torch.save files as seeds, made with torch 2.x).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 600 s each, all targets
#
# Installs cargo-fuzz if missing. Needs a nightly toolchain (`rustup toolchain install nightly`)
# for the sanitizer flags. New interesting inputs go to fuzz/corpus/<target>/ (minimized at the
# end, and committed; of onnx/ only inputs under 8 KB and the real model seed are kept, so the
# repository stays small); a crash stops the target and its input lands in fuzz/artifacts/<target>/:
# copy it to fuzz/regressions/<target>/ so `cargo test` replays it (tests/fuzz_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(idx cifar config checkpoint onnx flax torch text)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "cargo fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2; exit 2; }

python3 scripts/fuzz_seeds.py fuzz/corpus
cd fuzz
cargo +nightly fuzz build -O
# The checkpoint seed is the header of a real checkpoint of the tiny run the target restores into.
if [ ! -e corpus/checkpoint/tiny-run-header ]; then
  NORMWD_FUZZ_SEEDS=corpus/checkpoint cargo +nightly fuzz run -O checkpoint -- -runs=0 >/dev/null 2>&1
fi
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s"
  start=$(date +%s)
  if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 2> "target/fuzz-$t.log"; then
    echo "   no crash in $(( $(date +%s) - start ))s; $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "target/fuzz-$t.log" | grep -Eo '[0-9]+$') executions"
  else
    echo "   CRASH: see fuzz/target/fuzz-$t.log and fuzz/artifacts/$t/" >&2
    status=1
  fi
  cargo +nightly fuzz cmin -O "$t" "corpus/$t" >/dev/null 2>&1 || true
  # Mutants of the 38 KB ONNX seed would make megabytes of corpus: keep the small ones.
  [ "$t" = onnx ] && find corpus/onnx -type f -size +8k -delete
done
cd ..
python3 scripts/fuzz_seeds.py fuzz/corpus >/dev/null   # the named seeds again (cmin renames them)
exit $status
