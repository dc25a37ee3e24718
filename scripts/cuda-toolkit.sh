#!/usr/bin/env bash
# Installs a CUDA compiler toolchain from PyPI wheels (Debian has no CUDA toolkit) and prints the
# environment the `cuda` feature needs to build on a machine without a GPU.
#
#   eval "$(scripts/cuda-toolkit.sh)"
#   cargo check --features cuda        # or: cargo build --release --features cuda
#
# The CUDA 13 wheels carry a whole toolchain (nvcc, cicc, ptxas, headers); the cu12 nvcc wheel
# has no `nvcc` driver. That is enough for `cargo check --features cuda`, which compiles every
# crate and candle's CUDA kernels, and for `cargo build --features cuda`, which links against
# stubs of the CUDA libraries made here (below). The binary then needs the real libraries when
# it starts, even to run on the CPU: libcuda.so.1 (the NVIDIA driver), libcudart.so.13,
# libcurand.so.10 and libcublas.so.13, which loads libcublasLt.so.13 (the wheels
# nvidia-cuda-runtime, nvidia-curand and nvidia-cublas, CUDA 13). The linker drops libnvrtc,
# whose entry points nothing calls; `.gpu/needed.txt` (scripts/gpu-bundle.sh) has the list.
#
# Environment: LLM_JUDGE_CUDA_DIR (install folder, default ~/.cache/llm-judge/cuda),
# CUDA_COMPUTE_CAP (default 90: H100/H200; 80 = A100, 89 = L4, 75 = T4).
# Progress goes to stderr; stdout carries only `export` lines.
set -euo pipefail
dir="${LLM_JUDGE_CUDA_DIR:-$HOME/.cache/llm-judge/cuda}"
cap="${CUDA_COMPUTE_CAP:-90}"
# Pinned: these versions were compiled against candle 0.11.1 / cudarc 0.19.10.
wheels=(
  "nvidia-cuda-nvcc==13.5.37"
  "nvidia-cuda-runtime==13.5.37"
  "nvidia-cuda-cccl==13.3.5.0.6"
  "nvidia-cuda-crt==13.5.37"
  "nvidia-nvvm==13.5.37"
)
root="$dir/nvidia/cu13"
if [ ! -x "$root/bin/nvcc" ]; then
  echo "cuda-toolkit: downloading ${wheels[*]} into $dir" >&2
  mkdir -p "$dir/wheels"
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$dir/wheels" "${wheels[@]}" >&2
  for w in "$dir"/wheels/*.whl; do
    python3 -m zipfile -e "$w" "$dir/" >&2
  done
  # Zip extraction drops the executable bits of nvcc, cicc and ptxas.
  find "$root" -path '*bin*' -type f -exec chmod +x {} +
fi
[ -x "$root/bin/nvcc" ] || { echo "cuda-toolkit: no nvcc under $root" >&2; exit 1; }

# Link stubs, so that `cargo build --features cuda` links here: candle builds cudarc with
# `dynamic-linking` (-lcuda -lnvrtc -lcurand -lcublas -lcublasLt) and candle-kernels links
# -lcudart. Each stub is a shared library that defines, as empty functions, every entry point
# cudarc declares for that library, under the real library's SONAME, so the binary records
# the real library (libcuda.so.1, libcublas.so.13, ...) and the loader takes that one on the
# GPU machine. The stubs are named `libX.so` only: the loader, which looks for the SONAME,
# never picks one up. libcudart is the wheel's real library.
# Made again when the cudarc that Cargo.lock names, or the list below, changes.
manifest="$(cd "$(dirname "$0")/.." && pwd)/Cargo.toml"
specs="driver:cuda:1 nvrtc:nvrtc:13 curand:curand:10 cublas:cublas:13 cublaslt:cublasLt:13"
cudarc_src=$(cargo metadata --manifest-path "$manifest" --format-version 1 --features cuda 2>/dev/null | python3 -c '
import json, os, sys
pkgs = json.load(sys.stdin)["packages"]
print(next(os.path.dirname(p["manifest_path"]) for p in pkgs if p["name"] == "cudarc"))') ||
  { echo "cuda-toolkit: cudarc's source not found (cargo metadata on $manifest)" >&2; exit 1; }
if [ "$(cat "$root/lib/.stubs-from" 2>/dev/null)" != "$cudarc_src $specs" ]; then
  stubs=$(mktemp -d)
  for spec in $specs; do
    IFS=: read -r module lib so <<<"$spec"
    sed -n 's/^pub unsafe fn \([A-Za-z0-9_]*\)(.*/void \1(void) {}/p' "$cudarc_src/src/$module/sys/mod.rs" |
      sort -u >"$stubs/$lib.c"
    [ -s "$stubs/$lib.c" ] ||
      { echo "cuda-toolkit: no entry points of lib$lib found in $cudarc_src/src/$module/sys/mod.rs" >&2; exit 1; }
    gcc -shared -fPIC -Wl,-soname,"lib$lib.so.$so" -o "$root/lib/lib$lib.so" "$stubs/$lib.c" >&2
    echo "cuda-toolkit: link stub lib$lib.so ($(wc -l <"$stubs/$lib.c") symbols, SONAME lib$lib.so.$so)" >&2
  done
  rm -rf "$stubs"
  ln -sf libcudart.so.13 "$root/lib/libcudart.so"
  echo "$cudarc_src $specs" >"$root/lib/.stubs-from"
fi
version=$("$root/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r major minor <<<"$version"
# cudarc 0.19.10 knows CUDA up to 13.4 and panics on newer versions: build against its 13.4 API.
cudarc=$((major * 1000 + (minor > 4 ? 4 : minor) * 10))
echo "cuda-toolkit: nvcc $major.$minor at $root, compute capability $cap" >&2
echo "export CUDA_ROOT='$root' CUDA_PATH='$root' PATH='$root/bin':\"\$PATH\""
echo "export CUDA_COMPUTE_CAP=$cap CUDARC_CUDA_VERSION=$cudarc"
# candle-kernels compiles its kernels through cudaforge, which uses half the cores unless told:
# on 2 cores, one ptxas at a time for minutes while the other core waits.
echo "export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}"
