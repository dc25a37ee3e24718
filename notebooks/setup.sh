#!/usr/bin/env bash
# Prepares the notebooks: installs the evcxr Rust kernel (pinned) and nbconvert, and a
# persistent evcxr build folder that reuses the dependencies `cargo build` compiled.
#
#   notebooks/setup.sh          install what is missing, then print the `export` lines
#   notebooks/setup.sh --env    only prepare the build folder and print the `export` lines
#
# Use it as `eval "$(notebooks/setup.sh)"` in the shell that starts Jupyter. Safe to run again:
# nothing installed is rebuilt. Progress goes to stderr, the exports to stdout.
#
# How the build is shared: evcxr builds each cell as a crate in $EVCXR_TMPDIR with the `dev`
# profile, `--target <host>` and RUSTFLAGS=-Cprefer-dynamic. The exports make its
# dependencies byte-for-byte the same compilation units as `cargo build --target <host>` of
# this repository (same target folder through a symlink, same Cargo.lock, same rustflags,
# the profile mirrored in evcxr-cargo-config.toml), so cargo reports them `Fresh`. Only the
# cell crate itself gets `-Cprefer-dynamic`, through RUSTC_WORKSPACE_WRAPPER, so that every
# cell shares one libstd.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
version=0.22.0

if [ "${1:-}" != "--env" ]; then
  if ! cargo install --list | grep -q "^evcxr_jupyter v$version:"; then
    # evcxr only drives cargo, so it needs no optimisation: this halves its compile time.
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
      CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_DEBUG=false \
      cargo install evcxr_jupyter --locked --version "$version" >&2
  fi
  evcxr_jupyter --install >/dev/null
  python3 -c 'import nbconvert, nbclient' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check nbconvert >&2
fi

cache=${LLM_JUDGE_EVCXR_DIR:-$HOME/.cache/llm-judge/evcxr}
build="$cache/build"
mkdir -p "$cache/.cargo" "$build"
cp "$here/evcxr-cargo-config.toml" "$cache/.cargo/config.toml"
# The same resolution of every dependency as this repository's own build.
[ -f "$build/Cargo.lock" ] || cp "$repo/Cargo.lock" "$build/Cargo.lock"
# The same target folder.
target=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$target"
if [ "$(readlink "$build/target" 2>/dev/null)" != "$target" ]; then
  rm -rf "$build/target"
  ln -s "$target" "$build/target"
fi

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
# The repository's rustflags for this host (.cargo/config.toml), as cargo encodes them.
flags=""
case "$host" in
  x86_64-*) flags=$(printf -- '-C\037target-cpu=x86-64-v3') ;;
esac
echo "export EVCXR_TMPDIR='$build'"
echo "export CARGO_ENCODED_RUSTFLAGS='$flags'"
echo "export RUSTC_WORKSPACE_WRAPPER='$here/cell-rustc.sh'"
echo "export LD_LIBRARY_PATH='$sysroot/lib/rustlib/$host/lib:$sysroot/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
