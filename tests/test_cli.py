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
    (["train", "--model", "vgg16"], 2, "invalid choice"),
    (["train", "--optimizer", "rmsprop"], 2, "invalid choice"),
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


@pytest.mark.parametrize("option, value, text", [
    ("--save", "out/newdir/", "that is a directory; give a file name"),
    ("--save", "afile/m.npz", "afile is a file, not a directory"),
    ("--csv-log", "afile/deeper/log.csv", "afile is a file, not a directory"),
    ("--checkpoint-dir", "afile", "that is a file, not a directory"),
    ("--plot", "afile", "that is a file, not a directory"),
    ("--plot", "afile/plots", "afile is a file, not a directory"),
])
def test_output_paths_are_checked_before_any_work(tmp_path, option, value, text):
    """Before the data is read or anything trains: a bad --save no longer
    costs the trained model."""
    (tmp_path / "afile").write_text("")
    r = subprocess.run([sys.executable, "-m", "fastcnn", "train", "--data-dir",
                        "/nonexistent/dir", option, value], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 1 and text in r.stderr, r.stderr
    assert f"fastcnn: error: {option} {value}:" in r.stderr and r.stdout == ""


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes anywhere: a read-only directory stops no one")
def test_a_read_only_checkpoint_directory_is_refused_first(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    r = run("train", "--data-dir", "/nonexistent/dir", "--checkpoint-dir", str(ro / "ck"))
    assert r.returncode == 1 and f"cannot write in {ro}" in r.stderr


def test_plot_without_matplotlib_is_refused_before_training(tmp_path):
    fake = tmp_path / "site"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('not here')\n")
    r = run("train", "--data-dir", "/nonexistent/dir", "--plot", str(tmp_path / "plots"),
            env={"PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 1, r.stderr
    assert "--plot needs matplotlib: pip install 'fastcnn[plot]'" in r.stderr


def test_debug_shows_traceback():
    r = run("--debug", "train", "--data-dir", "/nonexistent/dir")
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = run("train", "--data-dir", "/nonexistent/dir", "--debug")  # after the command too
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"fastcnn {fastcnn.__version__}"


def test_bench_refuses_torch_by_name_without_torch(monkeypatch, capsys):
    from fastcnn import bench, cli

    monkeypatch.setattr(bench, "torch_available", lambda: False)
    assert cli.main(["bench", "--impl", "torch"]) == 1
    assert "--impl torch needs PyTorch" in capsys.readouterr().err


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


def test_train_lenet5_with_adam_and_momentum(tmp_path):
    data = tmp_path / "data"
    write_split(data, 60, "train")
    write_split(data, 20, "test", rng=np.random.default_rng(1))
    common = ["train", "--dataset", "mnist", "--data-dir", str(data), "--batch-size", "20"]
    r = run(*common, "--model", "lenet5", "--save", str(tmp_path / "lenet.npz"))
    assert r.returncode == 0, r.stderr
    assert "lenet5 on mnist" in r.stdout and "adam lr 0.001" in r.stdout
    model = fastcnn.load(tmp_path / "lenet.npz")
    assert [layer.name for layer in model.layers][-3:] == ["F5", "F6", "OUT"]
    assert model.loss == "cross_entropy"
    r = run("evaluate", str(tmp_path / "lenet.npz"), "--dataset", "mnist", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    r = run(*common, "--optimizer", "momentum", "--lr", "0.05")
    assert r.returncode == 0 and "momentum lr 0.05" in r.stdout, r.stderr


@pytest.fixture
def small_run(tmp_path):
    """A small dataset and a model trained on it by the command line."""
    data = tmp_path / "data"
    write_split(data, 200, "train")
    write_split(data, 50, "test", rng=np.random.default_rng(1))
    model = tmp_path / "model.npz"
    r = run("train", "--dataset", "mnist", "--data-dir", str(data), "--batch-size", "20",
            "--epochs", "2", "--save", str(model))
    assert r.returncode == 0, r.stderr
    return data, model


def test_evaluate(small_run):
    data, model = small_run
    r = run("evaluate", str(model), "--dataset", "mnist", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    from fastcnn import datasets
    x, y = datasets.load("mnist", "test", data_dir=data)
    error = fastcnn.load(model).evaluate(x, y)
    assert f"error {error:.4f}" in r.stdout
    assert r.stdout.count(" of ") == 10  # a line per class


def test_predict_formats(small_run, tmp_path):
    _, model = small_run
    m = fastcnn.load(model)
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    expected = m.predict(pixels[:, None] / 255.0)
    np.save(tmp_path / "u8.npy", pixels)
    np.save(tmp_path / "f.npy", (pixels / 255.0).astype(np.float32))
    from PIL import Image
    Image.fromarray(pixels[1]).save(tmp_path / "one.png")
    r = run("predict", str(model), str(tmp_path / "u8.npy"), str(tmp_path / "f.npy"),
            str(tmp_path / "one.png"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    # the class (MNIST's names are its digits) and its output
    assert [line.rsplit(" ", 1)[0] for line in lines] == \
        [f"{tmp_path / 'u8.npy'}[{i}]: {expected[i]}" for i in range(3)] + \
        [f"{tmp_path / 'f.npy'}[{i}]: {expected[i]}" for i in range(3)] + \
        [f"{tmp_path / 'one.png'}[0]: {expected[1]}"]
    outputs = m.predict_proba(pixels[:, None] / 255.0)
    assert float(lines[0].rsplit(" ", 1)[1]) == pytest.approx(outputs[0].max(), abs=5e-4)
    # CSV, from an IDX file, inverted
    idx = tmp_path / "img.idx"
    idx.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28]) + pixels.tobytes())
    r = run("predict", str(model), str(idx), "--invert", "--csv", str(tmp_path / "out.csv"))
    assert r.returncode == 0, r.stderr
    import csv
    with open(tmp_path / "out.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["label"]) for row in rows] == list(m.predict(1 - pixels[:, None] / 255.0))
    assert [row["class"] for row in rows] == [row["label"] for row in rows]  # MNIST's names
    assert len(rows[0]) == 4 + 10


@pytest.mark.parametrize("content, match", [
    (None, "no such file"),
    (np.zeros((2, 20, 20), np.uint8), "20x20 images, the model takes 28x28; give --resize"),
    (np.zeros((2, 3, 28, 28), np.uint8), "3-channel images, the model takes 1"),
    (np.full((1, 28, 28), 3.0), "in \\[0, 1\\]"),
])
def test_predict_errors(small_run, tmp_path, content, match):
    _, model = small_run
    path = tmp_path / "bad.npy"
    if content is not None:
        np.save(path, content)
    r = run("predict", str(model), str(path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    import re
    assert re.search(match, r.stderr), r.stderr


def test_predict_names_top_k_and_resize(tmp_path):
    """A model with class names: predict prints the K most likely with their
    probabilities, and scales other sizes with --resize."""
    from fastcnn import models
    model = models.lenet5(seed=1)
    model.classes = fastcnn.datasets.CLASS_NAMES["fashion-mnist"]
    path = tmp_path / "m.npz"
    model.save(path)
    rng = np.random.default_rng(2)
    images = rng.random((2, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    r = run("predict", str(path), str(tmp_path / "x.npy"), "--top", "3")
    assert r.returncode == 0, r.stderr
    proba = model.predict_proba(images)
    for i, line in enumerate(r.stdout.strip().splitlines()):
        best = np.argsort(-proba[i], kind="stable")[:3]
        assert line == f"{tmp_path / 'x.npy'}[{i}]: " + ", ".join(
            f"{model.classes[c]} {proba[i, c]:.3f}" for c in best)
    # 56x56 -> 28x28 with Pillow's filter: a constant image stays constant
    np.save(tmp_path / "big.npy", np.full((1, 56, 56), 0.25, np.float32))
    r = run("predict", str(path), str(tmp_path / "big.npy"), "--resize")
    assert r.returncode == 0, r.stderr
    best = int(np.argmax(model.predict_proba(np.full((1, 1, 28, 28), 0.25, np.float32))))
    assert r.stdout.startswith(f"{tmp_path / 'big.npy'}[0]: {model.classes[best]} ")
    r = run("predict", str(path), str(tmp_path / "x.npy"), "--top", "11")
    assert r.returncode == 1 and "only 10 classes" in r.stderr


def test_resize_keeps_constant_images_and_scales_patterns():
    from fastcnn import datasets
    pytest.importorskip("PIL")
    x = np.full((2, 3, 40, 30), 0.5, np.float32)
    out = datasets.resize(x, (20, 15))
    assert out.shape == (2, 3, 20, 15) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.5, atol=1e-6)
    halves = np.zeros((1, 1, 40, 40), np.float32)
    halves[..., 20:] = 1  # left dark, right bright, as it stays at any size
    out = datasets.resize(halves, (10, 10))
    assert out[0, 0, :, :4].max() < 0.05 and out[0, 0, :, 6:].min() > 0.95


def test_evaluate_names_classes_of_the_model(small_run):
    data, model = small_run
    m = fastcnn.load(model)
    assert m.classes == [str(d) for d in range(10)]  # set by train from --dataset
    r = run("evaluate", str(model), "--dataset", "fashion-mnist", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    assert "the model's classes (0, 1, 2" in r.stdout and "are not those of fashion-mnist" in r.stdout


def test_train_says_when_the_network_learns_nothing(tmp_path):
    """--lr 1000 saturates the paper's sigmoids: the run ends at chance level
    with a one-line warning in the command's voice (the exit status stays 0:
    the run did what it was told)."""
    data = tmp_path / "data"
    write_split(data, 200, "train")
    write_split(data, 20, "test", rng=np.random.default_rng(1))
    r = run("train", "--dataset", "mnist", "--data-dir", str(data), "--batch-size", "20",
            "--lr", "1000")
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stderr.splitlines() if line.startswith("fastcnn: warning:")]
    assert len(warning) == 1 and "chance level" in warning[0]
    assert "learning rate is too large" in warning[0] and "NotLearningWarning" not in r.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(small_run, tmp_path):
    """`fastcnn predict ... | head -1`: 4,000 lines overflow the pipe, head
    leaves after one, and the command stops without an error message."""
    _, model = small_run
    np.save(tmp_path / "many.npy", np.zeros((4000, 28, 28), np.uint8))
    r = subprocess.run(f"{sys.executable} -m fastcnn predict {model} {tmp_path / 'many.npy'} "
                       f"| head -1", shell=True, capture_output=True, text=True, timeout=600,
                       cwd=OUTSIDE)
    assert r.stdout.count("\n") == 1 and r.stderr == "", r.stderr


def test_gradcheck():
    r = run("gradcheck", "--samples", "5", "--batch", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the gradients agree" in r.stdout
    assert r.stdout.count("entries") == 6


def test_train_with_plots_checkpoints_log_and_resume(tmp_path):
    pytest.importorskip("matplotlib")
    data = tmp_path / "data"
    write_split(data, 100, "train")
    write_split(data, 30, "test", rng=np.random.default_rng(1))
    common = ["train", "--dataset", "mnist", "--data-dir", str(data), "--batch-size", "25",
              "--checkpoint-dir", str(tmp_path / "ck"), "--csv-log", str(tmp_path / "log.csv")]
    r = run(*common, "--epochs", "2", "--plot", str(tmp_path / "plots"))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "plots")) == [
        "confusion_matrix.png", "feature_maps.png", "kernels_C1.png", "kernels_C2.png",
        "learning_curve.png"]
    assert sorted(os.listdir(tmp_path / "ck")) == ["best.npz", "last.npz"]
    r = run(*common, "--epochs", "3", "--resume")
    assert r.returncode == 0, r.stderr
    assert "epoch 3:" in r.stdout and "epoch 1:" not in r.stdout
    with open(tmp_path / "log.csv") as f:
        assert [line.split(",")[0] for line in f.read().split()] == ["epoch", "1", "2", "3"]
    # the same as three epochs in one go
    from fastcnn import datasets
    x, y = datasets.load("mnist", "train", data_dir=data)
    xt, yt = datasets.load("mnist", "test", data_dir=data)
    straight = fastcnn.seed_cnn()
    straight.fit(x, y, epochs=3, batch_size=25, progress=False, validation_data=(xt, yt))
    resumed = fastcnn.load(tmp_path / "ck" / "last.npz")
    for k in straight.params:
        np.testing.assert_array_equal(straight.params[k], resumed.params[k])
    r = run("train", "--resume", "--data-dir", str(data))
    assert r.returncode == 1 and "--resume needs --checkpoint-dir" in r.stderr


def test_ctrl_c_in_the_command_then_resume(tmp_path):
    """A real SIGINT to `fastcnn train`: exit 130 with a hint, nothing
    half-written, and --resume ends where an uninterrupted run ends."""
    import signal
    import time
    data = tmp_path / "data"
    write_split(data, 3000, "train")
    write_split(data, 30, "test", rng=np.random.default_rng(1))
    ck = tmp_path / "ck"
    base = [sys.executable, "-m", "fastcnn", "train", "--dataset", "mnist", "--data-dir",
            str(data), "--batch-size", "10", "--checkpoint-dir", str(ck), "--threads", "1"]
    proc = subprocess.Popen(base + ["--epochs", "40"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=OUTSIDE)
    deadline = time.time() + 300
    while not (ck / "last.npz").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert sorted(os.listdir(ck)) == ["best.npz", "last.npz"]
    _, state, _ = fastcnn.io.load(ck / "last.npz", with_training_state=True)
    done = state["epochs_done"]
    assert 1 <= done < 40
    # resume to two epochs past the interruption, compare with a straight run
    target = str(done + 2)
    r = subprocess.run(base + ["--epochs", target, "--resume"], capture_output=True, text=True,
                       cwd=OUTSIDE, timeout=300)
    assert r.returncode == 0, r.stderr
    from fastcnn import datasets
    x, y = datasets.load("mnist", "train", data_dir=data)
    xt, yt = datasets.load("mnist", "test", data_dir=data)
    straight = fastcnn.seed_cnn()
    straight.fit(x, y, epochs=int(target), batch_size=10, progress=False, validation_data=(xt, yt))
    resumed = fastcnn.load(ck / "last.npz")
    for k in straight.params:
        np.testing.assert_array_equal(straight.params[k], resumed.params[k])
