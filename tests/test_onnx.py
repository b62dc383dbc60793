"""fastcnn -> ONNX (interop.to_onnx, `fastcnn export`) without PyTorch.

Every exported file is run and held to model.forward on the same images:
in onnxruntime for float32 models, to rtol 1e-5 with an absolute floor of
1e-5 times the largest output (helpers.assert_close: the two sides are both
float32 sums, rounded differently); for float64 models in onnx's reference
evaluator, to 1e-12 the same way, and in onnxruntime where it has the
float64 kernels (it has none for Conv and AveragePool). Skipped without onnx
and onnxruntime, failed instead with FASTCNN_REQUIRE_DATA=1 (helpers.need).
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastcnn
from fastcnn import _onnx, _optional, cli, interop, models
from fastcnn.layers import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    MeanPool2D,
    Normalize,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from helpers import assert_close, import_onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------- networks
def perturb(model, rng, steps=2):
    """Away from the start: a couple of training steps (batch norm's running
    estimates move, dropout counts), then random batch norm scales, shifts
    and running estimates and non-zero biases, so that no layer is close to
    the identity and a swapped or unrotated parameter shows."""
    if len(model.output_shape) == 1:  # one score per class: fit can train it
        x = rng.random((16,) + model.input_shape).astype(model.dtype)
        y = rng.integers(0, model.output_shape[0], 16)
        model.fit(x, y, epochs=1, batch_size=16 // steps, lr=0.01, progress=False)
    for layer in model.layers:
        if isinstance(layer, (BatchNorm2D, BatchNorm1D)):
            n = layer.maps
            layer.params["weight"][...] = rng.uniform(0.5, 1.5, n)
            layer.params["bias"][...] = rng.uniform(-0.3, 0.3, n)
            layer.buffers["running_mean"][...] = rng.uniform(-0.5, 0.5, n)
            layer.buffers["running_var"][...] = rng.uniform(0.05, 2.0, n)
        elif "bias" in layer.params:
            layer.params["bias"][...] += rng.uniform(-0.1, 0.1, layer.params["bias"].shape)
    return model


def every_layer(dtype="float32", seed=0):
    """Every layer class, and every option that changes the graph: per-channel
    and single Normalize, strided, padded, bias-free and even-kernel "same"
    convolutions with each activation (tanh_opt included) and each algorithm,
    a Conv2D -> BatchNorm2D -> ReLU that inference folds, batch norm after an
    activation, overlapping max pooling, mean pooling that drops a row and a
    column, every activation layer, dropout in the middle and after dense
    layers, BatchNorm1D, Softmax last."""
    return fastcnn.Sequential([
        Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3]),
        Conv2D(3, 4, (3, 2), stride=2, padding=(1, 2), bias=False),  # 9 x 11
        BatchNorm2D(4),
        ReLU(),
        Conv2D(4, 5, 4, padding="same", activation="tanh_opt"),       # 9 x 11, pads 1/2
        MaxPool2D(3, stride=2),                                         # 4 x 5
        Conv2D(5, 6, 1, activation="sigmoid", algorithm="im2col"),
        Tanh(scaled=True),
        Conv2D(6, 6, 2, padding=1, activation="tanh", algorithm="fft"),  # 5 x 6
        BatchNorm2D(6),
        MeanPool2D(2),                                                  # 2 x 3
        Sigmoid(),
        Tanh(),
        Dropout(0.3),
        Flatten(),                                                      # 36
        Normalize(0.1, 2.0),
        Dense(36, 20, activation="tanh_opt"),
        BatchNorm1D(20),
        Dense(20, 16, activation="relu"),
        Dropout(0.5),
        Dense(16, 8, activation="sigmoid"),
        Dense(8, 5),
        Softmax(),
    ], input_shape=(3, 17, 19), dtype=dtype, seed=seed)


NETWORKS = {
    "seed_cnn": lambda dtype: fastcnn.seed_cnn(seed=1, dtype=dtype),
    "lenet5": lambda dtype: models.lenet5(seed=2, dtype=dtype),
    "lenet5 tanh_opt mean mse": lambda dtype: models.lenet5(
        seed=3, dtype=dtype, activation="tanh_opt", pooling="mean", loss="mse"),
    "lenet5 tanh mean": lambda dtype: models.lenet5(seed=4, dtype=dtype, activation="tanh",
                                                    pooling="mean"),
    "lenet5 sigmoid max colour": lambda dtype: models.lenet5(
        seed=5, dtype=dtype, activation="sigmoid", input_shape=(3, 32, 32)),
    "vgg_mini": lambda dtype: models.vgg_mini(seed=6, dtype=dtype, normalize=(0.29, 0.35)),
    "every layer": every_layer,
}


def build(name, dtype, rng):
    return perturb(NETWORKS[name](dtype), rng)


# ------------------------------------------------------------------ running
def onnxruntime_scores(source, x):
    """The "scores" of the ONNX file (or serialised model) `source` for x, in onnxruntime."""
    _, ort = import_onnx()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(["scores"], {"input": x})[0]


def reference_scores(proto, x):
    """The same in onnx's reference evaluator (NumPy, any dtype the spec allows)."""
    import_onnx()
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(proto).run(["scores"], {"input": x})[0]


def env_of_tested_fastcnn():
    """os.environ for a child Python that imports the fastcnn under test, not one
    that its working directory or an editable install would give."""
    where = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=where + (os.pathsep + path if path else ""))


def images(model, n, rng):
    """n random images in [0, 1) for the model, in its dtype."""
    return rng.random((n,) + model.input_shape).astype(model.dtype)


# ------------------------------------------------------- the same outputs
@pytest.mark.parametrize("name", list(NETWORKS))
def test_float32_in_onnxruntime_equals_forward_at_any_batch_size(name, tmp_path, rng):
    _, ort = import_onnx()
    model = build(name, "float32", rng)
    path = str(tmp_path / "model.onnx")
    interop.to_onnx(model, path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for n in (1, 7):  # one session, two batch sizes: the batch dimension is free
        x = images(model, n, rng)
        (scores,) = session.run(["scores"], {"input": x})
        assert scores.dtype == np.float32 and scores.shape == (n,) + model.output_shape
        assert_close(scores, model.forward(x), np.float32)


@pytest.mark.parametrize("name", ["seed_cnn", "lenet5 tanh_opt mean mse", "vgg_mini",
                                  "every layer"])
def test_float64_in_the_reference_evaluator_equals_forward(name, tmp_path, rng):
    import_onnx()
    model = build(name, "float64", rng)
    proto = interop.to_onnx(model, tmp_path / "model.onnx")
    for n in (1, 7):
        x = images(model, n, rng)
        scores = reference_scores(proto, x)
        assert scores.dtype == np.float64
        assert_close(scores, model.forward(x), np.float64)


def test_batch_norm_eps_is_the_layers_in_float64(tmp_path, rng):
    import_onnx()
    # ONNX's epsilon is a float32 (1e-5 becomes 1e-5 + 2.5e-13): with running
    # variances of 1e-6 that alone would be a relative error of 1e-7
    model = fastcnn.Sequential([Conv2D(1, 3, 3, bias=False), BatchNorm2D(3, eps=1e-5), Flatten(),
                                BatchNorm1D(48, eps=3e-7)], input_shape=(1, 6, 6),
                               dtype="float64")
    for name, b in model.buffers.items():
        b[...] = rng.uniform(1e-6, 1e-5, b.shape) if name.endswith("var") else 0.01
    proto = interop.to_onnx(model, tmp_path / "m.onnx")
    x = images(model, 5, rng)
    assert_close(reference_scores(proto, x), model.forward(x), np.float64)


def test_float64_without_conv_or_average_pool_in_onnxruntime(tmp_path, rng):
    import_onnx()
    # onnxruntime's float64 kernels cover everything but Conv and AveragePool
    model = perturb(fastcnn.Sequential([
        Normalize([0.5, 0.2], [0.3, 0.1]), MaxPool2D(2), Tanh(), ReLU(), Flatten(),
        Dense(2 * 5 * 4, 12, activation="tanh_opt"), BatchNorm1D(12), Dropout(0.2),
        Dense(12, 6, activation="sigmoid"), Tanh(scaled=True), Dense(6, 4), Softmax(),
    ], input_shape=(2, 11, 9), dtype="float64", seed=1), rng)
    path = str(tmp_path / "model.onnx")
    interop.to_onnx(model, path)
    for n in (1, 7):
        x = images(model, n, rng)
        assert_close(onnxruntime_scores(path, x), model.forward(x), np.float64)


@pytest.mark.parametrize("layers", [
    # layers named as the graph's input and output; maps out, not scores per class
    lambda: [Conv2D(2, 3, 3, activation="relu", name="input"), Dropout(name="scores")],
    lambda: [Conv2D(2, 3, 2, stride=3, padding=2, activation="tanh_opt")],  # 4 x 4
    lambda: [Normalize(0.5, 0.2)],
    lambda: [Flatten()],
    lambda: [MaxPool2D(2, stride=1), Flatten(), Softmax()],
], ids=["named input and scores", "strided conv only", "normalize only", "flatten only",
        "pool flatten softmax"])
def test_small_and_odd_models(layers, tmp_path, rng):
    import_onnx()
    model = fastcnn.Sequential(layers(), input_shape=(2, 7, 8))
    path = str(tmp_path / "m.onnx")
    interop.to_onnx(model, path)
    x = images(model, 3, rng)
    scores = onnxruntime_scores(path, x)
    assert scores.shape == (3,) + model.output_shape
    assert_close(scores, model.forward(x), np.float32)


def test_float64_conv_in_onnxruntime_where_it_can(tmp_path, rng):
    """A float64 model with convolutions is valid ONNX; onnxruntime 1.32 has
    no float64 Conv kernel. Should a version have one, this compares."""
    _, ort = import_onnx()
    model = build("seed_cnn", "float64", rng)
    path = str(tmp_path / "model.onnx")
    interop.to_onnx(model, path)
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own NotImplemented, not a Python one
        if "NOT_IMPLEMENTED" in str(e) and re.search("Conv|AveragePool", str(e)):
            pytest.xfail(f"onnxruntime {ort.__version__} has no float64 Conv or AveragePool")
        raise
    x = images(model, 7, rng)
    assert_close(session.run(["scores"], {"input": x})[0], model.forward(x), np.float64)


def dims(value_info):
    """A graph input's or output's shape, with "N" for the free batch size."""
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_the_graph(tmp_path):
    onnx, _ = import_onnx()
    model = every_layer()
    model.classes = ["a", "b", "c", "d", "e"]  # as another part of fastcnn may set it
    proto = interop.to_onnx(model, tmp_path / "m.onnx")
    assert onnx.load(str(tmp_path / "m.onnx")) == proto
    graph = proto.graph
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "input" and out.name == "scores"
    assert dims(inp) == ["N", 3, 17, 19] and dims(out) == ["N", 5]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.opset_import[0].version == _onnx.DEFAULT_OPSET == 17
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta == {"fastcnn_version": fastcnn.__version__, "loss": "mse",
                    "classes": json.dumps(model.classes)}
    assert proto.producer_name == "fastcnn"
    # parameters under their names in model.params, every one of them
    names = {t.name for t in graph.initializer}
    assert set(model.params) <= names
    assert {"batchnorm2d1.running_mean", "batchnorm1d1.running_var"} <= names
    ops = [n.op_type for n in graph.node]
    for op in ("Conv", "BatchNormalization", "Relu", "Tanh", "MaxPool", "Sigmoid",
               "AveragePool", "Identity", "Flatten", "Sub", "Div", "Gemm", "Softmax", "Mul"):
        assert op in ops, op
    # the kernels rotated, the even kernel's "same" padding uneven
    conv = next(n for n in graph.node if n.name == "C2")
    assert [a.ints for a in conv.attribute if a.name == "pads"] == [[1, 1, 2, 2]]
    weight = next(t for t in graph.initializer if t.name == "C1.weight")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(weight),
                                  model.params["C1.weight"][:, :, ::-1, ::-1])


def test_class_names_and_their_absence(tmp_path):
    import_onnx()
    model = fastcnn.seed_cnn()
    assert model.classes is None
    meta = {p.key for p in interop.to_onnx(model, tmp_path / "a.onnx").metadata_props}
    assert meta == {"fastcnn_version", "loss"}
    model.classes = tuple("0123456789")
    meta = {p.key: p.value for p in interop.to_onnx(model, tmp_path / "a.onnx").metadata_props}
    assert json.loads(meta["classes"]) == list("0123456789")


def test_every_opset_runs(tmp_path, rng):
    onnx, ort = import_onnx()
    model = build("every layer", "float32", rng)
    x = images(model, 3, rng)
    expected = model.forward(x)
    for opset in range(_onnx.MIN_OPSET, _onnx.max_opset(onnx) + 1):
        proto = interop.to_onnx(model, tmp_path / "m.onnx", opset=opset)
        assert proto.opset_import[0].version == opset
        assert_close(onnxruntime_scores(proto.SerializeToString(), x), expected, np.float32)


# ------------------------------------------------------------ refusals
@pytest.mark.parametrize("opset, error, match", [
    (12, ValueError, "opset must be from 13 to"),
    (10**6, ValueError, "opset must be from 13 to"),
    (-17, ValueError, "opset must be from 13 to"),
    ("17", TypeError, "opset must be an int"),
    (17.0, TypeError, "opset must be an int"),
    (True, TypeError, "opset must be an int"),
])
def test_bad_opset(opset, error, match, tmp_path):
    import_onnx()
    with pytest.raises(error, match=match):
        interop.to_onnx(fastcnn.seed_cnn(), tmp_path / "m.onnx", opset=opset)
    assert not os.listdir(tmp_path)


def test_numpy_integer_opset(tmp_path):
    import_onnx()
    proto = interop.to_onnx(fastcnn.seed_cnn(), tmp_path / "m.onnx", opset=np.int64(15))
    assert proto.opset_import[0].version == 15


@pytest.mark.parametrize("model, match", [
    ("model.npz", "fastcnn.Sequential model, got str .*fastcnn.load"),
    (None, "fastcnn.Sequential model, got NoneType"),
    (Dense(2, 3), "fastcnn.Sequential model, got Dense"),
])
def test_not_a_model(model, match, tmp_path):
    with pytest.raises(TypeError, match=match):
        interop.to_onnx(model, tmp_path / "m.onnx")


def test_a_layer_subclass_is_refused(tmp_path):
    import_onnx()

    class LeakyReLU(ReLU):  # computes something else under an exported class
        pass

    model = fastcnn.Sequential([Flatten(), LeakyReLU(name="leaky")], input_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="cannot export layer leaky of type LeakyReLU"):
        interop.to_onnx(model, tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_nan_parameters_are_refused(tmp_path):
    import_onnx()
    model = fastcnn.seed_cnn()
    model.params["C2.bias"][3] = np.nan
    with pytest.raises(ValueError, match="C2.bias contains NaN"):
        interop.to_onnx(model, tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_too_large_for_one_file(tmp_path, monkeypatch):
    import_onnx()
    monkeypatch.setattr(_onnx, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="15592 bytes; an ONNX file holds less than 2 GiB"):
        interop.to_onnx(fastcnn.seed_cnn(), tmp_path / "m.onnx")


def test_paths(tmp_path):
    import_onnx()
    model = fastcnn.seed_cnn()
    with pytest.raises(IsADirectoryError, match="that is a directory"):
        interop.to_onnx(model, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file is a file, not a directory"):
        interop.to_onnx(model, tmp_path / "file" / "sub" / "m.onnx")
    with pytest.raises(TypeError, match="path must be a file name"):
        interop.to_onnx(model, b"m.onnx")
    with pytest.raises(TypeError, match="path must be a file name"):
        interop.to_onnx(model, None)
    with pytest.raises(ValueError, match="empty string"):
        interop.to_onnx(model, "")
    # missing directories are made; a str path works as a Path does
    interop.to_onnx(model, str(tmp_path / "new" / "dirs" / "m.onnx"))
    assert (tmp_path / "new" / "dirs" / "m.onnx").is_file()


def test_unwritable_directory(tmp_path, monkeypatch):
    import_onnx()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anyway: make it look read-only
            access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode: access(p, mode)
                                and os.path.abspath(p) != str(locked))
        with pytest.raises(PermissionError, match="cannot write in"):
            interop.to_onnx(fastcnn.seed_cnn(), locked / "m.onnx")
        assert not os.listdir(locked)
    finally:
        locked.chmod(0o700)


def test_without_onnx_the_error_says_how_to_install(tmp_path, monkeypatch, capsys):
    real = _optional.module
    monkeypatch.setattr(_optional, "module", lambda name: None if name == "onnx" else real(name))
    with pytest.raises(ImportError, match=re.escape('pip install "fastcnn[onnx]"')):
        interop.to_onnx(fastcnn.seed_cnn(), tmp_path / "m.onnx")
    fastcnn.seed_cnn().save(tmp_path / "m.npz")
    assert cli.main(["export", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'pip install ".[onnx]"' in err
    assert not (tmp_path / "m.onnx").exists()


def test_importing_interop_does_not_import_onnx():
    # in a child running the fastcnn under test (not whatever the cwd would give)
    code = "import sys, fastcnn.interop; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tempfile.gettempdir(), env=env_of_tested_fastcnn())
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


# ------------------------------------------------ nothing half-written
def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    import_onnx()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous file")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        interop.to_onnx(fastcnn.seed_cnn(), path)
    assert path.read_bytes() == b"the previous file"
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left either

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        interop.to_onnx(fastcnn.seed_cnn(), path)
    assert path.read_bytes() == b"the previous file" and os.listdir(tmp_path) == ["m.onnx"]


def test_a_graph_the_checker_refuses_is_not_written(tmp_path, monkeypatch):
    onnx, _ = import_onnx()

    def refuse(model, full_check=False):
        raise onnx.checker.ValidationError("refused for the test")

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(onnx.checker.ValidationError):
        interop.to_onnx(fastcnn.seed_cnn(), tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_export_leaves_the_model_as_it_was(tmp_path, rng):
    import_onnx()
    model = build("every layer", "float32", rng)
    before = {k: v.copy() for k, v in list(model.params.items()) + list(model.buffers.items())}
    interop.to_onnx(model, tmp_path / "m.onnx")
    for k, v in list(model.params.items()) + list(model.buffers.items()):
        np.testing.assert_array_equal(v, before[k])


# ------------------------------------------------------------ the command
def test_export_command(tmp_path, rng, capsys):
    import_onnx()
    model = build("lenet5", "float32", rng)
    model.save(tmp_path / "model.npz")
    out = tmp_path / "model.onnx"
    assert cli.main(["export", str(tmp_path / "model.npz"), str(out), "--opset", "13"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"wrote {out}: ONNX opset 13, input (N, 1, 28, 28) -> scores (N, 10), "
                     f"float32, 8 layers, 61706 parameters"]
    x = images(model, 4, rng)
    assert_close(onnxruntime_scores(str(out), x), fastcnn.load(tmp_path / "model.npz").forward(x),
                 np.float32)


@pytest.mark.parametrize("args, status, match", [
    (["{dir}/missing.npz", "{dir}/m.onnx"], 1, "no such model file"),
    (["{dir}/text.npz", "{dir}/m.onnx"], 1, "not a usable fastcnn model file"),
    (["{dir}/model.npz", "{dir}/m.onnx", "--opset", "12"], 1, "opset must be from 13 to"),
    (["{dir}/model.npz", "{dir}"], 1, "that is a directory"),
    (["{dir}/model.npz", "{dir}/text.npz/m.onnx"], 1, "is a file, not a directory"),
    (["{dir}/model.npz", "{dir}/m.onnx", "--opset", "x"], 2, "expected a positive integer"),
    (["{dir}/model.npz"], 2, "the following arguments are required: output"),
])
def test_export_command_errors(args, status, match, tmp_path, capsys):
    import_onnx()
    fastcnn.seed_cnn().save(tmp_path / "model.npz")
    (tmp_path / "text.npz").write_text("not a model")
    argv = ["export"] + [a.format(dir=tmp_path) for a in args]
    if status == 2:  # argparse's own errors
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
    else:
        assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(match, err), err
    if status == 1:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_command_in_a_new_process(tmp_path, rng):
    import_onnx()
    model = build("seed_cnn", "float32", rng)
    model.save(tmp_path / "model.npz")
    out = tmp_path / "model.onnx"
    r = subprocess.run([sys.executable, "-m", "fastcnn", "export", str(tmp_path / "model.npz"),
                        str(out)], capture_output=True, text=True, timeout=300,
                       cwd=tempfile.gettempdir(), env=env_of_tested_fastcnn())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {out}: ONNX opset 17,")
    x = images(model, 3, rng)
    assert_close(onnxruntime_scores(str(out), x), model.forward(x), np.float32)


# ------------------------------------------------------------ the README
def test_readme_example_runs(tmp_path, monkeypatch):
    import_onnx()
    path = os.path.join(ROOT, "README.md")
    if not os.path.isfile(path):
        pytest.skip("needs the source tree")
    with open(path, encoding="utf-8") as f:
        found = re.search(r"\n### Export to ONNX\n.*?```python\n(.*?)```", f.read(), re.S)
    assert found, "README.md has no python block under '### Export to ONNX'"
    block = found.group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md, Export to ONNX", "exec"), {})
    assert (tmp_path / "model.onnx").is_file()
