#!/usr/bin/env bash
# Prepares the notebooks: installs the evcxr Rust kernel (pinned) and nbconvert, and a
# persistent evcxr build folder that reuses the dependencies `cargo build` compiled.
#
#   notebooks/setup.sh          install what is missing, point the Rust kernel at the shared
#                               build, then print the `export` lines
#   notebooks/setup.sh --env    only prepare the build folder and print the `export` lines
#
# The same settings are written into the Rust kernel's spec (`kernel.json`, its `env`), so a
# Jupyter started from any shell uses them: nothing needs exporting. Safe to run again:
# nothing installed is rebuilt. Progress goes to stderr, the exports to stdout (for a shell
# that runs evcxr itself, or `execute.py`).
#
# How the build is shared: evcxr builds each cell as a crate in $EVCXR_TMPDIR with the `dev`
# profile, `--target <host>` and RUSTFLAGS=-Cprefer-dynamic. The repository builds for the
# host under its own name too (`build.target = "host-tuple"` in .cargo/config.toml), and these
# settings make evcxr's dependencies byte-for-byte the same compilation units as that build
# (same target folder through a symlink, same Cargo.lock, same rustflags, the profile
# mirrored in evcxr-cargo-config.toml), so cargo reports them `Fresh`. Only the cell crate
# itself gets `-Cprefer-dynamic`, through RUSTC_WORKSPACE_WRAPPER, so that every cell shares
# one libstd.
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
# The same resolution of every dependency as this repository's own build (copied each time:
# a lock left from an older checkout would resolve other versions and rebuild them).
cp "$repo/Cargo.lock" "$build/Cargo.lock"
# evcxr compiles an empty cell (`42`) when the kernel starts, and that build prunes the lock to
# the cell crate alone; the first `:dep` then resolves every dependency anew, at the newest
# versions on crates.io, and compiles them all again (harmless on the day the lock was made,
# a full rebuild a few days later). The kernel's prelude, run right after that start and
# before any cell, puts the repository's lock back, and so does cell-rustc.sh after any cell
# built before the first `:dep`. The prelude lives in the kernel's own evcxr config folder
# (EVCXR_CONFIG_DIR), so no user-wide evcxr setting is touched.
config="$cache/config"
mkdir -p "$config"
rust_str() { printf 'r#"%s"#' "$1"; }
cat >"$config/prelude.rs" <<EOF
// Written by llm-judge's notebooks/setup.sh: restores the dependency lock that evcxr's start
// pruned, so that \`:dep llm-judge\` reuses what \`cargo build\` compiled.
let _ = std::fs::copy($(rust_str "$repo/Cargo.lock"), $(rust_str "$build/Cargo.lock"));
EOF
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
libs="$sysroot/lib/rustlib/$host/lib:$sysroot/lib"
if [ "${1:-}" != "--env" ]; then
  # The kernel's own environment, so that Jupyter needs no exports from the shell.
  spec=$(jupyter kernelspec list 2>/dev/null | awk '$1 == "rust" {print $2}')
  spec=${spec:-$HOME/.local/share/jupyter/kernels/rust}
  EVCXR_TMPDIR="$build" CONFIG="$config" LOCK="$repo/Cargo.lock" FLAGS="$flags" WRAPPER="$here/cell-rustc.sh" LIBS="$libs" \
    python3 - "$spec/kernel.json" <<'PY'
import json, os, sys
path = sys.argv[1]
with open(path) as f:
    spec = json.load(f)
spec["env"] = {
    "EVCXR_TMPDIR": os.environ["EVCXR_TMPDIR"],
    "EVCXR_CONFIG_DIR": os.environ["CONFIG"],
    "LLM_JUDGE_LOCK": os.environ["LOCK"],
    "CARGO_ENCODED_RUSTFLAGS": os.environ["FLAGS"],
    "RUSTC_WORKSPACE_WRAPPER": os.environ["WRAPPER"],
    "LD_LIBRARY_PATH": os.environ["LIBS"],
}
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(spec, f, indent=2)
os.replace(tmp, path)
PY
  echo "notebooks/setup.sh: the Rust kernel ($spec) builds in $build" >&2
fi
echo "export EVCXR_TMPDIR='$build'"
echo "export EVCXR_CONFIG_DIR='$config'"
echo "export LLM_JUDGE_LOCK='$repo/Cargo.lock'"
echo "export CARGO_ENCODED_RUSTFLAGS='$flags'"
echo "export RUSTC_WORKSPACE_WRAPPER='$here/cell-rustc.sh'"
echo "export LD_LIBRARY_PATH='$libs'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
