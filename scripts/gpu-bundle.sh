#!/usr/bin/env bash
# Builds the `cuda` binary here, on a machine without a GPU, and packs it for a GPU machine
# that has no Rust toolchain and takes at most 64 MiB of carried files:
#
#   scripts/gpu-bundle.sh          # --profile dist (release, no debug info, stripped)
#   scripts/gpu-bundle.sh dev      # the dev profile: CI's, sharing the tests' dependencies
#
# It writes .gpu/llm-judge.gz (the binary, stripped, gzip -9) and .gpu/needed.txt (the
# shared libraries it needs when it starts), prints both sizes, and fails if the packed
# binary is over 64 MiB. On the GPU machine, `scripts/gpu-check.sh .gpu/llm-judge.gz` unpacks
# and checks it. The CUDA libraries come from the NVIDIA driver (libcuda.so.1) and CUDA 13's
# wheels (nvidia-cuda-runtime, nvidia-cuda-nvrtc, nvidia-curand, nvidia-cublas), which
# gpu-check.sh finds in Python's site-packages; the binary also needs libfontconfig.so.1 and
# libfreetype.so.6 (chart text), libstdc++ and glibc.
#
# Environment: LLM_JUDGE_GPU_BUNDLE (output folder, default .gpu), CUDA_COMPUTE_CAP (see
# scripts/cuda-toolkit.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-dist}"
out="${LLM_JUDGE_GPU_BUNDLE:-.gpu}"
limit=$((64 * 1024 * 1024))
# Not `eval "$(...)"`, which would hide the script's failure.
toolkit=$(scripts/cuda-toolkit.sh)
eval "$toolkit"
cargo build --profile "$profile" --features cuda --bin llm-judge
folder=$profile
[ "$profile" = dev ] && folder=debug
bin="${CARGO_TARGET_DIR:-target}/$(rustc -vV | sed -n 's/^host: //p')/$folder/llm-judge"
mkdir -p "$out"
strip -o "$out/llm-judge.tmp" "$bin"
raw=$(stat -c %s "$out/llm-judge.tmp")
gzip -9 -c "$out/llm-judge.tmp" >"$out/llm-judge.gz.tmp"
rm "$out/llm-judge.tmp"
mv "$out/llm-judge.gz.tmp" "$out/llm-judge.gz"
packed=$(stat -c %s "$out/llm-judge.gz")
readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' >"$out/needed.txt"
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
echo "gpu-bundle: $bin ($profile profile): $(mb "$(stat -c %s "$bin")"), stripped $(mb "$raw"), packed $(mb "$packed") in $out/llm-judge.gz (limit $(mb "$limit"))"
echo "gpu-bundle: needs $(paste -sd' ' "$out/needed.txt")"
if [ "$packed" -gt "$limit" ]; then
  echo "gpu-bundle: $out/llm-judge.gz is over the 64 MiB that a GPU machine takes" >&2
  exit 1
fi
