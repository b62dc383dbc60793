"""compare.py on two small made-up runs: which ratios count as a fall.
A plain test (no benchmark, no timing): pytest benchmarks/test_compare.py"""

import json

import compare


def row(group, impl, median, **info):
    return {"group": group, "name": f"test[{impl}]", "stats": {"median": median},
            "extra_info": {"impl": impl, **info}}


def write_run(path, when, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"datetime": when, "machine_info": {}, "benchmarks": rows}))
    return path


def runs(tmp_path):
    # fastcnn's ratio to PyTorch, baseline -> newest:
    #   step   4.0 -> 3.0    fell 25%
    #   conv   direct 2.0 -> 1.9 (5%, within the noise); im2col 1.0 -> 0.5 (fell 50%)
    #   fast   1.0 -> 2.0    rose
    #   gone   only in the baseline; avx512 only in the newest
    base = [row("step", "torch", 4.0), row("step", "fastcnn", 1.0, simd="avx2+fma"),
            row("conv", "torch", 2.0), row("conv", "fastcnn", 1.0, algorithm="direct"),
            row("conv", "fastcnn", 2.0, algorithm="im2col"),
            row("fast", "torch", 1.0), row("fast", "fastcnn", 1.0),
            row("gone", "torch", 1.0), row("gone", "fastcnn", 1.0)]
    newest = [row("step", "torch", 3.0), row("step", "fastcnn", 1.0, simd="avx2+fma"),
              row("step", "fastcnn", 0.5, simd="avx512"),
              row("conv", "torch", 1.9), row("conv", "fastcnn", 1.0, algorithm="direct"),
              row("conv", "fastcnn", 3.8, algorithm="im2col"),
              row("fast", "torch", 2.0), row("fast", "fastcnn", 1.0),
              row("numpy-only", "numpy", 1.0), row("numpy-only", "fastcnn", 1.0)]
    old = write_run(tmp_path / "Linux" / "0001_baseline.json", "2026-12-01T10:00:00", base)
    new = write_run(tmp_path / "Linux" / "0003_later.json", "2026-12-07T10:00:00", newest)
    write_run(tmp_path / "Linux" / "0002_between.json", "2026-12-03T10:00:00", newest)
    return old, new


def test_a_fall_of_more_than_ten_percent_is_named_and_fails(tmp_path, capsys):
    old, new = runs(tmp_path)
    assert compare.main([str(old), str(new)]) == 1
    out = capsys.readouterr().out
    failures = out.split("fell by more than 10% against PyTorch:")[1].split()
    assert failures == ["conv", "[im2col]", "step", "[avx2+fma]"]
    assert "| fast | 1.00x | 2.00x | +100.0% |" in out
    assert "| conv [direct] | 2.00x | 1.90x | -5.0% |" in out


def test_groups_in_one_run_only_are_listed_not_failures(tmp_path):
    old, new = runs(tmp_path)
    rows, fell, added, missing = compare.compare(json.loads(old.read_text()),
                                                 json.loads(new.read_text()))
    assert added == ["step [avx512]"] and missing == ["gone"]
    assert sorted(fell) == ["conv [im2col]", "step [avx2+fma]"]
    # no PyTorch row, no ratio
    assert not any(name.startswith("numpy-only") for name, *_ in rows)


def test_no_fall_exits_zero(tmp_path, capsys):
    old, _ = runs(tmp_path)
    assert compare.main([str(old), str(old)]) == 0
    assert "no ratio fell" in capsys.readouterr().out


def test_defaults_are_the_marked_baseline_and_the_newest_run(tmp_path, capsys):
    old, new = runs(tmp_path)
    assert compare.main(["--runs", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "0001_baseline.json" in out.splitlines()[0] and "0003_later.json" in out.splitlines()[1]
    # no run marked: the oldest is the baseline
    old.rename(old.with_name("0001_first.json"))
    assert compare.default_runs(str(tmp_path)) == (str(old.with_name("0001_first.json")), str(new))


def test_time_to_accuracy_compares_the_seconds_to_the_target(tmp_path):
    def tta(impl, median, seconds):
        return row("tta", impl, median, seconds_to_target=seconds)

    # medians say 2x in both; the seconds to the target say 2x, then "never reached"
    old = {"benchmarks": [tta("torch", 100.0, 40.0), tta("fastcnn", 50.0, 20.0)]}
    new = {"benchmarks": [tta("torch", 100.0, 40.0), tta("fastcnn", 50.0, None)]}
    rows, fell, _, _ = compare.compare(old, new)
    assert rows[0][:3] == ("tta", 2.0, 0.0) and fell == ["tta"]
