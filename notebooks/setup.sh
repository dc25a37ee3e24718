#!/usr/bin/env bash
# Installs what the notebooks need (the evcxr Rust kernel and nbconvert) and prepares a
# persistent evcxr build folder, so that only the first run compiles the dependencies.
# Prints the `export` lines for the shell that starts Jupyter (EVCXR_TMPDIR, and the
# toolchain's library folder, which evcxr 0.22's cells need to load). Safe to run again:
# nothing installed is rebuilt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=0.22.0
if ! cargo install --list | grep -q "^evcxr_jupyter v$version:"; then
  cargo install evcxr_jupyter --locked --version "$version" >&2
fi
evcxr_jupyter --install >/dev/null
python3 -c 'import nbconvert, nbclient' 2>/dev/null || python3 -m pip install --quiet nbconvert >&2
cache=${LLM_JUDGE_EVCXR_DIR:-$HOME/.cache/llm-judge/evcxr}
mkdir -p "$cache/.cargo" "$cache/build"
cp "$here/evcxr-cargo-config.toml" "$cache/.cargo/config.toml"
sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
echo "export EVCXR_TMPDIR=$cache/build"
echo "export LD_LIBRARY_PATH=$sysroot/lib/rustlib/$host/lib:$sysroot/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
