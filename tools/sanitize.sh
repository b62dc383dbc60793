#!/usr/bin/env bash
# Run fastcnn's kernels under a memory checker.
#
#   tools/sanitize.sh [asan|valgrind] [-- PYTEST_ARGS...]
#
#   asan      (default) build with FASTCNN_SANITIZE=address (-fsanitize=address
#             -fno-omit-frame-pointer -g -O1) and run the kernel-level tests with
#             the ASan runtime preloaded into Python. A few minutes on 2 cores.
#   valgrind  build with FASTCNN_SANITIZE=valgrind (-g -O1, no instrumentation)
#             and run a short selection of tests under valgrind's Memcheck, which
#             also sees reads of uninitialised memory (ASan does not).
#
# Arguments after `--` replace the default pytest selection, e.g.
#   tools/sanitize.sh asan -- tests/test_kernels.py -k conv
#
# Works from any directory. The working tree of this checkout (tracked and
# untracked, not ignored, files: uncommitted edits included) is copied to a
# temporary directory and built in place there; this checkout and its compiled
# modules are never touched. Exit status: 0 if the tests passed and the checker
# reported nothing, non-zero otherwise. Reports are printed at the end.
#
# Environment:
#   PYTHON=python3             the interpreter (needs Cython, setuptools, pytest,
#                              hypothesis, numpy, scipy: the `test` extra)
#   SANITIZE_REF=HEAD          check this commit instead of the working tree
#   SANITIZE_KEEP=1            keep the temporary build (its path is printed;
#                              kept anyway when the checker reports an error)
#   SANITIZE_JOBS=2            parallel compiler jobs
#   FASTCNN_SANITIZE=address   what asan mode builds: address,undefined adds
#                              UBSan (it must include address)
#   FASTCNN_DEBUG_CYTHON=1     also keep Cython's bounds checks (off by default:
#                              the checker then sees the production accesses)
#   FASTCNN_NO_OPENMP=1        serial build
#   HYPOTHESIS_PROFILE=dev     as for the ordinary test run (25 examples each)
#   VALGRIND=valgrind          the valgrind executable
#   ASAN_OPTIONS, UBSAN_OPTIONS, VALGRIND_OPTS
#                              added after the defaults below (later wins); e.g.
#                              VALGRIND_OPTS=--track-origins=no halves the
#                              valgrind run but no longer says where an
#                              uninitialised value came from
#
# Notes:
# - detect_leaks=0: CPython does not free everything at exit, and a leak is
#   not what this run looks for.
# - PYTHONMALLOC=malloc in both modes, so that every Python allocation goes
#   through malloc, where the checker sees it, instead of pymalloc's arenas.
# - OpenMP stays on (GCC's libgomp gives no false positives with either tool);
#   under valgrind OMP_WAIT_POLICY=passive keeps idle threads from spinning, as
#   valgrind runs one thread at a time.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

mode=asan
case "${1:-}" in
    asan | valgrind) mode=$1; shift ;;
    -h | --help) usage; exit 0 ;;
    "" | --) ;;
    *) echo "sanitize.sh: unknown mode '$1' (asan or valgrind)" >&2; exit 2 ;;
esac
if [ "${1:-}" = "--" ]; then shift; fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# the interpreter itself, not a wrapper such as pyenv's shim (valgrind would
# check the shell script and not follow it into Python)
PYTHON=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
jobs=${SANITIZE_JOBS:-2}

work=$(mktemp -d "${TMPDIR:-/tmp}/fastcnn-sanitize-$mode.XXXXXX")
# shellcheck disable=SC2317  # called by the trap
cleanup() {
    if [ "${SANITIZE_KEEP:-0}" = 1 ]; then
        echo "sanitize.sh: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# --- copy the source --------------------------------------------------------
src="$work/src"
mkdir -p "$src"
if [ -n "${SANITIZE_REF:-}" ]; then
    # a commit, as committed
    git -C "$repo" archive --format=tar "$SANITIZE_REF" | tar -C "$src" -xf -
elif git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # tracked and untracked files as they are now, without build products
    git -C "$repo" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do if [ -e "$repo/$f" ]; then printf '%s\0' "$f"; fi; done |
        tar -C "$repo" --null -T - -cf - | tar -C "$src" -xf -
else
    tar -C "$repo" --exclude=build --exclude='*.so' --exclude='fastcnn/*.c' \
        --exclude=.git --exclude=.ci-venv --exclude=__pycache__ -cf - . | tar -C "$src" -xf -
fi
rm -f "$src"/fastcnn/*.so "$src"/fastcnn/_build_info.py

# --- build --------------------------------------------------------------------
if [ "$mode" = asan ]; then kind=${FASTCNN_SANITIZE:-address}; else kind=valgrind; fi
echo "sanitize.sh: building with FASTCNN_SANITIZE=$kind in $src" >&2
start=$SECONDS
if ! (cd "$src" && FASTCNN_SANITIZE=$kind "$PYTHON" setup.py build_ext --inplace -j "$jobs" \
        >"$work/build.log" 2>&1); then
    tail -n 40 "$work/build.log" >&2
    echo "sanitize.sh: build failed (log: $work/build.log)" >&2
    SANITIZE_KEEP=1
    exit 2
fi
echo "sanitize.sh: built in $((SECONDS - start)) s" >&2

export PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONMALLOC=malloc
export PYTHONDONTWRITEBYTECODE=1
pytest_common=(-p no:cacheprovider -q -o addopts="-ra")

# --- run ------------------------------------------------------------------------
status=0
start=$SECONDS
if [ "$mode" = asan ]; then
    libasan=$(gcc -print-file-name=libasan.so)
    if [ ! -e "$libasan" ]; then
        echo "sanitize.sh: no libasan.so from gcc ($libasan)" >&2
        exit 2
    fi
    libasan=$(readlink -f "$libasan")
    if [ $# -eq 0 ]; then
        set -- tests/test_kernels.py tests/test_layers_more.py tests/test_algorithms.py \
            tests/test_validation.py tests/test_model.py tests/test_optim.py -m "not slow"
    fi
    # halt_on_error=1 is ASan's default (this build is not recoverable); said
    # here so that it stays so. allocator_may_return_null=1: a too large
    # allocation returns NULL (NumPy's MemoryError) as with glibc.
    asan_opts="detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1"
    asan_opts+=":detect_stack_use_after_return=1"
    asan_opts+=":log_path=$work/asan:print_summary=1"
    # only read when built with FASTCNN_SANITIZE=address,undefined
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$work/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    # the build must refuse to load without the runtime preloaded: proof it is instrumented
    if (cd "$src" && "$PYTHON" -c "import fastcnn._conv" >/dev/null 2>&1); then
        echo "sanitize.sh: fastcnn._conv loads without ASan: not an ASan build?" >&2
        exit 2
    fi
    (cd "$src" && LD_PRELOAD="$libasan" ASAN_OPTIONS="$asan_opts${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        "$PYTHON" -c "import fastcnn, sys; print('fastcnn', fastcnn.__file__, fastcnn.build_info()['compile_args'], file=sys.stderr)") \
        || { echo "sanitize.sh: cannot import the ASan build" >&2; exit 2; }
    (cd "$src" && LD_PRELOAD="$libasan" ASAN_OPTIONS="$asan_opts${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        "$PYTHON" -m pytest "${pytest_common[@]}" "$@") || status=$?
    logs=("$work"/asan.* "$work"/ubsan.*)
else
    if [ $# -eq 0 ]; then
        # every conv shape of test_kernels (each tile shape, the points path,
        # 1x1 and large kernels), mean and max pooling (the 2x2 fast path and
        # the general one), dense, activations, softmax, losses, im2col/col2im,
        # Adam: every kernel entry point, both dtypes, both SIMD paths. Left
        # out: the FFT algorithm (SciPy, no fastcnn C) and the two largest
        # max-pool maps (2 minutes under valgrind, same code as the others).
        set -- \
            "tests/test_kernels.py::test_conv_matches_oracle" \
            "tests/test_kernels.py::test_mean_pool_matches_oracle" \
            "tests/test_kernels.py::test_dense_matches_oracle" \
            "tests/test_kernels.py::test_sigmoid_layer_matches_oracle" \
            "tests/test_kernels.py::test_first_layer_skips_input_gradient" \
            "tests/test_kernels.py::test_batch_size_changes_reuse_workspaces" \
            "tests/test_layers_more.py::test_max_pool" \
            "tests/test_layers_more.py::test_max_pool_2x2_fast_path_picks_the_scans_pixel" \
            "tests/test_layers_more.py::test_activation_layers" \
            "tests/test_layers_more.py::test_softmax_layer" \
            "tests/test_layers_more.py::test_cross_entropy_loss" \
            "tests/test_layers_more.py::test_conv_activation_stride_padding" \
            "tests/test_algorithms.py::test_im2col_row_blocks_and_tasks" \
            "tests/test_optim.py::test_fit_uses_the_optimizer_and_schedule" \
            "tests/test_validation.py::test_kernel_entry_points_check_shapes" \
            -k "not fft and not (fast_path and (hw2 or hw4))" -m "not slow"
    fi
    # tools/valgrind-python.supp: CPython 3.11's own uninitialised-int reads
    # and glibc string over-reads valgrind 3.19 does not know (see the file)
    valgrind_opts=(--tool=memcheck --error-exitcode=1 --leak-check=no --track-origins=yes
                   --num-callers=40 --suppressions="$repo/tools/valgrind-python.supp"
                   --log-file="$work/valgrind.%p")
    # shellcheck disable=SC2206  # VALGRIND_OPTS is a list of words
    extra=(${VALGRIND_OPTS:-})
    # (valgrind would read VALGRIND_OPTS itself too, before the defaults)
    (cd "$src" && env -u VALGRIND_OPTS OMP_WAIT_POLICY=passive \
        "${VALGRIND:-valgrind}" "${valgrind_opts[@]}" "${extra[@]}" \
        "$PYTHON" -m pytest "${pytest_common[@]}" "$@") || status=$?
    logs=("$work"/valgrind.*)
fi
elapsed=$((SECONDS - start))

# --- report ---------------------------------------------------------------------
# errors per log: ASan's reports, or the sum of Memcheck's ERROR SUMMARY (one
# log per process: forked children that exec something else log nothing)
count_errors() {
    if [ "$mode" = asan ]; then
        grep -c -e 'ERROR: AddressSanitizer' -e 'runtime error:' "$1" || true
    else
        sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$1" | awk '{s += $1} END {print s + 0}'
    fi
}
errors=0
for log in "${logs[@]}"; do
    [ -e "$log" ] || continue
    n=$(count_errors "$log")
    if [ "$n" -gt 0 ]; then
        errors=$((errors + n))
        echo "==================== $log (first 300 lines)" >&2
        head -n 300 "$log" >&2
    fi
done
echo "sanitize.sh: $mode: test run exit status $status, $errors checker error(s), ${elapsed} s" >&2
if [ "$errors" -gt 0 ]; then
    SANITIZE_KEEP=1  # keep the full logs and the build for a rerun
    if [ "$status" -eq 0 ]; then status=1; fi
fi
exit "$status"
