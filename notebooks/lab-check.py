#!/usr/bin/env python3
"""Opens an executed notebook in JupyterLab, as a user would, and checks what a browser shows.

    notebooks/lab-check.py NOTEBOOK.ipynb [--png FILE] [--expect TEXT ...] [--min-outputs N]

Starts `jupyter lab` on a free loopback port with the notebook's folder as its root (no
token, no browser), loads the notebook's page in headless Chromium, and reads the page as
rendered (the DOM after the app has run). It fails unless the page shows at least
--min-outputs cell outputs and every --expect text; --png saves a screenshot of the same page.
Needs `pip install jupyterlab` and Debian's `chromium`.
"""
import argparse
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("lab-check: no chromium on PATH (apt-get install chromium)")


def browse(url, extra, budget_ms):
    profile = tempfile.mkdtemp(prefix="lab-check-profile-")
    try:
        return subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--virtual-time-budget={budget_ms}", *extra, url],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("notebook")
    ap.add_argument("--png")
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--min-outputs", type=int, default=1)
    ap.add_argument("--budget-ms", type=int, default=20000)
    args = ap.parse_args()
    nb = pathlib.Path(args.notebook).resolve()
    if not nb.is_file():
        sys.exit(f"lab-check: {nb}: no such notebook")
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="lab-check-", suffix=".log", delete=False)
    # Settings for this check only: every cell in the page (no windowing, so cells off screen
    # are in the DOM too) and no news prompt over the notebook.
    settings = pathlib.Path(tempfile.mkdtemp(prefix="lab-check-settings-"))
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none"}'
    )
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false"}'
    )
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={nb.parent}",
         f"--LabApp.user_settings_dir={settings}",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            sys.exit(f"lab-check: jupyter lab did not start (log: {log.name})")
        url = f"{base}/lab/tree/{nb.name}"
        dom = browse(url, ["--dump-dom", "--window-size=1400,2200"], args.budget_ms).stdout
        outputs = dom.count("jp-OutputArea-output")
        problems = []
        if outputs < args.min_outputs:
            problems.append(f"{outputs} cell outputs shown, at least {args.min_outputs} expected")
        problems += [f"not shown: {t!r}" for t in args.expect if t not in dom]
        if args.png:
            browse(url, [f"--screenshot={os.path.abspath(args.png)}", "--window-size=1400,2200"],
                   args.budget_ms)
        print(f"lab-check: {nb.name} in JupyterLab: {outputs} cell outputs shown"
              + (f", screenshot {args.png}" if args.png else ""))
        for p in problems:
            print(f"lab-check: {nb.name}: {p}", file=sys.stderr)
        sys.exit(1 if problems else 0)
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
        log.close()
        shutil.rmtree(settings, ignore_errors=True)


if __name__ == "__main__":
    main()
