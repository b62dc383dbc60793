"""Has fastcnn fallen behind PyTorch since the baseline run?

    python benchmarks/compare.py [BASELINE.json] [NEWEST.json] [--threshold 10]

Compares two runs saved in benchmarks/runs (by default the baseline, the
oldest run whose file name contains "baseline", else the oldest run; and
the newest run). For every group and fastcnn variant it prints fastcnn's
speed ratio to PyTorch in each run (PyTorch's median / fastcnn's: above 1,
fastcnn is faster) and the change. A ratio of two times from the same run
does not depend on the machine, so runs from different machines compare.

Exits with 1 when a ratio fell by more than the threshold (10%) and names
each such group; 0 otherwise. Groups that only one run has are listed as
new or missing, and are not failures (a CPU with another SIMD path has
other fastcnn variants).
"""

import argparse
import math
import os
import sys

import saved


def default_runs(directory):
    runs = saved.run_files(directory)
    if not runs:
        sys.exit(f"no saved runs in {directory}: see benchmarks/README.md, 'Tracking'")
    marked = [p for p in runs if "baseline" in os.path.basename(p)]
    return (marked or runs)[0], runs[-1]


def compare(baseline, newest, threshold=0.10):
    """(rows, fell, new, missing): rows (name, baseline ratio, newest ratio,
    change as a fraction) for the groups both runs have; `fell` the names
    whose ratio fell by more than `threshold`; new and missing, names only
    the newest or only the baseline run has."""
    old, new = saved.speed_ratios(baseline), saved.speed_ratios(newest)
    rows, fell = [], []
    for name in sorted(old.keys() & new.keys()):
        a, b = old[name], new[name]
        change = b / a - 1 if a and math.isfinite(a) else math.nan
        rows.append((name, a, b, change))
        if b < a * (1 - threshold):
            fell.append(name)
    return rows, fell, sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())


def fmt_ratio(r):
    return f"{r:.2f}x" if r and math.isfinite(r) else "n/a"


def fmt_change(c):
    return f"{c:+.1%}" if math.isfinite(c) else "n/a"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", nargs="?", help="a saved run (default: see above)")
    parser.add_argument("newest", nargs="?", help="a saved run (default: the newest)")
    parser.add_argument("--threshold", type=float, default=10.0,
                        help="percent a ratio may fall before it counts (default 10)")
    parser.add_argument("--runs", default=saved.RUNS, help="where the saved runs are")
    args = parser.parse_args(argv)
    base_path, new_path = args.baseline, args.newest
    if not (base_path and new_path):
        default_base, default_new = default_runs(args.runs)
        base_path, new_path = base_path or default_base, new_path or default_new
    baseline, newest = saved.load(base_path), saved.load(new_path)
    rows, fell, new, missing = compare(baseline, newest, args.threshold / 100)

    print(f"baseline: {saved.describe(base_path, baseline)}")
    print(f"newest:   {saved.describe(new_path, newest)}")
    if os.path.realpath(base_path) == os.path.realpath(new_path):
        print("(one run only: it is compared with itself)")
    print("fastcnn's speed ratio to PyTorch (PyTorch's time / fastcnn's; above 1: fastcnn faster)")
    print()
    print("| group | baseline | newest | change |")
    print("|---|---|---|---|")
    for name, a, b, change in rows:
        mark = " **fell**" if name in fell else ""
        print(f"| {name} | {fmt_ratio(a)} | {fmt_ratio(b)} | {fmt_change(change)}{mark} |")
    for title, names in (("new (only in the newest run)", new),
                         ("missing (only in the baseline)", missing)):
        if names:
            print(f"\n{title}:")
            print("\n".join(f"  {n}" for n in names))
    if fell:
        print(f"\nfell by more than {args.threshold:g}% against PyTorch:")
        print("\n".join(f"  {n}" for n in fell))
        return 1
    print(f"\nno ratio fell by more than {args.threshold:g}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
