#!/usr/bin/env bash
# Installs a CUDA compiler toolchain from PyPI wheels (Debian has no CUDA toolkit) and prints the
# environment the `cuda` feature needs to build on a machine without a GPU.
#
#   eval "$(scripts/cuda-toolkit.sh)"
#   cargo check --features cuda        # or: cargo build --release --features cuda
#
# The CUDA 13 wheels carry a whole toolchain (nvcc, cicc, ptxas, headers); the cu12 nvcc wheel
# has no `nvcc` driver. That is enough for `cargo check --features cuda`, which compiles every
# crate and candle's CUDA kernels. A full `cargo build --features cuda` also links: candle 0.11
# builds cudarc with `dynamic-linking`, so libcuda (the driver), libcudart, libnvrtc, libcurand,
# libcublas and libcublasLt must be on the linker's path (LIBRARY_PATH), and on
# LD_LIBRARY_PATH when the binary starts, even to run on the CPU. A machine with an NVIDIA
# driver and a CUDA install has them; here (no driver) the link fails on -lcuda.
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
version=$("$root/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r major minor <<<"$version"
# cudarc 0.19.10 knows CUDA up to 13.4 and panics on newer versions: build against its 13.4 API.
cudarc=$((major * 1000 + (minor > 4 ? 4 : minor) * 10))
echo "cuda-toolkit: nvcc $major.$minor at $root, compute capability $cap" >&2
echo "export CUDA_ROOT='$root' CUDA_PATH='$root' PATH='$root/bin':\"\$PATH\""
echo "export CUDA_COMPUTE_CAP=$cap CUDARC_CUDA_VERSION=$cudarc"
