#!/usr/bin/env bash
# Packs what a GPU machine without internet needs into gpu-libs/ (one folder to carry there):
# the GPU build of normwd, stripped and gzipped (the unstripped binary is ~600 MB, stripped ~69 MB),
# and this machine's Vulkan loader (Debian libvulkan1), because the GPU machines have the NVIDIA
# Vulkan driver but no loader. bench/gpu.sh unpacks and uses them.
#
#   CARGO_TARGET_DIR=target-gpu cargo build --release --features vulkan --bin normwd --example fused_probe
#   scripts/gpu-carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target-gpu/release/normwd}"
[ -x "$bin" ] || { echo "$bin missing: CARGO_TARGET_DIR=target-gpu cargo build --release --features vulkan" >&2; exit 2; }
lib=/usr/lib/x86_64-linux-gnu/libvulkan.so.1
[ -e "$lib" ] || apt-get install -y -qq libvulkan1 >/dev/null
rm -rf gpu-libs && mkdir gpu-libs
cp -L "$lib" gpu-libs/libvulkan.so.1
strip -o gpu-libs/normwd "$bin"
# The fused multi-config probe, where it was built (`--example fused_probe` in the same build).
probe="$(dirname "$bin")/examples/fused_probe"
gzip -9 gpu-libs/normwd
if [ -x "$probe" ]; then strip -o gpu-libs/fused_probe "$probe" && gzip -9 gpu-libs/fused_probe; fi
du -h gpu-libs/*
