#!/usr/bin/env python3
"""Executes notebooks headless with the evcxr kernel and fails on any broken cell.

evcxr reports a panic, a failed assert or a `?` error on the cell's stderr stream and goes on
with the next cell, so a clean exit of the kernel proves nothing. This script therefore reads
the executed notebook back and fails when any cell has an error output or wrote to stderr
(the library writes progress to stdout only), or when an output shows a Rust Debug struct
where a table or chart belongs.

    notebooks/execute.py [--small] [--inplace] [--html DIR] [--shared-build] [NOTEBOOK ...]

--small sets LLM_JUDGE_SMALL=1, the notebooks' small-run parameter (few prompts, short
answers). Without --inplace the executed copies go to --out (default: a temporary folder).
--html writes a self-contained HTML export of each notebook (images inline; the exporter's
external scripts, which these notebooks do not need, are removed).

The kernel's environment comes from `notebooks/setup.sh --env`, so that evcxr reuses the
dependencies `cargo build` compiled (see setup.sh). Each notebook's line gives the time of its
first code cell (the `:dep` cell: compiling what the build did not share), of its first output
as a reader sees it appear (a cell's progress lines show as they are printed), and of the end
of the cell that printed it. --shared-build fails when the kernel compiled any dependency again (a new or rewritten
library in the shared target folder, other than the cell crate and llm-judge itself), which
is what happens when `cargo build` and evcxr name the target differently.
"""
import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

# A Debug struct in an output (`PositionBias { listwise: [] ...`): a value without a display.
# Also pretty-printed (`{:#?}`) structs, tuple structs (`Figure(`) and options (`Some(`).
DEBUG_STRUCT = re.compile(
    r"\b[A-Z][A-Za-z]+ \{(?: |\n\s+)[a-z_]+: |\bSome\(|\b[A-Z][A-Za-z]+\((?:[A-Z][A-Za-z]+ )?\{"
)


def problems(nb):
    """(cell number, text) for every error output, stderr stream and Debug struct output."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "error":
                found.append((i, f"{out.get('ename')}: {out.get('evalue')}"))
            elif kind == "stream" and out.get("name") == "stderr":
                found.append((i, out.get("text", "").strip()[:2000]))
            elif kind in ("execute_result", "display_data"):
                text = out.get("data", {}).get("text/plain", "")
                if isinstance(text, list):
                    text = "".join(text)
                if DEBUG_STRUCT.search(text):
                    found.append((i, f"Debug output instead of a display: {text[:200]}"))
    return found


def kernel_env(here):
    """The exports of `setup.sh --env`, applied to this process (the kernel inherits them)."""
    out = subprocess.run(
        ["bash", str(here / "setup.sh"), "--env"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        m = re.match(r"export (\w+)='(.*)'(.*)$", line)
        if not m:
            continue
        key, value, rest = m.groups()
        if rest.startswith("${"):
            old = os.environ.get(key)
            value = value + (":" + old if old else "")
        os.environ[key] = value


def deps_folder():
    """The folder where the kernel's cargo puts compiled dependencies (the shared build)."""
    host = re.search(
        r"^host: (\S+)", subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout, re.M
    ).group(1)
    target = pathlib.Path(os.environ["EVCXR_TMPDIR"]) / "target"
    return target.resolve() / host / "debug" / "deps"


def libraries(deps):
    """{file name: (size, mtime)} of the compiled libraries in the shared target folder."""
    if not deps.is_dir():
        return {}
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in deps.iterdir()
        if p.name.startswith("lib") and p.suffix in (".rlib", ".rmeta", ".so")
    }


def compiled_again(before, after):
    """(dependencies, llm-judge): the library files the kernel wrote that were not there, or not
    the same, before it ran. The cell crate (`ctx`) is compiled by design and left out."""
    changed = sorted(name for name, stamp in after.items() if before.get(name) != stamp)
    crate = lambda name: re.sub(r"^lib|(-[0-9a-f]+)?\.\w+$", "", name)
    deps = sorted({crate(n) for n in changed} - {"ctx", "llm_judge"})
    return deps, any(crate(n) == "llm_judge" for n in changed)


def cell_seconds(cell):
    """Seconds between a code cell's start and its reply (nbclient's timing metadata)."""
    from datetime import datetime

    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


class TimedClient(NotebookClient):
    """A NotebookClient that notes when the first output of any cell arrives (a progress line
    a cell prints shows as it is printed, long before the cell ends)."""

    first_output_at = None

    def output(self, outs, msg, display_id, cell_index):
        if self.first_output_at is None:
            self.first_output_at = time.time()
        return super().output(outs, msg, display_id, cell_index)


def first_times(nb, started, first_output_at):
    """(seconds of the first code cell, seconds from the kernel's start to the first output
    shown, seconds to the end of the first cell with an output)."""
    from datetime import datetime

    code = [c for c in nb.cells if c.cell_type == "code"]
    first = cell_seconds(code[0]) if code else None
    first_cell_done = None
    for c in code:
        reply = c.get("metadata", {}).get("execution", {}).get("shell.execute_reply")
        if c.get("outputs") and reply:
            end = datetime.fromisoformat(reply.replace("Z", "+00:00")).timestamp()
            first_cell_done = end - started
            break
    shown = None if first_output_at is None else first_output_at - started
    return first, shown, first_cell_done


def self_contained(html):
    """The HTML without references to other sites (the exporter's CDN scripts and styles)."""
    html = re.sub(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", "", html)
    html = re.sub(r"<link[^>]*\bhref=\"https?://[^\"]*\"[^>]*/?>", "", html)
    return html


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("notebooks", nargs="*")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--inplace", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--html", default=None)
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument(
        "--shared-build",
        action="store_true",
        help="fail when the kernel compiles a dependency that `cargo build` compiled",
    )
    args = ap.parse_args()
    here = pathlib.Path(__file__).resolve().parent
    paths = [pathlib.Path(p).resolve() for p in args.notebooks] or sorted(here.glob("[0-9]*.ipynb"))
    if args.small:
        os.environ["LLM_JUDGE_SMALL"] = "1"
    kernel_env(here)
    out_dir = pathlib.Path(args.out or tempfile.mkdtemp(prefix="llm-judge-nb-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    deps = deps_folder()
    for path in paths:
        before = libraries(deps)
        nb = nbformat.read(path, as_version=4)
        client = TimedClient(
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
        again, own = compiled_again(before, libraries(deps))
        first, shown, first_done = first_times(nb, start, client.first_output_at)
        fmt = lambda t: "-" if t is None else f"{t:.0f} s"
        print(
            f"{path.name}: first cell (:dep) {fmt(first)}, first output shown {fmt(shown)} after"
            f" the kernel started (its cell done at {fmt(first_done)}); dependencies compiled"
            f" again: {len(again)}"
            f"{' (' + ', '.join(again[:12]) + ')' if again else ''}; llm-judge"
            f" {'compiled again' if own else 'reused'}",
            flush=True,
        )
        if again and args.shared_build:
            print(
                f"{path.name}: the kernel compiled {len(again)} dependencies again: the build is"
                " not shared (does `cargo build` still build for the host by name? see"
                " .cargo/config.toml and notebooks/setup.sh)",
                file=sys.stderr,
            )
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
            dest.write_text(self_contained(html), encoding="utf-8")
            print(f"{path.name}: html -> {dest}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
