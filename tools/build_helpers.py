"""Build-time helpers for setup.py: compiler flags and OpenMP detection.

OpenMP is detected the way astropy's extension-helpers and scikit-learn do it:
compile, link and (unless cross-compiling) run a tiny program with the
candidate flags. If that fails, or FASTCNN_NO_OPENMP=1 is set, fastcnn builds
serial: `prange` loops then run on one thread, with the same results.

Environment switches (all optional):
  FASTCNN_NO_OPENMP=1      force the serial build
  FASTCNN_MARCH=native     add -march=<value> (local builds only; wheels must not)
  FASTCNN_DEBUG=1          -O0 -g instead of -O3
  FASTCNN_DEBUG_CYTHON=1   keep Cython's bounds and wraparound checks on
  FASTCNN_NO_VECTOR_EXT=1  portable kernels without GCC/Clang vector extensions
  FASTCNN_SANITIZE=address build for a memory checker (GCC/Clang; tools/sanitize.sh):
                           address, undefined or address,undefined add
                           -fsanitize=<value>; valgrind adds no instrumentation;
                           all add -g -O1 -fno-omit-frame-pointer
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

OPENMP_TEST_PROGRAM = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n == omp_get_max_threads());
        return 0;
    }
    """
)


def env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def base_flags(compiler_type):
    """Optimisation flags for the kernels: never -ffast-math (it breaks NaN
    checks and exactness against the oracle), -march only on request."""
    if compiler_type == "msvc":
        return (["/Od", "/Zi"] if env_flag("FASTCNN_DEBUG") else ["/O2"]), []
    # -g0 overrides the -g of Python's own flags: debug info is most of an
    # extension's size, and wheels should be small
    compile_args = ["-O0", "-g"] if env_flag("FASTCNN_DEBUG") else ["-O3", "-g0"]
    # -ffp-contract=fast: fuse a*b + c into one FMA where the target has it
    #   (GCC's default in GNU mode, but not in ISO modes such as -std=c99).
    # -fno-trapping-math: we never read floating-point exception flags, so
    #   selects may be computed on both sides; without it GCC will not
    #   vectorise the clamps of exp and sigmoid. Neither flag changes NaN or
    #   infinity handling or reorders sums (unlike -ffast-math, never used).
    # -fno-math-errno: libm calls need not set errno.
    compile_args += ["-ffp-contract=fast", "-fno-trapping-math", "-fno-math-errno",
                     "-Wno-unused-function"]
    march = os.environ.get("FASTCNN_MARCH", "").strip()
    if march:
        compile_args.append("-march=" + march)
    if env_flag("FASTCNN_NO_VECTOR_EXT"):
        compile_args.append("-DFC_NO_VECTOR_EXT")
    return compile_args + sanitize_flags(), sanitize_flags(link=True)


def sanitize_flags(link=False):
    """FASTCNN_SANITIZE: -g -O1 (after, so overriding, -O3 -g0: Memcheck's
    advice, and ASan's usual level) plus -fsanitize=<value> unless it is
    'valgrind', which needs debug info only."""
    value = os.environ.get("FASTCNN_SANITIZE", "").strip().lower()
    if value in ("", "0", "no", "off"):
        return []
    sanitize = [] if value == "valgrind" else ["-fsanitize=" + value]
    return sanitize if link else sanitize + ["-fno-omit-frame-pointer", "-g", "-O1"]


def optional_flags(compiler, flags):
    """The flags of `flags` this compiler accepts (-Wno-psabi is GCC's: it
    silences notes about passing vector types between inline functions)."""
    return [flag for flag in flags if _compiles(compiler, [flag, "-Werror"])]


def _compiles(compiler, args):
    tmp = tempfile.mkdtemp(prefix="fastcnn-flag-")
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("flag.c", "w") as f:
            f.write("int main(void) { return 0; }\n")
        compiler.compile(["flag.c"], extra_postargs=args)
        return True
    except Exception:  # noqa: BLE001 -- not accepted
        return False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def openmp_flags(compiler_type):
    """Candidate compile and link flags for OpenMP on this compiler."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang needs libomp from elsewhere (Homebrew or a build for the
        # deployment target); CPPFLAGS/LDFLAGS point at it.
        cppflags = os.environ.get("CPPFLAGS", "").split()
        ldflags = os.environ.get("LDFLAGS", "").split()
        return ["-Xpreprocessor", "-fopenmp"] + cppflags, ["-lomp"] + ldflags
    return ["-fopenmp"], ["-fopenmp"]


def _cross_compiling():
    # cibuildwheel and crossenv set _PYTHON_HOST_PLATFORM when the target is
    # not the machine we run on; then the test program can only be linked.
    target = os.environ.get("_PYTHON_HOST_PLATFORM")
    return bool(target) and target != sysconfig.get_platform()


def check_openmp(compiler, compile_args, link_args):
    """Compile, link and run the test program; return True if OpenMP works."""
    tmp = tempfile.mkdtemp(prefix="fastcnn-omp-")
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("omp_test.c", "w") as f:
            f.write(OPENMP_TEST_PROGRAM)
        objects = compiler.compile(["omp_test.c"], extra_postargs=compile_args)
        exe = "omp_test" + (".exe" if sys.platform == "win32" else "")
        compiler.link_executable(objects, "omp_test", extra_postargs=link_args)
        if _cross_compiling():
            return True
        out = subprocess.run(
            [os.path.join(tmp, exe)], capture_output=True, text=True, timeout=60
        )
        return out.returncode == 0 and out.stdout.strip() == "1"
    except Exception:  # noqa: BLE001 -- any failure means "build serial"
        return False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def configure(compiler):
    """Return (compile_args, link_args, info) for every fastcnn extension."""
    ctype = compiler.compiler_type
    compile_args, link_args = base_flags(ctype)
    if ctype != "msvc":
        compile_args += optional_flags(compiler, ["-Wno-psabi"])
    info = {"compiler": ctype, "openmp_requested": not env_flag("FASTCNN_NO_OPENMP")}
    openmp = False
    if info["openmp_requested"]:
        omp_c, omp_l = openmp_flags(ctype)
        openmp = check_openmp(compiler, compile_args + omp_c, link_args + omp_l)
        if openmp:
            compile_args += omp_c
            link_args += omp_l
        else:
            warnings.warn(
                "fastcnn: this compiler cannot build OpenMP programs; building the "
                "serial version (same results, one thread). Set FASTCNN_NO_OPENMP=1 "
                "to silence this.",
                stacklevel=1,
            )
    info["openmp"] = openmp
    info["compile_args"] = list(compile_args)
    info["link_args"] = list(link_args)
    return compile_args, link_args, info


def write_build_info(path, info):
    """Write fastcnn/_build_info.py, read by fastcnn.build_info() and `fastcnn info`."""
    lines = ['"""Generated by setup.py at build time: how this copy of fastcnn was built."""', ""]
    lines.append("BUILD_INFO = " + repr(info))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
