"""The layers beyond the paper: activations, padding and stride, max pooling,
softmax, cross-entropy; against the oracle, by central differences, for
every algorithm and both dtypes, and bit for bit across thread counts."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastcnn
import oracle
from helpers import assert_close

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
ACTS = [None, "sigmoid", "relu", "tanh", "tanh_opt"]


def conv_case(shape, activation, stride, padding, algorithm, dtype, seed=0):
    n, c, m, h, w, kh, kw = shape
    rng = np.random.default_rng(seed)
    layer = fastcnn.Conv2D(c, m, (kh, kw), activation=activation, stride=stride, padding=padding,
                           algorithm=algorithm, name="C")
    layer.build((c, h, w), dtype)
    layer.params["weight"][...] = rng.uniform(-0.5, 0.5, layer.params["weight"].shape)
    layer.params["bias"][...] = rng.uniform(-0.5, 0.5, m)
    return layer, rng.random((n, c, h, w)).astype(dtype), rng


def check_conv(shape, activation, stride, padding, algorithm, dtype, seed=0):
    dtype = np.dtype(dtype)
    layer, x, rng = conv_case(shape, activation, stride, padding, algorithm, dtype, seed)
    k, b, pads = layer.params["weight"], layer.params["bias"], layer._pads
    y = layer.forward(x)
    rtol = TOL[dtype] if algorithm != "direct" else (1e-12 if dtype == np.float64 else 1e-5)
    assert_close(y, oracle.conv_general(x, k, b, stride, pads, activation), dtype, rtol=rtol)
    grad = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(grad)
    dk, db, da = oracle.conv_general_grads(x, k, y, grad, stride, pads, activation)
    # a gradient whose every term is zero (all strided positions in the
    # padding) is zero to the FFT's rounding of the terms' size, not exactly
    fft = algorithm == "fft"
    assert_close(layer.grads["weight"], dk, dtype, rtol=rtol,
                 scale=fft * float(np.abs(x).max() * np.abs(grad).max()))
    assert_close(layer.grads["bias"], db, dtype, rtol=rtol)
    assert_close(dx, da, dtype, rtol=rtol, scale=fft * float(np.abs(k).max() * np.abs(grad).max()))


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "fft"])
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("stride, padding", [(1, "valid"), (1, "same"), (2, 0), (2, 1), (3, (2, 1)),
                                             (1, (0, 3))])
def test_conv_activation_stride_padding(stride, padding, activation, algorithm, dtype):
    check_conv((2, 3, 4, 11, 13, 3, 4), activation, stride, padding, algorithm, dtype)


@given(n=st.integers(1, 3), c=st.integers(1, 4), m=st.integers(1, 4), kh=st.integers(1, 6),
       kw=st.integers(1, 6), extra=st.integers(0, 9), stride=st.integers(1, 3),
       pad=st.integers(0, 3), same=st.booleans(), activation=st.sampled_from(ACTS),
       algorithm=st.sampled_from(["direct", "im2col", "fft"]),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**31))
def test_conv_random(n, c, m, kh, kw, extra, stride, pad, same, activation, algorithm, dtype, seed):
    padding = "same" if same and stride == 1 else pad
    check_conv((n, c, m, kh + extra, kw + extra + 1, kh, kw), activation, stride, padding,
               algorithm, dtype, seed)


def test_conv_padding_and_stride_arguments():
    assert fastcnn.Conv2D(1, 1, 4, padding="same")._pads == (1, 2, 1, 2)  # as PyTorch
    with pytest.raises(ValueError, match="'same' needs stride 1"):
        fastcnn.Conv2D(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be"):
        fastcnn.Conv2D(1, 1, 3, padding="full")
    with pytest.raises(ValueError, match="padding must be >= 0"):
        fastcnn.Conv2D(1, 1, 3, padding=-1)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        fastcnn.Conv2D(1, 1, 3, stride=0)
    layer = fastcnn.Conv2D(2, 3, 3, stride=2, padding=1)
    assert fastcnn.Sequential([layer], input_shape=(2, 9, 8)).output_shape == (3, 5, 4)
    assert layer.algorithm_used == "direct"  # auto: computes only the strided positions
    with pytest.raises(ValueError, match="smaller than the 5x5 kernel even with the padding"):
        fastcnn.Sequential([fastcnn.Conv2D(1, 1, 5, padding=1)], input_shape=(1, 2, 2))


@pytest.mark.parametrize("size, stride", [(2, 2), (3, 3), (3, 2), (2, 1), (1, 1)])
def test_max_pool(size, stride, dtype, rng):
    layer = fastcnn.MaxPool2D(size, stride)
    layer.build((3, 9, 10), dtype)
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    y = layer.forward(x)
    want, arg = oracle.max_pool(x, size, stride)
    np.testing.assert_array_equal(y, want.astype(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(layer.backward(g), oracle.max_unpool(g, arg, (9, 10)), dtype)


def test_max_pool_ties_go_to_the_first_and_nan_wins():
    layer = fastcnn.MaxPool2D(2)
    layer.build((1, 2, 4), "float64")
    x = np.array([[[[1.0, 1.0, 0.0, np.nan], [1.0, 0.5, 7.0, 0.0]]]])
    y = layer.forward(x)
    assert y[0, 0, 0, 0] == 1.0 and np.isnan(y[0, 0, 0, 1])
    dx = layer.backward(np.array([[[[2.0, 3.0]]]]))
    np.testing.assert_array_equal(dx, [[[[2.0, 0, 0, 3.0], [0, 0, 0, 0]]]])


@pytest.mark.parametrize("hw", [(28, 28), (9, 10), (80, 64), (6, 7), (4, 4100)])
def test_max_pool_2x2_fast_path_picks_the_scans_pixel(hw, dtype, rng, simd):
    """The vectorised 2x2 kernel (even widths; rows in blocks, so (80, 64)
    spans two) against the scan of the oracle, on pixels full of ties and
    NaNs, on the portable and the AVX2 kernels."""
    x = rng.integers(0, 3, (3, 2) + hw).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    layer = fastcnn.MaxPool2D(2)
    layer.build((2,) + hw, dtype)
    y = layer.forward(x)
    want, arg = oracle.max_pool(x, 2, 2)
    np.testing.assert_array_equal(y, want.astype(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(layer.backward(g), oracle.max_unpool(g, arg, hw).astype(dtype))


@pytest.mark.parametrize("cls, name", [(fastcnn.Sigmoid, "sigmoid"), (fastcnn.ReLU, "relu"),
                                       (fastcnn.Tanh, "tanh")])
def test_activation_layers(cls, name, dtype, rng):
    layer = cls()
    layer.build((3, 4, 5), dtype)
    z = (rng.standard_normal((2, 3, 4, 5)) * 4).astype(dtype)
    z[0, 0, 0, :4] = [0.0, 1e-9, -1e-9, 0.05]  # tanh's series and relu's edge
    f, df = oracle.ACTIVATIONS[name]
    y = layer.forward(z)
    assert_close(y, f(z.astype(np.float64)), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(layer.backward(g), g * df(y.astype(np.float64)), dtype)


def test_tanh_is_accurate_near_zero_and_saturates():
    layer = fastcnn.Tanh()
    layer.build((7,), "float64")
    z = np.array([[1e-300, -1e-12, 0.0999, 0.1001, 20.0, -400.0, np.inf]])
    y = layer.forward(z)
    np.testing.assert_allclose(y, np.tanh(z), rtol=1e-15)
    scaled = fastcnn.Tanh(scaled=True)
    scaled.build((3,), "float64")
    w = np.array([[0.3, -2.0, 5.0]])
    np.testing.assert_allclose(scaled.forward(w), 1.7159 * np.tanh(2 / 3 * w), rtol=1e-14)


def test_softmax_layer(dtype, rng):
    layer = fastcnn.Softmax()
    layer.build((6,), dtype)
    z = (rng.standard_normal((4, 6)) * 30).astype(dtype)  # large scores: no overflow
    y = layer.forward(z)
    assert_close(y, oracle.softmax(z), dtype)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)
    g = rng.standard_normal(y.shape).astype(dtype)
    y64 = y.astype(np.float64)
    want = y64 * (g - (g * y64).sum(axis=1, keepdims=True))
    assert_close(layer.backward(g), want, dtype)
    with pytest.raises(ValueError, match="Flatten"):
        fastcnn.Sequential([fastcnn.Softmax()], input_shape=(1, 2, 3))


def test_cross_entropy_loss(dtype, rng):
    from fastcnn import losses

    z = (rng.standard_normal((5, 7)) * 50).astype(dtype)  # stable where softmax underflows
    t = np.eye(7, dtype=dtype)[rng.integers(0, 7, 5)]
    t[4] = rng.dirichlet(np.ones(7))  # soft targets too
    loss, grad = losses.cross_entropy(z, t)
    want_loss, want_grad = oracle.cross_entropy(z, t)
    assert loss == pytest.approx(want_loss, rel=1e-12 if dtype == np.float64 else 1e-5)
    assert_close(grad, want_grad, dtype)


def small_net(algorithm="auto", loss="cross_entropy", dtype="float64"):
    return fastcnn.Sequential(
        [fastcnn.Conv2D(3, 4, 3, activation="relu", padding="same", algorithm=algorithm),
         fastcnn.MaxPool2D(2),
         fastcnn.Conv2D(4, 5, 3, activation="tanh", stride=2, padding=1, algorithm=algorithm),
         fastcnn.Flatten(), fastcnn.Dense(5 * 3 * 3, 6, activation="tanh_opt"),
         fastcnn.Dense(6, 4, activation=None if loss == "cross_entropy" else "sigmoid")],
        input_shape=(3, 10, 11), dtype=dtype, seed=3, loss=loss)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "fft"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_gradcheck(algorithm, loss, rng):
    model = small_net(algorithm, loss)
    for p in model.params.values():
        p += rng.uniform(-0.2, 0.2, p.shape)
    x, labels = rng.random((3, 3, 10, 11)), np.array([0, 3, 1])
    model.backprop(x, labels)
    analytic = {k: v.copy() for k, v in model.grads.items()}
    for name, p in model.params.items():
        flat = p.reshape(-1)
        for i in rng.choice(flat.size, min(12, flat.size), replace=False):
            saved, eps = flat[i], 1e-6
            flat[i] = saved + eps
            up = model.backprop(x, labels)
            flat[i] = saved - eps
            down = model.backprop(x, labels)
            flat[i] = saved
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - analytic[name].reshape(-1)[i]) <= 1e-6 * max(1, abs(numeric)), name


def test_cross_entropy_model(rng):
    model = small_net()
    x = rng.random((6, 3, 10, 11))
    proba = model.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_array_equal(model.predict(x), proba.argmax(1))
    loss = model.backprop(x, [0, 1, 2, 3, 0, 1])
    assert loss == pytest.approx(oracle.cross_entropy(model.forward(x), np.eye(4)[[0, 1, 2, 3, 0, 1]])[0])
    with pytest.raises(ValueError, match="applies the softmax itself"):
        fastcnn.Sequential([fastcnn.Flatten(), fastcnn.Dense(4, 2, activation="sigmoid")],
                           input_shape=(1, 2, 2), loss="cross_entropy")
    with pytest.raises(ValueError, match="loss must be one of"):
        fastcnn.Sequential([fastcnn.Flatten()], input_shape=(1, 2, 2), loss="hinge")


def test_multichannel_end_to_end(tmp_path, rng, threads):
    """(N, 3, 32, 32) through LeNet-5: fit, evaluate, save, load; the same
    bits on 1 and 2 threads, with max pooling, ReLU and Adam."""
    from fastcnn.models import lenet5

    x = rng.random((40, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    params = []
    for t in (1, 2):
        fastcnn.set_num_threads(t)
        model = lenet5(input_shape=(3, 32, 32))
        model.fit(x, y, epochs=2, batch_size=8, progress=False, optimizer=fastcnn.Adam(model))
        params.append({k: v.copy() for k, v in model.params.items()})
    for k in params[0]:
        np.testing.assert_array_equal(params[0][k], params[1][k])
    assert 0 <= model.evaluate(x, y) <= 1
    model.save(tmp_path / "lenet.npz")
    again = fastcnn.load(tmp_path / "lenet.npz")
    np.testing.assert_array_equal(again.predict_proba(x), model.predict_proba(x))
    assert again.loss == "cross_entropy" and again.get_config() == model.get_config()


def test_lenet5_shapes():
    from fastcnn.models import lenet5

    assert lenet5().num_parameters() == 61706
    assert [layer.output_shape for layer in lenet5().layers] == [
        (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (400,), (120,), (84,), (10,)]
    assert lenet5(input_shape=(3, 32, 32)).layers[0].output_shape == (6, 28, 28)
    assert isinstance(lenet5(pooling="mean").layers[1], fastcnn.MeanPool2D)
    assert lenet5(loss="mse").layers[-1].activation == "sigmoid"
    with pytest.raises(ValueError, match="pooling"):
        lenet5(pooling="median")
    with pytest.raises(ValueError, match="at least 28x28"):
        lenet5(input_shape=(1, 12, 12))
