"""The most portable build: no OpenMP (FASTCNN_NO_OPENMP=1) and no GCC/Clang
vector extensions (FASTCNN_NO_VECTOR_EXT=1, the kernels other compilers get).
It compiles, says so, and passes the kernel, model and validation tests.

Builds a second copy of the package in a temporary directory (a minute or
two), so it is marked slow.
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_serial_build_passes_the_kernel_tests(tmp_path):
    pytest.importorskip("Cython")
    if not os.path.isfile(os.path.join(ROOT, "setup.py")):
        pytest.skip("needs the source tree")
    src = tmp_path / "src"
    src.mkdir()
    for part in ("setup.py", "pyproject.toml", "README.md", "fastcnn", "src_c", "tools", "tests"):
        path = os.path.join(ROOT, part)
        if os.path.isdir(path):
            shutil.copytree(path, src / part, ignore=shutil.ignore_patterns(
                "*.so", "*.pyd", "*.c", "__pycache__", "_build_info.py"))
        else:
            shutil.copy(path, src / part)
    env = dict(os.environ, FASTCNN_NO_OPENMP="1", FASTCNN_NO_VECTOR_EXT="1")
    env.pop("FASTCNN_NUM_THREADS", None)
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=src,
                           env=env, capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "-fopenmp" not in build.stdout
    assert "-DFC_NO_VECTOR_EXT" in build.stdout

    env["PYTHONPATH"] = str(src)
    probe = subprocess.run(
        [sys.executable, "-c", "import fastcnn; fastcnn.set_num_threads(2); "
         "print(fastcnn.__file__, fastcnn.openmp_enabled(), fastcnn.get_num_threads(), "
         "fastcnn.build_info()['openmp_requested'])"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    path, enabled, n, requested = probe.stdout.split()
    assert path.startswith(str(src)) and enabled == "False" and n == "1" and requested == "False"

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_kernels.py", "tests/test_model.py", "tests/test_validation.py"],
        cwd=src, env=env, capture_output=True, text=True, timeout=1800)
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-3000:]
