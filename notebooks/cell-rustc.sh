#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER for the notebooks (see setup.sh): compiles the evcxr cell crate with
# `-C prefer-dynamic`, so that all cells share one libstd, while the dependencies keep the
# repository's own rustflags and stay shared with `cargo build`.
exec "$@" -C prefer-dynamic
