#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER for the notebooks (see setup.sh): compiles the evcxr cell crate with
# `-C prefer-dynamic`, so that all cells share one libstd, while the dependencies keep the
# repository's own rustflags and stay shared with `cargo build`.
#
# A cell built before any `:dep` has no dependency, and cargo prunes the build folder's
# Cargo.lock to the cell crate alone; the first `:dep llm-judge` would then resolve every
# dependency anew, at the newest versions, and compile them all again. So when the lock lists
# no llm-judge, the repository's lock ($LLM_JUDGE_LOCK) is put back. The kernel's prelude
# (setup.sh) does the same at start, where the start-up cell may be cached and this wrapper
# not run.
lock="${EVCXR_TMPDIR:-.}/Cargo.lock"
if [ -n "${LLM_JUDGE_LOCK:-}" ] && [ -f "$LLM_JUDGE_LOCK" ] && [ -f "$lock" ] &&
  ! grep -q '^name = "llm-judge"$' "$lock"; then
  cp "$LLM_JUDGE_LOCK" "$lock.tmp" && mv "$lock.tmp" "$lock"
fi
exec "$@" -C prefer-dynamic
