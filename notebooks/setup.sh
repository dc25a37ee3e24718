#!/usr/bin/env bash
# Installs what the notebooks need (the evcxr Rust kernel and nbconvert) and prepares a
# persistent evcxr build folder, so that only the first run compiles the dependencies.
# Prints the EVCXR_TMPDIR line to export. Safe to run again: nothing installed is rebuilt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=0.22.0
if ! cargo install --list | grep -q "^evcxr_jupyter v$version:"; then
  cargo install evcxr_jupyter --locked --version "$version"
fi
evcxr_jupyter --install >/dev/null
python3 -c 'import nbconvert, nbclient' 2>/dev/null || python3 -m pip install --quiet nbconvert
cache=${LLM_JUDGE_EVCXR_DIR:-$HOME/.cache/llm-judge/evcxr}
mkdir -p "$cache/.cargo" "$cache/build"
cp "$here/evcxr-cargo-config.toml" "$cache/.cargo/config.toml"
echo "export EVCXR_TMPDIR=$cache/build"
