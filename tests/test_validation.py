"""Bad input gets a clear exception; awkward but valid input (non-contiguous,
read-only, memory-mapped, other float dtypes) gets the same answer as clean input."""

import gzip
import io
import json
import pickle
import re
import zipfile

import numpy as np
import pytest

import fastcnn
from fastcnn import _conv, datasets


@pytest.fixture
def model():
    return fastcnn.seed_cnn(seed=0, dtype="float64")


@pytest.fixture
def x(rng):
    return rng.random((4, 1, 28, 28))


@pytest.mark.parametrize("shape, match", [
    ((28, 28), "2 dimensions"),
    ((1, 28, 28), r"3 dimensions.*x\[None\]"),
    ((2, 1, 1, 28, 28), "5 dimensions"),
    ((2, 3, 28, 28), "3 channels, the model takes 1"),
    ((2, 1, 20, 20), "20x20 images, the model takes 28x28"),
    ((2, 1, 4, 4), "4x4 images"),
    ((0, 1, 28, 28), "empty"),
])
def test_bad_image_shapes(model, shape, match):
    with pytest.raises(ValueError, match=match):
        model.forward(np.zeros(shape))
    with pytest.raises(ValueError, match=match):
        model.backprop(np.zeros(shape), np.zeros(shape[0] if len(shape) else 0, dtype=int))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_images(model, x, bad):
    x[1, 0, 3, 4] = bad
    for call in (model.forward, model.predict, lambda a: model.backprop(a, [0, 1, 2, 3]),
                 lambda a: model.fit(a, [0, 1, 2, 3], progress=False, batch_size=2),
                 lambda a: model.evaluate(a, [0, 1, 2, 3])):
        with pytest.raises(ValueError, match="NaN or infinity"):
            call(x)


@pytest.mark.parametrize("dtype, match", [
    (np.uint8, "x / 255"), (np.int64, "x / 255"), (bool, "x / 255"),
    (np.complex128, "complex128"), (object, "object"), ("U3", "<U3"),
])
def test_wrong_image_dtype(model, dtype, match):
    with pytest.raises(TypeError, match=match):
        model.forward(np.zeros((2, 1, 28, 28), dtype=dtype))


def test_labels(model, x):
    with pytest.raises(ValueError, match=r"label 10, out of range.*\[0, 10\)"):
        model.backprop(x, [0, 1, 10, 2])
    with pytest.raises(ValueError, match="label -1"):
        model.backprop(x, [0, 1, -1, 2])
    with pytest.raises(ValueError, match="3 labels for 4 images"):
        model.backprop(x, [0, 1, 2])
    with pytest.raises(TypeError, match="must be integers"):
        model.backprop(x, np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"expected \(4,\) labels or \(4, 10\) targets"):
        model.backprop(x, np.zeros((4, 9)))
    with pytest.raises(ValueError, match="NaN"):
        model.backprop(x, np.full((4, 10), np.nan))
    with pytest.raises(ValueError, match="out of range|outside"):
        model.evaluate(x, [0, 1, 2, 11])
    with pytest.raises(ValueError, match="out of range"):
        model.fit(x, [0, 1, 2, 11], progress=False, batch_size=2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=-3), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=True), TypeError, "batch_size must be an integer"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    (dict(epochs=0), ValueError, "epochs must be >= 1"),
    (dict(lr=-1.0), ValueError, "lr must be a finite number > 0"),
    (dict(lr=float("nan")), ValueError, "lr must be"),
    (dict(lr="1"), TypeError, "lr must be a number"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
])
def test_fit_arguments(model, x, kwargs, error, match):
    args = dict(epochs=1, batch_size=2, progress=False)
    args.update(kwargs)
    before = model.params["C1.weight"].copy()
    with pytest.raises(error, match=match):
        model.fit(x, [0, 1, 2, 3], **args)
    np.testing.assert_array_equal(model.params["C1.weight"], before)


@pytest.mark.parametrize("batch_size", [5, 10**12])
def test_batch_size_larger_than_the_data_is_one_batch(x, batch_size):
    # as in Keras and with PyTorch's DataLoader: one batch of all the images,
    # the same training as batch_size=len(x); nothing of batch_size is allocated
    a = fastcnn.seed_cnn(seed=0, dtype="float64")
    history = a.fit(x, [0, 1, 2, 3], epochs=2, batch_size=batch_size, progress=False)
    assert len(history.loss) == 2
    b = fastcnn.seed_cnn(seed=0, dtype="float64")
    b.fit(x, [0, 1, 2, 3], epochs=2, batch_size=4, progress=False)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_nan_parameters_refuse_to_train(model, x):
    model.params["C2.bias"][3] = np.nan
    with pytest.raises(ValueError, match="C2.bias contains NaN"):
        model.fit(x, [0, 1, 2, 3], batch_size=2, progress=False)


def test_divergence_raises_before_the_bad_step(model, x, monkeypatch):
    # Sigmoid outputs saturate, so finite parameters give a finite loss; the
    # guard is for what cannot be ruled out. Make the second batch's loss NaN.
    from fastcnn import losses

    real_mse, calls = losses.mse, []

    def mse_nan_on_second_call(yhat, t, grad=None):
        calls.append(1)
        loss, grad = real_mse(yhat, t, grad)
        return (float("nan") if len(calls) == 2 else loss), grad

    monkeypatch.setitem(losses.LOSSES, "mse", mse_nan_on_second_call)
    with pytest.raises(FloatingPointError, match="diverged in epoch 1, batch 2.*smaller learning rate"):
        model.fit(x, [0, 1, 2, 3], batch_size=2, seed=0, progress=False)
    monkeypatch.setitem(losses.LOSSES, "mse", real_mse)
    # the parameters are those after batch 1: the NaN step was not applied
    ref = fastcnn.seed_cnn(seed=0, dtype="float64")
    first = np.random.default_rng(0).permutation(4)[:2]
    ref.backprop(x[first], np.array([0, 1, 2, 3])[first])
    fastcnn.SGD(ref, lr=1.0).step()
    for k in ref.params:
        np.testing.assert_array_equal(model.params[k], ref.params[k])


def test_noncontiguous_readonly_and_float32_inputs_agree(model, x):
    expected = model.forward(x)
    big = np.zeros((4, 1, 28, 56))
    big[:, :, :, ::2] = x
    strided = big[:, :, :, ::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(model.forward(strided), expected)
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(model.forward(ro), expected)
    fortran = np.asfortranarray(x)
    np.testing.assert_array_equal(model.forward(fortran), expected)
    # a float32 model takes float64 input (cast) and float32 input alike
    m32 = fastcnn.seed_cnn(seed=0, dtype="float32")
    np.testing.assert_array_equal(m32.forward(x), m32.forward(x.astype(np.float32)))
    # fit and backprop too
    loss = model.backprop(x, [1, 2, 3, 4])
    assert model.backprop(ro, np.array([1, 2, 3, 4], dtype=np.uint8)) == loss
    assert model.backprop(strided, [1, 2, 3, 4]) == loss


def test_memory_mapped_input(model, x, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    np.testing.assert_array_equal(model.predict(mm), model.predict(x))
    a = fastcnn.seed_cnn(seed=0, dtype="float64")
    a.fit(mm, [0, 1, 2, 3], batch_size=2, progress=False)
    b = fastcnn.seed_cnn(seed=0, dtype="float64")
    b.fit(x, [0, 1, 2, 3], batch_size=2, progress=False)
    np.testing.assert_array_equal(a.params["C1.weight"], b.params["C1.weight"])


def test_constructor_arguments():
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        fastcnn.seed_cnn(dtype="float16")
    with pytest.raises(ValueError, match="in_maps must be >= 1"):
        fastcnn.Conv2D(0, 3, 5)
    with pytest.raises(ValueError, match="kernel_size"):
        fastcnn.Conv2D(1, 3, (5, 5, 5))
    with pytest.raises(ValueError, match="activation must be one of"):
        fastcnn.Conv2D(1, 3, 5, activation="softplus")
    with pytest.raises(ValueError, match="smaller than the 5x5 kernel"):
        fastcnn.Sequential([fastcnn.Conv2D(1, 3, 5)], input_shape=(1, 4, 9))
    with pytest.raises(ValueError, match="expects 2 input maps, got 1"):
        fastcnn.Sequential([fastcnn.Conv2D(2, 3, 3)], input_shape=(1, 9, 9))
    with pytest.raises(ValueError, match="smaller than the pooling scale 3"):
        fastcnn.Sequential([fastcnn.MeanPool2D(3)], input_shape=(1, 2, 9))
    with pytest.raises(ValueError, match="input_shape must be"):
        fastcnn.Sequential([fastcnn.Flatten()], input_shape=(28, 28))
    with pytest.raises(TypeError, match="layers"):
        fastcnn.Sequential([], input_shape=(1, 2, 2))


def test_thread_settings(threads):
    for bad in (0, -2):
        with pytest.raises(ValueError, match="positive integer"):
            fastcnn.set_num_threads(bad)
    for bad in (1.5, "2", True, None):
        with pytest.raises(TypeError, match="positive integer"):
            fastcnn.set_num_threads(bad)
    fastcnn.set_num_threads(np.int64(2))
    assert fastcnn.get_num_threads() == (2 if fastcnn.openmp_enabled() else 1)


def test_layers_used_directly(rng):
    conv = fastcnn.Conv2D(1, 2, 3, name="c")
    with pytest.raises(RuntimeError, match="not built"):
        conv.forward(np.zeros((1, 1, 5, 5)))
    conv.build((1, 5, 5), "float64")
    with pytest.raises(RuntimeError, match="backward called before forward"):
        conv.backward(np.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, 5, 5\)"):
        conv.forward(np.zeros((1, 1, 6, 5)))
    conv.forward(rng.random((2, 1, 5, 5)))
    with pytest.raises(ValueError, match="gradient has shape"):
        conv.backward(np.zeros((3, 2, 3, 3)))


def test_kernel_entry_points_check_shapes():
    x = np.zeros((2, 3, 8, 8))
    k = np.zeros((4, 3, 5, 5))
    with pytest.raises(ValueError, match="output array has the wrong shape"):
        _conv.conv_forward(x, k, np.zeros(4), np.zeros((2, 4, 3, 3)), True, 1)
    with pytest.raises(ValueError, match="kernel input maps"):
        _conv.conv_forward(x, np.zeros((4, 2, 5, 5)), np.zeros(4), np.zeros((2, 4, 4, 4)), True, 1)
    with pytest.raises(ValueError, match="bias"):
        _conv.conv_forward(x, k, np.zeros(3), np.zeros((2, 4, 4, 4)), True, 1)
    with pytest.raises(ValueError, match="dtype mismatch"):
        _conv.conv_forward(x.astype(np.float32), k, np.zeros(4), np.zeros((2, 4, 4, 4)), True, 1)
    with pytest.raises(ValueError, match="contiguous"):
        _conv.conv_forward(x[:, :, :, ::-1], k, np.zeros(4), np.zeros((2, 4, 4, 4)), True, 1)


# ---------------------------------------------------------------------------
# Found by tests/test_fuzz.py, and the rest of "trustworthy under bad input"
# ---------------------------------------------------------------------------
class _RunsCodeWhenUnpickled:
    """Unpickling this calls open(marker, "w"): proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_values_too_large_for_the_model_dtype(x):
    # 1e300 would become inf in float32: refused, not computed into NaN or
    # "training diverged"
    m32 = fastcnn.seed_cnn(seed=0, dtype="float32")
    big = x.copy()
    big[2, 0, 5, 5] = -1e300
    calls = [m32.forward, m32.predict, m32.predict_proba, m32.activations,
             lambda a: m32.evaluate(a, [0, 1, 2, 3]), lambda a: m32.backprop(a, [0, 1, 2, 3]),
             lambda a: m32.fit(a, [0, 1, 2, 3], batch_size=2, progress=False)]
    for call in calls:
        with pytest.raises(ValueError, match="too large for float32.*1e\\+300"):
            call(big)
    targets = np.eye(10)[[0, 1, 2, 3]] * 1e300
    with pytest.raises(ValueError, match="y holds values too large for float32"):
        m32.backprop(x, targets)
    # in float64 the same numbers are fine (the sigmoids saturate)
    m64 = fastcnn.seed_cnn(seed=0, dtype="float64")
    assert np.isfinite(m64.forward(big)).all()
    # float16, and inf that is already inf, are not "too large"
    np.testing.assert_array_equal(m32.forward(x.astype(np.float16)),
                                  m32.forward(x.astype(np.float16).astype(np.float32)))


def test_dtype_in_the_other_byte_order_means_the_same_dtype(x):
    model = fastcnn.seed_cnn(seed=0, dtype=">f8")
    assert model.dtype == np.float64 and model.dtype.isnative
    np.testing.assert_array_equal(model.forward(x), fastcnn.seed_cnn(seed=0, dtype="float64").forward(x))
    conv = fastcnn.Conv2D(1, 2, 3)
    conv.build((1, 5, 5), ">f4")
    assert conv.forward(np.ones((1, 1, 5, 5), ">f8")).dtype == np.float32


@pytest.mark.parametrize("bad", [np.ones((2, 1, 5, 5), complex), np.full((2, 1, 5, 5), "1.5"),
                                 np.ones((2, 1, 5, 5), object), np.zeros((2, 1, 5, 5), "M8[s]")])
def test_layers_take_real_numbers_only(bad):
    # complex used to lose its imaginary part with a warning, strings were parsed
    conv = fastcnn.Conv2D(1, 2, 3, name="c")
    conv.build((1, 5, 5), "float32")
    with pytest.raises(TypeError, match=re.escape(f"Conv2D c: input has dtype {bad.dtype}; expected real")):
        conv.forward(bad)
    y = conv.forward(np.ones((2, 1, 5, 5)))
    with pytest.raises(TypeError, match="Conv2D c: gradient has dtype"):
        conv.backward(bad[:, :, :3, :3].repeat(2, axis=1))
    np.testing.assert_array_equal(conv.forward(np.ones((2, 1, 5, 5), bool)), y)
    np.testing.assert_array_equal(conv.forward(np.ones((2, 1, 5, 5), np.int8)), y)


def test_layers_refuse_values_that_overflow_their_dtype():
    relu = fastcnn.ReLU(name="r")
    relu.build((3,), "float32")
    with pytest.raises(ValueError, match="ReLU r: input holds values too large for float32"):
        relu.forward(np.array([[1.0, 1e39, 2.0]]))
    relu.forward(np.array([[1.0, np.inf, np.nan]]))  # NaN and inf propagate, as documented
    with pytest.raises(ValueError, match="ReLU r: gradient holds values too large"):
        relu.backward(np.array([[1.0, -1e300, 2.0]]))


def test_layer_build_checks_its_arguments():
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        fastcnn.Dense(3, 2).build((3,), "int32")
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints"):
        fastcnn.Dense(3, 2).build(3, "float32")
    with pytest.raises(ValueError, match="input_shape entries must be >= 1"):
        fastcnn.Sigmoid().build((0, 3), "float32")
    dense = fastcnn.Dense(3, 2)
    with pytest.raises(ValueError, match="expects 3 input features"):
        dense.build((4,), "float32")
    assert dense.dtype is None  # a failed build leaves the layer usable
    fastcnn.Sequential([fastcnn.Flatten(), dense], input_shape=(1, 1, 3))


def test_sequential_arguments_of_the_wrong_kind():
    with pytest.raises(TypeError, match="single layer .*put it in a list"):
        fastcnn.Sequential(fastcnn.Flatten(), input_shape=(1, 2, 2))
    with pytest.raises(TypeError, match="layers must be a non-empty list of fastcnn layers, got None"):
        fastcnn.Sequential(None, input_shape=(1, 2, 2))
    with pytest.raises(TypeError, match="got 'relu' in it"):
        fastcnn.Sequential([fastcnn.Flatten(), "relu"], input_shape=(1, 2, 2))
    for bad in (None, 5):
        with pytest.raises(TypeError, match=r"input_shape must be \(channels, height, width\)"):
            fastcnn.Sequential([fastcnn.Flatten()], input_shape=bad)
    # cross-entropy without any scoring layer: was StopIteration, with the layer left built
    flatten = fastcnn.Flatten()
    with pytest.raises(ValueError, match="last layer must be a Dense or Conv2D without activation"):
        fastcnn.Sequential([flatten], input_shape=(1, 2, 2), loss="cross_entropy")
    fastcnn.Sequential([flatten], input_shape=(1, 2, 2))


@pytest.mark.parametrize("make", [
    lambda: fastcnn.Conv2D(1, 2, 3, stride=2**31),
    lambda: fastcnn.Conv2D(1, 2, (3, 2**40)),
    lambda: fastcnn.MaxPool2D(2, stride=2**40),
    lambda: fastcnn.MeanPool2D(2**31),
    lambda: fastcnn.MeanPool2D(46341),
    lambda: fastcnn.Dense(2**31, 3),
    lambda: fastcnn.Sequential([fastcnn.Flatten()], input_shape=(1, 2**31, 1)),
    lambda: fastcnn.Sequential([fastcnn.Conv2D(1, 1, 1, padding=2**30)], input_shape=(1, 5, 5)),
    lambda: fastcnn.Sequential([fastcnn.MaxPool2D(2)], input_shape=(1, 2**16, 2**16)),
])
def test_sizes_the_kernels_cannot_index_are_refused(make):
    # the kernels take C ints: 2**40 used to reach them as an OverflowError
    with pytest.raises(ValueError, match="2147483647|46340"):
        make()


def test_validation_data_must_be_a_pair(model, x):
    for bad, match in [(5, "got int"), ((x, [0, 1, 2, 3], 1), "got tuple of length 3"),
                       ((x,), "got tuple of length 1")]:
        with pytest.raises(TypeError, match=f"validation_data must be a pair \\(x_val, y_val\\), {match}"):
            model.fit(x, [0, 1, 2, 3], batch_size=2, progress=False, validation_data=bad)


def test_nan_or_inf_parameters_are_refused_everywhere(model, x, tmp_path):
    # a model whose parameters are NaN would predict class 0 for everything
    # and report an error rate as if it meant something
    model.params["FC.weight"][3, 7] = np.inf
    calls = [model.forward, model.predict, model.predict_proba, model.activations,
             lambda a: model.evaluate(a, [0, 1, 2, 3]), lambda a: model.backprop(a, [0, 1, 2, 3]),
             lambda a: model.fit(a, [0, 1, 2, 3], batch_size=2, progress=False),
             lambda a: model.save(tmp_path / "nan.npz")]
    for call in calls:
        with pytest.raises(ValueError, match="parameter FC.weight contains NaN or infinity"):
            call(x)
    assert not (tmp_path / "nan.npz").exists()  # load would refuse it (see test_io)
    model.reset_parameters(0)
    model.forward(x)


def test_divergence_in_the_last_step_of_an_epoch(x, tmp_path):
    # the loss of a batch is computed before its step: the last step of an
    # epoch could leave NaN parameters, and a checkpoint load refuses
    model = fastcnn.seed_cnn(seed=0, dtype="float32")
    with pytest.warns(RuntimeWarning, match="overflow"):
        with pytest.raises(FloatingPointError, match="diverged in epoch 1, batch 1.*smaller learning"):
            model.fit(x, [0, 1, 2, 3], batch_size=4, lr=1e300, progress=False,
                      checkpoint_dir=tmp_path)
    assert not (tmp_path / "last.npz").exists()


def test_fft_backward_twice_after_one_forward(rng):
    # the FFT dropped its spectra after backward: a second call raised AttributeError
    results = {}
    for algorithm in ("direct", "fft"):
        conv = fastcnn.Conv2D(2, 3, 3, activation="tanh", algorithm=algorithm)
        conv.build((2, 7, 6), "float64")
        conv.reset_parameters(np.random.default_rng(0))
        x = results.setdefault("x", rng.random((2, 2, 7, 6)))
        y = conv.forward(x)
        g = np.ones_like(y)
        first = conv.backward(g)
        np.testing.assert_array_equal(conv.backward(g), first)
        results[algorithm] = first
    np.testing.assert_allclose(results["fft"], results["direct"], rtol=1e-10, atol=1e-12)


def test_empty_inputs_everywhere(model):
    empty = np.zeros((0, 1, 28, 28))
    no_labels = np.zeros(0, int)
    calls = [model.forward, model.predict, model.predict_proba, model.activations,
             lambda a: model.predict_scores(a), lambda a: model.evaluate(a, no_labels),
             lambda a: model.backprop(a, no_labels),
             lambda a: model.fit(a, no_labels, progress=False)]
    for call in calls:
        with pytest.raises(ValueError, match=r"x is empty: shape \(0, 1, 28, 28\); expected at least one"):
            call(empty)
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    with pytest.raises(ValueError, match="x_val is empty"):
        model.fit(x, [0, 1], progress=False, validation_data=(empty, no_labels))
    with pytest.raises(ValueError, match="y has 0 labels for 2 images"):
        model.fit(x, no_labels, progress=False)
    for layer, shape in [(fastcnn.Conv2D(1, 1, 2), (1, 3, 3)), (fastcnn.Dense(3, 2), (3,)),
                         (fastcnn.Softmax(), (3,)), (fastcnn.MaxPool2D(2), (1, 2, 2))]:
        layer.build(shape, "float64")
        with pytest.raises(ValueError, match="with N >= 1"):
            layer.forward(np.zeros((0,) + shape))


@pytest.fixture
def saved(tmp_path):
    m = fastcnn.Sequential([fastcnn.Flatten(), fastcnn.Dense(4, 3)], input_shape=(1, 2, 2))
    path = tmp_path / "m.npz"
    m.save(path)
    return m, path


def _central_entry(data, name):
    """Offset of the central directory entry of `name` in zip bytes (46
    fixed bytes, then the name)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        start = z.start_dir
    return data.index(name.encode(), start) - 46


@pytest.mark.parametrize("field, offset, value, what", [
    ("compression method 99", 10, 99, "NotImplementedError"),
    ("encrypted flag", 8, 1, "RuntimeError"),
    ("compressed patched data flag", 8, 1 << 5, "NotImplementedError"),
])
def test_zip_damage_that_zipfile_reports_with_odd_exceptions(saved, tmp_path, field, offset,
                                                              value, what):
    # zipfile raises NotImplementedError or RuntimeError for these: they got out of load
    _, path = saved
    data = bytearray(path.read_bytes())
    entry = _central_entry(bytes(data), "F1.weight.npy")
    data[entry + offset : entry + offset + 2] = value.to_bytes(2, "little")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"not a usable fastcnn model file: it is damaged \\({what}"):
        fastcnn.load(bad)


def _write_npz(path, members):
    """A valid zip (CRCs right) of raw .npy members: {name: bytes}."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _npy(array=None, header=None):
    buf = io.BytesIO()
    if header is None:
        np.save(buf, array, allow_pickle=True)
        return buf.getvalue()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + (b"" if array is None else array.tobytes())


def _members(model, **replace):
    config = {"format": "fastcnn-model", "format_version": 1, "fastcnn_version": fastcnn.__version__,
              "model": model.get_config()}
    members = {"__config__.npy": _npy(np.array(json.dumps(config)))}
    members.update({f"{k}.npy": _npy(v) for k, v in model.params.items()})
    members.update(replace)
    return members


def test_a_header_cannot_make_load_allocate_more_than_the_file_holds(saved, tmp_path):
    m, _ = saved
    path = tmp_path / "huge.npz"
    # 8 TB announced, 96 bytes there: was an attempt to allocate (MemoryError)
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    _write_npz(path, _members(m, **{"F1.weight.npy": _npy(m.params["F1.weight"], header)}))
    with pytest.raises(ValueError, match=r"entry 'F1.weight' is damaged: its header announces"):
        fastcnn.load(path)
    # an architecture that needs far more parameters than the file holds
    huge = fastcnn.Dense(10**6, 10**5)
    config = {"format": "fastcnn-model", "format_version": 1, "model": {
        "input_shape": [1, 1, 10**6], "dtype": "float32", "loss": "mse",
        "layers": [{"type": "Flatten", "config": {"name": "f"}},
                   {"type": "Dense", "config": huge.get_config()}]}}
    _write_npz(path, {"__config__.npy": _npy(np.array(json.dumps(config)))})
    with pytest.raises(ValueError, match=r"architecture has 100,000,100,000 parameters, more than "
                                         r"the limit"):
        fastcnn.load(path)
    # within the limits, still more than the file holds
    with pytest.raises(ValueError, match=r"architecture needs 100000100000 parameters, more than "
                                         r"the file"):
        fastcnn.load(path, limits={"parameters": 10**12})


def test_entries_that_are_not_arrays_of_numbers(saved, tmp_path):
    m, _ = saved
    path = tmp_path / "odd.npz"
    _write_npz(path, _members(m, **{"F1.bias.npy": _npy(np.array([1, "a", None], dtype=object))}))
    with pytest.raises(ValueError, match="entry 'F1.bias' holds object data"):
        fastcnn.load(path)
    members = _members(m)
    members["F1.bias"] = members.pop("F1.bias.npy")  # not a .npy member
    _write_npz(path, members)
    with pytest.raises(ValueError, match="missing parameters|not a .npy array"):
        fastcnn.load(path)


def test_loading_never_runs_code_from_the_file(saved, tmp_path):
    m, _ = saved
    marker = tmp_path / "code-ran"
    payload = np.array([_RunsCodeWhenUnpickled(marker)] * 3, dtype=object)
    cases = {
        "parameter": _members(m, **{"F1.bias.npy": _npy(payload)}),
        "config": _members(m, **{"__config__.npy": _npy(payload[:1].reshape(()))}),
        "training state": dict(_members(m), **{"__training__.npy": _npy(payload[:1].reshape(()))}),
        "optimiser state": dict(_members(m), **{"__training__.npy": _npy(np.array("{}")),
                                                "__training__/m.npy": _npy(payload)}),
    }
    for what, members in cases.items():
        path = tmp_path / f"{what}.npz"
        _write_npz(path, members)
        with pytest.raises(ValueError, match="not a usable fastcnn model file"):
            fastcnn.load(path, with_training_state=True)
        assert not marker.exists(), f"unpickling the {what} ran code"
    # a plain pickle with the .npz name, and a single pickled .npy
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(marker)))
    (tmp_path / "single.npz").write_bytes(_npy(payload))
    for name in ("pickle.npz", "single.npz"):
        with pytest.raises(ValueError, match="not a usable fastcnn model file"):
            fastcnn.load(tmp_path / name)
        assert not marker.exists()
    # and the marker is real: unpickling does run the code
    pickle.loads(pickle.dumps(_RunsCodeWhenUnpickled(marker)))
    assert marker.exists()


def _idx(shape, type_byte=0x08, data=b""):
    return bytes([0, 0, type_byte, len(shape)]) + b"".join(
        int(d).to_bytes(4, "big") for d in shape) + data


@pytest.mark.parametrize("data, match", [
    # 65 dimensions of size 1: NumPy's ValueError got out
    (_idx([1] * 65, data=b"\x07"), "cannot be a NumPy array"),
    # dimensions whose product overflows int64 and wraps to the file's length
    (_idx([2**32 - 1] * 2 + [2**31] * 1 + [0], data=b""), "cannot be a NumPy array|truncated"),
    (_idx([2**32 - 1] * 3, data=bytes(7)), "more than the limit"),
])
def test_read_idx_headers_numpy_cannot_represent(tmp_path, data, match):
    from fastcnn.datasets import DatasetError

    for compress in (False, True):
        path = tmp_path / "odd.idx"
        path.write_bytes(gzip.compress(data) if compress else data)
        with pytest.raises(DatasetError, match=match):
            datasets.read_idx(path)


def test_read_idx_wrong_path():
    with pytest.raises(FileNotFoundError):
        datasets.read_idx("/nonexistent/train-images-idx3-ubyte")


@pytest.mark.parametrize("images, labels, match", [
    (_idx([3, 28 * 28], data=bytes(3 * 784)), _idx([3], data=bytes(3)), r"expected uint8 images \(N, H, W\)"),
    (_idx([3, 28, 28], 0x0C, bytes(3 * 784 * 4)), _idx([3], data=bytes(3)), "expected uint8 images"),
    (_idx([3, 28, 28], data=bytes(3 * 784)), _idx([3, 1], data=bytes(3)), r"expected uint8 labels \(N,\)"),
])
def test_dataset_files_of_the_wrong_dimensions(tmp_path, images, labels, match):
    from fastcnn.datasets import FILES, DatasetError

    (tmp_path / FILES["test"][0]).write_bytes(images)
    (tmp_path / FILES["test"][1]).write_bytes(labels)
    with pytest.raises(DatasetError, match=match):
        datasets.load("mnist", "test", data_dir=tmp_path)


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mean_pool_of_values_near_the_dtype_maximum(dtype, scale, simd):
    """The mean of finite values is finite: each term is scaled before the sum."""
    pool = fastcnn.MeanPool2D(scale)
    pool.build((1, scale, scale), dtype)
    big = np.finfo(dtype).max / 2
    out = pool.forward(np.full((1, 1, scale, scale), big, dtype))[0, 0, 0, 0]
    assert np.isfinite(out) and out == pytest.approx(big, rel=1e-6)
