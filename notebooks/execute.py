#!/usr/bin/env python3
"""Executes notebooks headless with the evcxr kernel and fails on any broken cell.

evcxr reports a panic, a failed assert or a `?` error on the cell's stderr stream and goes on
with the next cell, so a clean exit of the kernel proves nothing. This script therefore reads
the executed notebook back and fails when any cell has an error output or wrote to stderr
(the library writes progress to stdout only).

    notebooks/execute.py [--small] [--inplace] [--html DIR] [NOTEBOOK ...]

--small sets LLM_JUDGE_SMALL=1, the notebooks' small-run parameter (few prompts, short
answers). Without --inplace the executed copies go to --out (default: a temporary folder).
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def problems(nb):
    """(cell number, text) for every error output and every stderr stream."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((i, f"{out.get('ename')}: {out.get('evalue')}"))
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                found.append((i, out.get("text", "").strip()[:2000]))
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("notebooks", nargs="*")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--inplace", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--html", default=None)
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args()
    here = pathlib.Path(__file__).resolve().parent
    paths = [pathlib.Path(p).resolve() for p in args.notebooks] or sorted(here.glob("[0-9]*.ipynb"))
    if args.small:
        os.environ["LLM_JUDGE_SMALL"] = "1"
    # evcxr must build in its own folder, not in a shared cargo target folder.
    os.environ.pop("CARGO_TARGET_DIR", None)
    # evcxr 0.22 loads each cell's library from target/<triple>/debug, but cargo computes
    # the library's rpath to libstd from target/<triple>/debug/deps; the path is one level
    # off, and dlopen fails unless the build folder happens to lie under no shared parent
    # with the toolchain. Point the loader at the toolchain's libstd directly.
    sysroot = subprocess.run(
        ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True
    ).stdout.strip()
    host = subprocess.run(
        ["rustc", "-vV"], capture_output=True, text=True, check=True
    ).stdout.split("host: ")[1].split()[0]
    libs = [f"{sysroot}/lib/rustlib/{host}/lib", f"{sysroot}/lib"]
    old = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = ":".join(libs + ([old] if old else []))
    out_dir = pathlib.Path(args.out or tempfile.mkdtemp(prefix="llm-judge-nb-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb,
            kernel_name="rust",
            timeout=args.timeout,
            resources={"metadata": {"path": str(path.parent)}},
        )
        start = time.time()
        try:
            client.execute()
        except CellExecutionError as e:
            print(f"{path.name}: kernel error: {str(e)[:2000]}", file=sys.stderr)
            failed = True
        target = path if args.inplace else out_dir / path.name
        nbformat.write(nb, target)
        bad = problems(nb)
        for cell, text in bad:
            print(f"{path.name}: cell {cell}: {text}", file=sys.stderr)
        failed |= bool(bad)
        status = "FAILED" if bad else "ok"
        print(f"{path.name}: {status} in {time.time() - start:.0f} s -> {target}", flush=True)
        if args.html:
            from nbconvert import HTMLExporter

            html, _ = HTMLExporter().from_notebook_node(nb)
            dest = pathlib.Path(args.html) / (path.stem + ".html")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(html, encoding="utf-8")
            print(f"{path.name}: html -> {dest}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
