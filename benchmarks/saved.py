"""Saved pytest-benchmark runs (the JSON files of --benchmark-save or
--benchmark-autosave): finding them, and reading fastcnn's speed relative
to PyTorch out of them. report.py and compare.py share these.

In a group, the rows are implementations ("impl" in extra_info). fastcnn
may have several, one per SIMD path and convolution algorithm; each is a
`variant` of its own ("direct, avx2+fma"), compared with the group's one
PyTorch row.
"""

import glob
import json
import math
import os

RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")


def load(path):
    with open(path) as f:
        return json.load(f)


def run_files(directory=RUNS):
    """The saved runs under `directory` (any depth: pytest-benchmark puts
    them in a folder per machine type), oldest first by the time each run
    says it started (file times change with every checkout)."""
    paths = glob.glob(os.path.join(directory, "**", "*.json"), recursive=True)
    return sorted(paths, key=lambda p: (load(p).get("datetime", ""), os.path.basename(p)))


def variant(bench):
    """What tells one fastcnn row of a group from another: its convolution
    algorithm and SIMD path, where the benchmark recorded them ("" for none)."""
    info = bench.get("extra_info", {})
    return ", ".join(str(info[k]) for k in ("algorithm", "simd") if info.get(k))


def seconds(bench):
    """The time a row is compared by: the median, or, for a benchmark that
    records one (time to accuracy), the seconds it took to reach its target;
    infinite when it did not reach it."""
    info = bench.get("extra_info", {})
    if "seconds_to_target" in info:
        s = info["seconds_to_target"]
        return math.inf if s is None else s
    return bench["stats"]["median"]


def label(group, name):
    return f"{group} [{name}]" if name else group


def by_group(run):
    """{group: {"fastcnn": {variant: row}, "torch": row, "numpy": row}}; of
    several rows of one implementation and variant, the fastest."""
    groups = {}
    for b in run["benchmarks"]:
        impl = b.get("extra_info", {}).get("impl")
        rows = groups.setdefault(b["group"], {})
        if impl == "fastcnn":
            slot, key = rows.setdefault("fastcnn", {}), variant(b)
        else:
            slot, key = rows, impl
        if key not in slot or seconds(b) < seconds(slot[key]):
            slot[key] = b
    return groups


def speed_ratios(run):
    """{"group [variant]": PyTorch's time / fastcnn's} for every fastcnn row
    of every group that has a PyTorch row: above 1, fastcnn is faster. A
    ratio of medians from one run on one machine, so runs on different
    machines compare."""
    ratios = {}
    for group, rows in by_group(run).items():
        torch = rows.get("torch")
        if torch is None:
            continue
        for name, row in rows.get("fastcnn", {}).items():
            t, f = seconds(torch), seconds(row)
            ratios[label(group, name)] = math.nan if math.isinf(t) and math.isinf(f) else t / f
    return ratios


def describe(path, run):
    """One line about a run: file, date, CPU, fastcnn's SIMD path, threads."""
    machine = run.get("machine_info", {})
    fc = machine.get("fastcnn", {})
    return (f"{os.path.relpath(path)} ({run.get('datetime', '?')[:19]}, "
            f"{machine.get('cpu_model', '?')}, fastcnn {fc.get('simd', '?')}, "
            f"{fc.get('threads', '?')} threads, PyTorch {machine.get('torch', '?')})")
