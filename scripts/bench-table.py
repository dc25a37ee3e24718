#!/usr/bin/env python3
"""The README's speed table from several `llm-judge bench --json` runs.

    python3 scripts/bench-table.py run1.json run2.json run3.json

Each figure is the median over the runs of each run's median; the ratio is the median of the
runs' ratios (each itself the median of its rounds' ratios, ours and llama.cpp's measured
alternately), with the lowest and highest ratio of any round of any run. A line per run gives
the machine's streaming-read figure at its start and end, so a quiet run can be told from a
noisy one; then each model's decoding bound, `tg128+busy*` over `tg128` in the same round, and
`generate`'s peak memory.
"""
import json
import statistics
import sys


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pair(ours, theirs):
    """Per-round ratios, rounds paired by position; a round llama.cpp gave no figure for
    (null) is left out."""
    return [a / b for a, b in zip(ours, theirs) if a is not None and b]


def shares(unloaded, loaded):
    """Loaded over unloaded, same round, for rounds where both were measured."""
    return [l / u for u, l in zip(unloaded, loaded) if u and l is not None]


def fmt(x, p=1):
    return "-" if x is None else f"{x:.{p}f}"


def main(paths):
    runs = [json.load(open(p)) for p in paths]
    print(f"{len(runs)} runs, {runs[0]['cpu']}, {runs[0]['threads']} threads\n")
    for i, (p, r) in enumerate(zip(paths, runs), 1):
        reads = " → ".join(f"{g:.1f}" for g in r.get("stream_read_gbps", []))
        print(f"- run {i} (`{p}`): streaming read {reads or '-'} GB/s (start → end)")
    print()
    print("| model | test | llm-judge tok/s | llama.cpp tok/s | ratio | per run | min-max over rounds |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    keys = []
    for r in runs:
        for row in r["rows"]:
            k = (row["model"], row["test"])
            if k not in keys:
                keys.append(k)
    last = None
    for model, test in keys:
        rows = [row for r in runs for row in r["rows"] if (row["model"], row["test"]) == (model, test)]
        ours = med([row["tokens_per_s"] for row in rows])
        theirs = med([row["llama_cpp_tokens_per_s"] for row in rows])
        ratios = []
        rounds = []
        for row in rows:
            rr = pair(row.get("runs", []), row.get("llama_cpp_runs", []))
            rounds += rr
            if rr:
                ratios.append(statistics.median(rr))
        per_run = ", ".join(f"{x:.2f}" for x in ratios) or "-"
        spread = f"{min(rounds):.2f}-{max(rounds):.2f}" if rounds else "-"
        name = model if model != last else ""
        last = model
        print(f"| {name} | {test} | {fmt(ours)} | {fmt(theirs)} | {fmt(med(ratios), 2)} | {per_run} | {spread} |")
    print()
    models = [m for m, _ in keys]
    for model in dict.fromkeys(models):
        bounds = [b for r in runs for b in r.get("bounds", []) if b["model"] == model]
        if bounds:
            ours = [b["tg128_fraction"] for b in bounds]
            theirs = [b["llama_cpp_tg128_fraction"] for b in bounds]
            print(
                f"- {model}: {bounds[0]['bytes_per_token'] / 1e6:.0f} MB read per token; tg128 at "
                f"{', '.join(f'{x * 100:.0f} %' for x in ours)} of the streaming-read bound "
                f"(llama.cpp {', '.join('-' if x is None else f'{x * 100:.0f} %' for x in theirs)})"
            )
        for test in ("tg128+busy", "tg128+busy-nice"):
            got, ref = [], []
            for r in runs:
                rows = {row["test"]: row for row in r["rows"] if row["model"] == model}
                if test in rows and "tg128" in rows:
                    a, l = rows["tg128"], rows[test]
                    ours = shares(a.get("runs", []), l.get("runs", []))
                    rr = shares(a.get("llama_cpp_runs", []), l.get("llama_cpp_runs", []))
                    if ours:
                        got.append(statistics.median(ours))
                        ref.append(statistics.median(rr) if rr else None)
            if got:
                print(
                    f"- {model}: {test} over tg128 in the same round, per run: "
                    f"{', '.join(f'{x:.2f}' for x in got)} (llama.cpp "
                    f"{', '.join(fmt(x, 2) for x in ref)})"
                )
        mem = [m for r in runs for m in r.get("memory", []) if m["model"] == model]
        if mem:
            peaks = [m["generate_peak_rss_bytes"] / 1e6 for m in mem]
            file = mem[0].get("file_bytes")
            print(
                f"- {model}: `generate` peak memory {', '.join(f'{p:.0f}' for p in peaks)} MB "
                f"(file {'-' if file is None else f'{file / 1e6:.0f}'} MB)"
            )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
