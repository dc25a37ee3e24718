#!/usr/bin/env bash
# The GPU check: each bundled model decodes greedily on the CPU and on the GPU; the tokens
# must agree (the first 16) or the logits stay within 0.1; then the GPU's decode speed is
# printed. Exits non-zero on a mismatch.
#
#   scripts/gpu-check.sh                      # builds with --features cuda here, then checks
#   scripts/gpu-check.sh path/to/llm-judge    # checks with a binary built elsewhere
#
# A GPU machine without a Rust toolchain can take a binary built on another x86-64 Linux
# machine that has the NVIDIA driver and CUDA's libraries, with
# `eval "$(scripts/cuda-toolkit.sh)" && cargo build --release --features cuda`. The binary
# links against libcuda (the driver), libcudart, libnvrtc, libcurand, libcublas and
# libcublasLt (candle builds cudarc with `dynamic-linking`): where there is no system CUDA,
# `pip install nvidia-cublas nvidia-curand nvidia-cuda-nvrtc nvidia-cuda-runtime` and put their
# lib folders on LIBRARY_PATH (to link) and LD_LIBRARY_PATH (to run). Set
# LLM_JUDGE_DEVICE=cuda:N for another GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-}"
if [ -z "$bin" ]; then
  eval "$(scripts/cuda-toolkit.sh)"
  cargo build --release --features cuda
  bin="${CARGO_TARGET_DIR:-target}/$(rustc -vV | sed -n 's/^host: //p')/release/llm-judge"
fi
device="${LLM_JUDGE_DEVICE:-cuda:0}"
case "$device" in
  cuda*) ;;
  *) echo "gpu-check: LLM_JUDGE_DEVICE=$device is not a GPU (use cuda or cuda:N)" >&2; exit 2 ;;
esac
"$bin" fetch-models >/dev/null
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
status=0
for model in smollm2-135m-instruct gemma3-270m qwen2.5-coder-0.5b-instruct; do
  echo "== $model"
  "$bin" --device "$device" check-device --model "$model" --tokens 32 || status=1
done
exit $status
