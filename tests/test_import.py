"""`import fastcnn` stays light: NumPy and fastcnn's own modules, nothing
that only some uses need (the import time itself is measured in
tools/check_wheel.sh and benchmarks/README.md, not timed here)."""

import subprocess
import sys
import tempfile

HEAVY = ["scipy", "tqdm", "threadpoolctl", "urllib.request", "http.client", "matplotlib",
         "torch", "asyncio", "dask", "distributed", "sklearn", "onnx", "onnxruntime"]


def test_import_brings_in_only_numpy():
    code = ("import sys, fastcnn; print(' '.join(m for m in %r if m in sys.modules))" % HEAVY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [], f"import fastcnn imported {r.stdout.strip()}"


def test_distributed_module_imports_dask_only_when_used():
    # sweep(..., client="serial") works without Dask installed
    code = "import sys, fastcnn.distributed; print('dask' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
