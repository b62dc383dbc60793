"""Turn a saved pytest-benchmark run into the Markdown table of README.md.

    python benchmarks/report.py [.benchmarks/.../NNNN_*.json]   (default: the newest)

One row per group and fastcnn variant (SIMD path, convolution algorithm,
where the group has several): the median time of fastcnn, PyTorch and
NumPy, and how many times faster fastcnn is than each (the ratio of the
medians, from the same run on the same machine), plus fastcnn's GFLOP/s
where the group has arithmetic to speak of.
"""

import glob
import os
import sys

import saved


def newest_run():
    runs = glob.glob(os.path.join(".benchmarks", "*", "*.json"))
    if not runs:
        sys.exit("no saved runs: pytest benchmarks/ --benchmark-only --benchmark-autosave")
    return max(runs, key=os.path.getmtime)


def fmt_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table(path):
    run = saved.load(path)
    groups = saved.by_group(run)
    machine = run["machine_info"]
    fc = machine.get("fastcnn", {})
    lines = [
        f"Run `{os.path.basename(path)}`, {run['datetime'][:19]}: {machine.get('cpu_model')}, "
        f"{fc.get('threads')} threads for every implementation, fastcnn {fc.get('version')} "
        f"({fc.get('simd')}, OpenMP {'on' if fc.get('openmp') else 'off'}), "
        f"PyTorch {machine.get('torch')}, NumPy {machine.get('numpy')}. Medians; "
        f"(Nx) = fastcnn is N times faster.",
        "",
        "| group | fastcnn | GFLOP/s | PyTorch | NumPy |",
        "|---|---|---|---|---|",
    ]
    for group in sorted(groups, key=_order):
        row = groups[group]
        for name, base in sorted(row.get("fastcnn", {}).items()):
            t0 = base["stats"]["median"]
            flops = base["extra_info"].get("flops", 0)
            cells = [fmt_time(t0), f"{flops / t0 / 1e9:.1f}" if flops else ""]
            for impl in ("torch", "numpy"):
                b = row.get(impl)
                cells.append(f"{fmt_time(b['stats']['median'])} ({b['stats']['median'] / t0:.1f}x)"
                             if b else "")
            lines.append(f"| {saved.label(group, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _order(group):
    kinds = ["time_to_accuracy", "epoch", "inference", "step", "conv_fwd", "conv_wgrad",
             "conv_wgrad_dgrad", "pool", "upsample", "conv3x3_fwd", "conv3x3_bwd", "dense_fwd",
             "dense_bwd"]
    parts = group.split("-")
    kind = parts[0]
    batch = next((int(p[1:]) for p in parts if p.startswith("N") and p[1:].isdigit()), 0)
    return (kinds.index(kind) if kind in kinds else 99, parts[-1], parts[1] if len(parts) > 3 else "",
            batch)


if __name__ == "__main__":
    print(table(sys.argv[1] if len(sys.argv) > 1 else newest_run()))
