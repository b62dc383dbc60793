"""The `fastcnn` command: help, info, a short training run, and one-line errors."""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastcnn
from test_datasets import write_split

# Subprocesses start outside the source tree: `python -m` puts the working
# directory first on sys.path, where the uncompiled fastcnn/ would shadow the
# installed package.
OUTSIDE = tempfile.gettempdir()


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fastcnn", *args], capture_output=True,
                          text=True, env=dict(os.environ, **(env or {})), timeout=600, cwd=OUTSIDE)


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "train" in r.stdout and "info" in r.stdout
    r = run("train", "--help")
    assert r.returncode == 0
    for flag in ("--dataset", "--epochs", "--batch-size", "--lr", "--dtype", "--threads",
                 "--seed", "--save"):
        assert flag in r.stdout


def test_console_script_is_installed():
    exe = shutil.which("fastcnn")
    if exe is None:
        pytest.skip("fastcnn is not on PATH (package not installed with pip)")
    r = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120, cwd=OUTSIDE)
    assert r.returncode == 0 and fastcnn.__version__ in r.stdout


def test_info():
    r = run("info")
    assert r.returncode == 0
    assert f"fastcnn {fastcnn.__version__}" in r.stdout
    assert ("OpenMP: on" if fastcnn.openmp_enabled() else "OpenMP: off") in r.stdout


def test_train_small_dataset_and_save(tmp_path):
    data = tmp_path / "data"
    write_split(data, 120, "train")
    write_split(data, 30, "test", rng=np.random.default_rng(1))
    model_path = tmp_path / "model.npz"
    r = run("train", "--dataset", "mnist", "--data-dir", str(data), "--epochs", "2",
            "--batch-size", "25", "--lr", "0.5", "--dtype", "float64", "--threads", "1",
            "--seed", "3", "--save", str(model_path))
    assert r.returncode == 0, r.stderr
    assert "test error:" in r.stdout and "seconds per epoch:" in r.stdout
    assert "epoch 2:" in r.stdout
    model = fastcnn.load(model_path)
    assert model.dtype == np.float64
    # the same run in-process gives the same model
    from fastcnn import datasets
    x, y = datasets.load("mnist", "train", data_dir=data, dtype="float64")
    ref = fastcnn.seed_cnn(seed=3, dtype="float64")
    ref.fit(x, y, epochs=2, batch_size=25, lr=0.5, seed=3, progress=False)
    for k in ref.params:
        np.testing.assert_array_equal(ref.params[k], model.params[k])


@pytest.mark.parametrize("args, status, text", [
    (["train", "--epochs", "0"], 2, "positive integer"),
    (["train", "--lr", "-1"], 2, "positive number"),
    (["train", "--dtype", "float16"], 2, "invalid choice"),
    (["bogus"], 2, "invalid choice"),
    (["train", "--data-dir", "/nonexistent/dir"], 1, "fastcnn: error: /nonexistent/dir does not hold"),
])
def test_errors_are_one_line(args, status, text):
    r = run(*args)
    assert r.returncode == status
    assert text in r.stderr
    assert "Traceback" not in r.stderr
    if status == 1:
        assert len(r.stderr.strip().splitlines()) == 1


def test_debug_shows_traceback():
    r = run("--debug", "train", "--data-dir", "/nonexistent/dir")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_thread_count_from_environment():
    code = "import fastcnn; print(fastcnn.get_num_threads())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, FASTCNN_NUM_THREADS="1"), cwd=OUTSIDE)
    assert r.stdout.strip() == "1"
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                       text=True, env=dict(os.environ, FASTCNN_NUM_THREADS="lots"), cwd=OUTSIDE)
    assert r.returncode == 0 and "FASTCNN_NUM_THREADS='lots' is not a positive integer" in r.stderr


@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
def test_train_with_another_algorithm(tmp_path, algorithm):
    data = tmp_path / "data"
    write_split(data, 60, "train")
    write_split(data, 20, "test", rng=np.random.default_rng(1))
    r = run("train", "--dataset", "mnist", "--data-dir", str(data), "--batch-size", "20",
            "--algorithm", algorithm, "--save", str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    assert f"convolution: {algorithm}" in r.stdout
    assert fastcnn.load(tmp_path / "m.npz").layers[0].algorithm == algorithm
