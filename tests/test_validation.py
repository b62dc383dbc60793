"""Bad input gets a clear exception; awkward but valid input (non-contiguous,
read-only, memory-mapped, other float dtypes) gets the same answer as clean input."""

import numpy as np
import pytest

import fastcnn
from fastcnn import _conv


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
    (dict(batch_size=5), ValueError, "larger than the 4 training images"),
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
