"""Batch norm, dropout, bias-free convolutions, input normalisation, and the
state a model keeps besides its parameters (buffers): against an oracle
written from the definitions, central differences, PyTorch, and the same
bits for every thread count."""

import pickle

import numpy as np
import pytest

import fastcnn
from helpers import assert_close, import_torch


def bn_oracle(x, gamma, beta, eps):
    """Ioffe and Szegedy's batch norm of (N, C, ...) over all but axis 1, in float64."""
    x = x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    xhat = (x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * xhat + beta.reshape(shape), mu, var, xhat


def bn_layer(cls, shape, dtype, rng):
    layer = cls(shape[0], momentum=0.2, eps=1e-3, name="bn")
    layer.build(shape, dtype)
    layer.params["weight"][...] = rng.uniform(0.5, 1.5, shape[0])
    layer.params["bias"][...] = rng.uniform(-1, 1, shape[0])
    return layer


@pytest.mark.parametrize("cls, shape", [(fastcnn.BatchNorm2D, (3, 5, 7)),
                                        (fastcnn.BatchNorm1D, (6,))])
def test_batch_norm_against_the_definitions(cls, shape, dtype, rng):
    layer = bn_layer(cls, shape, dtype, rng)
    x = (rng.standard_normal((4,) + shape) * 3 + 1).astype(dtype)
    g, b = layer.params["weight"].astype(np.float64), layer.params["bias"].astype(np.float64)
    want, mu, var, xhat = bn_oracle(x, g, b, 1e-3)
    y = layer.forward(x)
    assert_close(y, want, dtype)
    m = x.size // shape[0]
    assert_close(layer.buffers["running_mean"], 0.2 * mu, dtype)
    assert_close(layer.buffers["running_var"], 0.8 + 0.2 * var * m / (m - 1), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    d = dy.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    dbeta, dgamma = d.sum(axis=axes), (d * xhat).sum(axis=axes)
    rs = (1, -1) + (1,) * (x.ndim - 2)
    want_dx = (g / np.sqrt(var + 1e-3)).reshape(rs) * (d - dbeta.reshape(rs) / m
                                                       - xhat * dgamma.reshape(rs) / m)
    assert_close(layer.grads["bias"], dbeta, dtype, scale=np.abs(d).sum())
    assert_close(layer.grads["weight"], dgamma, dtype, scale=np.abs(d * xhat).sum())
    assert_close(dx, want_dx, dtype, scale=np.abs(want_dx).max() + np.abs(d).max())


def test_batch_norm_at_inference_uses_the_running_estimates(rng):
    model = fastcnn.Sequential([fastcnn.BatchNorm2D(2, name="bn")], input_shape=(2, 3, 3),
                               dtype="float64")
    model.buffers["bn.running_mean"][...] = [1.0, -2.0]
    model.buffers["bn.running_var"][...] = [4.0, 0.25]
    model.params["bn.weight"][...] = [2.0, 3.0]
    x = rng.standard_normal((5, 2, 3, 3))
    before = {k: v.copy() for k, v in model.buffers.items()}
    y = model.forward(x)  # inference: the buffers are read, not changed
    want = (x - np.array([1.0, -2.0])[:, None, None]) / np.sqrt(
        np.array([4.0, 0.25])[:, None, None] + 1e-5) * np.array([2.0, 3.0])[:, None, None]
    np.testing.assert_allclose(y, want, rtol=1e-13)
    for k, v in before.items():
        np.testing.assert_array_equal(model.buffers[k], v)
    model.forward(x, training=True)  # training: the batch's statistics move them
    assert not np.array_equal(model.buffers["bn.running_mean"], before["bn.running_mean"])
    with pytest.raises(ValueError, match="more than one value per map"):
        fastcnn.Sequential([fastcnn.Flatten(), fastcnn.BatchNorm1D(18)], input_shape=(2, 3, 3),
                           ).backprop(x[:1], np.zeros((1, 18)))


def small_net(dtype="float64", seed=1, dropout=0.0, algorithm="auto"):
    return fastcnn.Sequential([
        fastcnn.Conv2D(2, 4, 3, padding=1, bias=False, algorithm=algorithm, name="c1"),
        fastcnn.BatchNorm2D(4, name="bn1"), fastcnn.ReLU(), fastcnn.MaxPool2D(2),
        fastcnn.Flatten(), fastcnn.Dropout(dropout, name="drop"),
        fastcnn.Dense(4 * 4 * 5, 6, name="fc"), fastcnn.Tanh(),
        fastcnn.BatchNorm1D(6, name="bn2"), fastcnn.Dense(6, 3, name="out"),
    ], input_shape=(2, 8, 10), dtype=dtype, seed=seed, loss="cross_entropy")


def test_gradients_through_batch_norm_are_central_differences(rng):
    model = small_net()
    for v in model.params.values():
        v += rng.uniform(-0.2, 0.2, v.shape)
    check = fastcnn.gradcheck(model, rng.random((5, 2, 8, 10)), rng.integers(0, 3, 5),
                              samples=12, seed=2)
    assert check.ok, check.errors


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_same_bits_for_every_thread_count(algorithm, threads, rng):
    x, y = rng.random((30, 2, 8, 10)).astype(np.float32), rng.integers(0, 3, 30)
    results = []
    for t in (1, 2):
        fastcnn.set_num_threads(t)
        model = small_net("float32", dropout=0.3, algorithm=algorithm)
        model.fit(x, y, epochs=2, batch_size=8, lr=0.1, progress=False)
        results.append({**model.params, **model.buffers})
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name], err_msg=name)


def test_torch_parity_of_batch_norm_training_and_inference(rng):
    torch = import_torch()
    model = small_net()
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(80, 6), nn.Tanh(),
                        nn.BatchNorm1d(6), nn.Linear(6, 3)).double()
    p = model.params
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(p["c1.weight"][:, :, ::-1, ::-1].copy()))
        for i, name in ((5, "fc"), (8, "out")):
            net[i].weight.copy_(torch.from_numpy(p[f"{name}.weight"]))
            net[i].bias.copy_(torch.from_numpy(p[f"{name}.bias"]))
    for _ in range(3):  # the running estimates after several batches
        x, y = rng.random((7, 2, 8, 10)), rng.integers(0, 3, 7)
        loss = model.backprop(x, y)
        net.zero_grad()
        tl = nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        tl.backward()
        assert loss == pytest.approx(tl.item(), rel=1e-12)
        grads = {"c1.weight": net[0].weight.grad.numpy()[:, :, ::-1, ::-1],
                 "bn1.weight": net[1].weight.grad, "bn1.bias": net[1].bias.grad,
                 "fc.weight": net[5].weight.grad, "fc.bias": net[5].bias.grad,
                 "bn2.weight": net[7].weight.grad, "bn2.bias": net[7].bias.grad,
                 "out.weight": net[8].weight.grad, "out.bias": net[8].bias.grad}
        for name, g in grads.items():
            np.testing.assert_allclose(model.grads[name], np.asarray(g), rtol=1e-10, atol=1e-12,
                                       err_msg=name)
    for ours, theirs in (("bn1", net[1]), ("bn2", net[7])):
        np.testing.assert_allclose(model.buffers[f"{ours}.running_mean"],
                                   theirs.running_mean.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(model.buffers[f"{ours}.running_var"],
                                   theirs.running_var.numpy(), rtol=1e-10)
    net.eval()
    x = rng.random((5, 2, 8, 10))
    np.testing.assert_allclose(model.forward(x), net(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_dropout(rng):
    layer = fastcnn.Dropout(0.25, name="d")
    layer.build((50, 40), "float64")
    layer.reset_parameters(np.random.default_rng(3))
    x = rng.random((8, 50, 40)) + 0.5
    y = layer.forward(x)
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8  # about 1 - p of the values
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-15)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(layer.backward(g), g * kept / 0.75, rtol=1e-15)
    assert not np.array_equal(layer.forward(x) != 0, kept)  # a new mask each pass
    # the same key and count, the same masks
    again = fastcnn.Dropout(0.25, name="d")
    again.build((50, 40), "float64")
    again.reset_parameters(np.random.default_rng(3))
    np.testing.assert_array_equal(again.forward(x), y)
    # inactive at inference
    model = fastcnn.Sequential([fastcnn.Flatten(), fastcnn.Dropout(0.5),
                                fastcnn.Dense(12, 2, name="d")],
                               input_shape=(1, 3, 4), dtype="float64", seed=0)
    z = rng.random((4, 1, 3, 4))
    np.testing.assert_array_equal(model.forward(z), model.forward(z))
    np.testing.assert_allclose(
        model.predict_scores(z),
        z.reshape(4, 12) @ model.params["d.weight"].T + model.params["d.bias"], rtol=1e-13)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        fastcnn.Dropout(1.0)


def test_a_trained_model_with_buffers_saves_loads_and_pickles(tmp_path, rng):
    model = small_net("float32", dropout=0.2)
    x, y = rng.random((20, 2, 8, 10)).astype(np.float32), rng.integers(0, 3, 20)
    model.fit(x, y, epochs=2, batch_size=5, lr=0.1, progress=False)
    assert set(model.buffers) == {"bn1.running_mean", "bn1.running_var", "drop.key",
                                  "drop.count", "bn2.running_mean", "bn2.running_var"}
    assert not set(model.buffers) & set(model.params)
    assert int(model.buffers["drop.count"][0]) == 8
    model.save(tmp_path / "m.npz")
    for other in (fastcnn.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(other.predict_scores(x), model.predict_scores(x))
        for name, b in model.buffers.items():
            np.testing.assert_array_equal(other.buffers[name], b)
    # a file without the buffers is refused, naming them
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files if "bn2.running_var" not in k}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing buffers \['bn2.running_var'\]"):
        fastcnn.load(tmp_path / "bad.npz")


def test_resume_with_dropout_and_batch_norm_is_bit_for_bit(tmp_path, rng):
    x, y = rng.random((24, 2, 8, 10)).astype(np.float32), rng.integers(0, 3, 24)
    straight = small_net("float32", dropout=0.3)
    straight.fit(x, y, epochs=3, batch_size=6, lr=0.1, progress=False)
    first = small_net("float32", dropout=0.3)
    first.fit(x, y, epochs=1, batch_size=6, lr=0.1, progress=False, checkpoint_dir=tmp_path)
    later = small_net("float32", dropout=0.3, seed=7)
    later.fit(x, y, epochs=3, batch_size=6, lr=0.1, progress=False, checkpoint_dir=tmp_path,
              resume=True)
    for name, v in {**straight.params, **straight.buffers}.items():
        np.testing.assert_array_equal({**later.params, **later.buffers}[name], v, err_msg=name)


def test_conv_without_bias(rng):
    conv = fastcnn.Conv2D(2, 3, 3, bias=False, name="c")
    conv.build((2, 6, 6), "float64")
    assert list(conv.params) == ["weight"] and conv.get_config()["bias"] is False
    conv.reset_parameters(np.random.default_rng(0))
    with_bias = fastcnn.Conv2D(2, 3, 3, name="c")
    with_bias.build((2, 6, 6), "float64")
    with_bias.params["weight"][...] = conv.params["weight"]
    x = rng.random((2, 2, 6, 6))
    np.testing.assert_array_equal(conv.forward(x), with_bias.forward(x))
    g = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_array_equal(conv.backward(g), with_bias.backward(g))
    np.testing.assert_array_equal(conv.grads["weight"], with_bias.grads["weight"])
    assert "no bias" in conv.describe()
    with pytest.raises(TypeError, match="bias"):
        fastcnn.Conv2D(2, 3, 3, bias="no")


def test_normalize_travels_with_the_model(tmp_path, rng):
    x = rng.random((10, 3, 4, 4))
    mean, std = [0.1, 0.2, 0.3], [0.5, 1.0, 2.0]
    model = fastcnn.Sequential([fastcnn.Normalize(mean, std), fastcnn.Flatten(),
                                fastcnn.Dense(48, 2, name="d")], input_shape=(3, 4, 4),
                               dtype="float64")
    plain = fastcnn.Sequential([fastcnn.Flatten(), fastcnn.Dense(48, 2, name="d")],
                               input_shape=(3, 4, 4), dtype="float64")
    plain.params["d.weight"][...] = model.params["d.weight"]
    standardised = (x - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(model.forward(x), plain.forward(standardised), rtol=1e-13)
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(fastcnn.load(tmp_path / "m.npz").forward(x), model.forward(x))
    check = fastcnn.gradcheck(model, x[:3], [0, 1, 0], samples=5)
    assert check.ok
    with pytest.raises(ValueError, match="std must be > 0"):
        fastcnn.Normalize(0.0, 0.0)
    with pytest.raises(ValueError, match="3 channels"):
        fastcnn.Sequential([fastcnn.Normalize([0, 0], [1, 1])], input_shape=(3, 2, 2))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", None])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inference_folds_batch_norm_into_the_convolution(activation, bias, dtype, rng):
    """predict runs Conv2D -> BatchNorm2D -> activation as one convolution
    with folded kernels; the layers one by one (activations()) agree."""
    L = fastcnn.layers
    tail = [{"relu": L.ReLU, "sigmoid": L.Sigmoid}[activation]()] if activation else []
    model = fastcnn.Sequential(
        [L.Conv2D(3, 16, 3, padding=1, bias=bias, stride=1), L.BatchNorm2D(16), *tail,
         L.Conv2D(16, 8, 3, stride=2, bias=bias), L.BatchNorm2D(8), L.Flatten(),
         L.Dense(8 * 4 * 4, 5)], input_shape=(3, 10, 10), dtype=dtype, loss="cross_entropy")
    assert set(model._folds) == {0, 2 + len(tail)}
    x = rng.random((7, 3, 10, 10)).astype(dtype)
    y = rng.integers(0, 5, 7)
    model.fit(x, y, epochs=2, batch_size=4, progress=False)  # running estimates move off 0, 1
    for layer in model.layers:
        if isinstance(layer, L.BatchNorm2D):
            layer.params["weight"][...] = rng.uniform(0.5, 2, layer.maps)
            layer.params["bias"][...] = rng.uniform(-1, 1, layer.maps)
    one_by_one = model.activations(x)[model.layers[-1].name]
    folded = model.forward(x)
    assert not np.array_equal(folded, one_by_one) or dtype == "float64"
    assert_close(folded, one_by_one, dtype, rtol=1e-5 if dtype == "float32" else 1e-12)
    np.testing.assert_array_equal(model.predict_proba(x).argmax(1), model.predict(x))


def test_only_conv_batch_norm_pairs_fold():
    L = fastcnn.layers
    model = fastcnn.Sequential(
        [L.Conv2D(1, 4, 3, activation="relu"), L.BatchNorm2D(4),  # conv has its own activation
         L.Conv2D(4, 4, 3), L.ReLU(), L.BatchNorm2D(4),  # activation between them
         L.Conv2D(4, 4, 3), L.BatchNorm2D(4), L.Tanh(), L.Flatten(), L.Dense(4 * 4 * 4, 2)],
        input_shape=(1, 10, 10))
    assert model._folds == {5: (7, fastcnn._kernels.ACTIVATION_CODES["tanh"])}
