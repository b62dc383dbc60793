"""The whole network: backprop against the oracle, central-difference gradient
checks (as DeepLearnToolbox's cnnnumgradcheck), SGD, fit, determinism."""

import numpy as np
import pytest

import fastcnn
import oracle
from helpers import assert_close

SEED_SHAPES = {"C1.weight": (6, 1, 5, 5), "C1.bias": (6,), "C2.weight": (12, 6, 5, 5),
               "C2.bias": (12,), "FC.weight": (10, 192), "FC.bias": (10,)}


def test_seed_cnn_architecture():
    m = fastcnn.seed_cnn(seed=0, dtype="float64")
    assert m.num_parameters() == 3898
    assert list(m.params) == list(SEED_SHAPES) == list(m.grads)
    assert {k: v.shape for k, v in m.params.items()} == SEED_SHAPES
    assert [layer.output_shape for layer in m.layers] == [
        (6, 24, 24), (6, 12, 12), (12, 8, 8), (12, 4, 4), (192,), (10,)]
    text = m.summary()
    for name in ("C1", "S1", "C2", "S2", "FC", "3898", "(N, 6, 24, 24)", "(N, 10)"):
        assert name in text


def test_seed_cnn_init_follows_eq_1_to_3():
    m = fastcnn.seed_cnn(seed=7, dtype="float64")
    bounds = {"C1.weight": np.sqrt(6 / (7 * 25)), "C2.weight": np.sqrt(6 / (18 * 25)),
              "FC.weight": np.sqrt(6 / 202)}
    for name, bound in bounds.items():
        w = m.params[name]
        assert np.abs(w).max() <= bound
        # uniform on (-bound, bound): spread over most of the interval, mean near 0
        assert np.abs(w).max() > 0.9 * bound and abs(w.mean()) < 0.2 * bound
    for name in ("C1.bias", "C2.bias", "FC.bias"):
        assert np.all(m.params[name] == 0)


def test_same_seed_same_weights_both_dtypes():
    a64, b64 = fastcnn.seed_cnn(seed=3, dtype="float64"), fastcnn.seed_cnn(seed=3, dtype="float64")
    a32 = fastcnn.seed_cnn(seed=3, dtype="float32")
    c64 = fastcnn.seed_cnn(seed=4, dtype="float64")
    for k in SEED_SHAPES:
        np.testing.assert_array_equal(a64.params[k], b64.params[k])
        np.testing.assert_array_equal(a32.params[k], a64.params[k].astype(np.float32))
        assert a32.params[k].dtype == np.float32
    assert not np.array_equal(a64.params["C1.weight"], c64.params["C1.weight"])


def test_backprop_matches_oracle(dtype, rng, simd):
    m = fastcnn.seed_cnn(seed=1, dtype=dtype)
    for v in m.params.values():  # non-zero biases exercise eq. (45), (64) fully
        v += rng.uniform(-0.2, 0.2, v.shape).astype(dtype)
    x = rng.random((5, 1, 28, 28)).astype(dtype)
    labels = rng.integers(0, 10, 5)
    loss = m.backprop(x, labels)
    want_loss, want = oracle.seed_cnn_backprop(m.params, x, labels)
    assert_close(loss, want_loss, dtype)
    for name in SEED_SHAPES:
        assert_close(m.grads[name], want[name], dtype)


def test_forward_matches_backprop_outputs(rng):
    m = fastcnn.seed_cnn(seed=2, dtype="float64")
    x = rng.random((3, 1, 28, 28))
    yhat = m.forward(x)
    assert yhat.shape == (3, 10)
    assert np.all((yhat > 0) & (yhat < 1))
    onehot = np.eye(10)[[1, 2, 3]]
    assert m.backprop(x, [1, 2, 3]) == pytest.approx(0.5 * np.sum((yhat - onehot) ** 2) / 3, rel=1e-14)


def test_onehot_targets_equal_labels(rng):
    m = fastcnn.seed_cnn(seed=2, dtype="float64")
    x = rng.random((4, 1, 28, 28))
    labels = np.array([0, 9, 3, 3])
    loss = m.backprop(x, labels)
    g = {k: v.copy() for k, v in m.grads.items()}
    assert m.backprop(x, np.eye(10)[labels]) == loss
    for k in g:
        np.testing.assert_array_equal(m.grads[k], g[k])


def numerical_gradient(model, x, labels, name, index, eps=1e-5):
    """Fourth-order central difference of the loss in one parameter."""
    p = model.params[name]
    saved = p[index]
    losses = []
    for step in (-2, -1, 1, 2):
        p[index] = saved + step * eps
        losses.append(model.backprop(x, labels))
    p[index] = saved
    return (losses[0] - 8 * losses[1] + 8 * losses[2] - losses[3]) / (12 * eps)


def check_gradients(model, x, labels, per_param=None, rng=None):
    model.backprop(x, labels)
    analytic = {k: v.copy() for k, v in model.grads.items()}
    for name, p in model.params.items():
        indices = list(np.ndindex(p.shape))
        if per_param is not None and len(indices) > per_param:
            indices = [indices[i] for i in rng.choice(len(indices), per_param, replace=False)]
        for index in indices:
            num = numerical_gradient(model, x, labels, name, index)
            ana = analytic[name][index]
            assert abs(num - ana) <= 1e-8 * max(1.0, abs(num)) + 1e-9, (name, index, num, ana)


def test_gradcheck_small_network(rng):
    """Every parameter of a small network with both conv paths (general and
    5x5), odd sizes and both activations."""
    model = fastcnn.Sequential(
        [fastcnn.Conv2D(2, 3, 3, activation="sigmoid"), fastcnn.MeanPool2D(2),
         fastcnn.Conv2D(3, 2, (2, 5)), fastcnn.Sigmoid(), fastcnn.Flatten(),
         fastcnn.Dense(2 * 4 * 2, 4, activation="sigmoid")],
        input_shape=(2, 13, 14), dtype="float64", seed=0)
    for v in model.params.values():
        v += rng.uniform(-0.3, 0.3, v.shape)
    x = rng.random((3, 2, 13, 14))
    check_gradients(model, x, rng.integers(0, 4, 3))


def test_gradcheck_seed_cnn(rng):
    """cnnnumgradcheck on the paper's network: a sample of every parameter tensor."""
    model = fastcnn.seed_cnn(seed=0, dtype="float64")
    for v in model.params.values():
        v += rng.uniform(-0.1, 0.1, v.shape)
    x = rng.random((2, 1, 28, 28))
    check_gradients(model, x, np.array([3, 7]), per_param=40, rng=rng)


def test_fastcnn_gradcheck(rng):
    """fastcnn.gradcheck agrees on the paper's network, finds a wrong
    gradient, leaves the parameters as they were and refuses float32."""
    model = fastcnn.seed_cnn(seed=0, dtype="float64")
    for v in model.params.values():
        v += rng.uniform(-0.1, 0.1, v.shape)
    before = model.flat_params.copy()
    x, labels = rng.random((2, 1, 28, 28)), np.array([3, 7])
    check = fastcnn.gradcheck(model, x, labels, samples=10, seed=1)
    assert check.ok and check.worst < 1e-6
    assert list(check.entries) == list(model.params) and check.entries["C1.bias"] == 6
    np.testing.assert_array_equal(model.flat_params, before)
    # the same entries for the same seed
    assert fastcnn.gradcheck(model, x, labels, samples=10, seed=1).errors == check.errors

    class Halved(fastcnn.Dense):
        def backward_into(self, f, y, grad, dx, s, threads):
            dx = super().backward_into(f, y, grad, dx, s, threads)
            self.grads["weight"] *= 0.5  # a wrong derivation
            return dx

    bad = fastcnn.Sequential([fastcnn.Flatten(), Halved(784, 10, activation="sigmoid", name="D")],
                             input_shape=(1, 28, 28), dtype="float64", seed=0)
    check = fastcnn.gradcheck(bad, x, labels, samples=10)
    assert not check.ok and check.errors["D.weight"] > 0.1 and check.errors["D.bias"] < 1e-6
    with pytest.raises(ValueError, match="float64"):
        fastcnn.gradcheck(fastcnn.seed_cnn(), x, labels)


def test_sgd_step_is_eq_65_to_70(rng):
    m = fastcnn.seed_cnn(seed=0, dtype="float64")
    m.backprop(rng.random((4, 1, 28, 28)), [0, 1, 2, 3])
    before = {k: v.copy() for k, v in m.params.items()}
    fastcnn.SGD(m, lr=0.3).step()
    for k in before:
        np.testing.assert_array_equal(m.params[k], before[k] - 0.3 * m.grads[k])


def test_params_are_the_models_arrays(rng):
    m = fastcnn.seed_cnn(seed=0, dtype="float64")
    x = rng.random((2, 1, 28, 28))
    m.params["FC.bias"][...] = 30.0
    assert np.all(m.forward(x) > 0.999)
    assert m.params["FC.bias"] is m.layers[-1].params["bias"]


def test_fit_history_and_smoothing(rng):
    m = fastcnn.seed_cnn(seed=0, dtype="float64")
    x, y = rng.random((7, 1, 28, 28)), rng.integers(0, 10, 7)
    h = m.fit(x, y, epochs=3, batch_size=3, lr=1.0, seed=0, progress=False)
    assert len(h.loss) == 9 and len(h.smoothed_loss) == 9 and len(h.epoch_seconds) == 3
    assert h.smoothed_loss[0] == h.loss[0]
    for i in range(1, 9):
        assert h.smoothed_loss[i] == pytest.approx(0.99 * h.smoothed_loss[i - 1] + 0.01 * h.loss[i])


def test_fit_is_reproducible_and_seed_matters(rng):
    x, y = rng.random((20, 1, 28, 28)), rng.integers(0, 10, 20)
    runs = []
    for seed in (0, 0, 1):
        m = fastcnn.seed_cnn(seed=0, dtype="float64")
        m.fit(x, y, epochs=2, batch_size=4, seed=seed, progress=False)
        runs.append(m.params["C1.weight"].copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_fit_equals_manual_backprop_and_sgd(rng):
    x, y = rng.random((6, 1, 28, 28)), rng.integers(0, 10, 6)
    a = fastcnn.seed_cnn(seed=0, dtype="float64")
    a.fit(x, y, epochs=1, batch_size=4, lr=0.5, seed=11, progress=False)
    b = fastcnn.seed_cnn(seed=0, dtype="float64")
    order = np.random.default_rng(11).permutation(6)
    for idx in (order[:4], order[4:]):
        b.backprop(x[idx], y[idx])
        fastcnn.SGD(b, lr=0.5).step()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_bitwise_identical_across_thread_counts(dtype_name, threads, rng, simd):
    x, y = rng.random((64, 1, 28, 28)), rng.integers(0, 10, 64)
    results = []
    for t in (1, 2, 3):
        fastcnn.set_num_threads(t)
        m = fastcnn.seed_cnn(seed=5, dtype=dtype_name)
        m.fit(x, y, epochs=2, batch_size=13, seed=5, progress=False)
        results.append({k: v.copy() for k, v in m.params.items()})
    for other in results[1:]:
        for k in results[0]:
            np.testing.assert_array_equal(results[0][k], other[k])


def test_predict_and_evaluate(rng):
    m = fastcnn.seed_cnn(seed=0, dtype="float64")
    x = rng.random((30, 1, 28, 28))
    scores = m.forward(x)
    labels = m.predict(x, batch_size=7)
    assert labels.dtype == np.int64 and labels.shape == (30,)
    np.testing.assert_array_equal(labels, scores.argmax(1))
    assert m.evaluate(x, labels) == 0.0
    wrong = (labels + 1) % 10
    assert m.evaluate(x, wrong) == 1.0
    mixed = labels.copy()
    mixed[:6] = wrong[:6]
    assert m.evaluate(x, mixed, batch_size=4) == pytest.approx(0.2)


def test_generic_sequential_naming_and_errors():
    m = fastcnn.Sequential([fastcnn.Conv2D(1, 2, 3), fastcnn.MeanPool2D(), fastcnn.Conv2D(2, 2, 3),
                            fastcnn.Flatten(), fastcnn.Dense(8, 3), fastcnn.Dense(3, 2)],
                           input_shape=(1, 10, 10))
    assert list(m.params) == ["C1.weight", "C1.bias", "C2.weight", "C2.bias", "F1.weight",
                              "F1.bias", "F2.weight", "F2.bias"]
    with pytest.raises(ValueError, match="unique"):
        fastcnn.Sequential([fastcnn.Dense(4, 4, name="a"), fastcnn.Dense(4, 4, name="a")],
                           input_shape=(1, 2, 2))
    layers = [fastcnn.Conv2D(1, 2, 3), fastcnn.Flatten(), fastcnn.Dense(5, 2)]
    with pytest.raises(ValueError, match="Dense.*expects 5 input features, got .*128"):
        fastcnn.Sequential(layers, input_shape=(1, 10, 10))
    # the failed attempt leaves the layers reusable
    layers[2] = fastcnn.Dense(128, 2)
    assert fastcnn.Sequential(layers, input_shape=(1, 10, 10)).output_shape == (2,)


def test_training_steps_allocate_nothing(rng):
    """fit's inner loop reuses its buffers: after the first step, steps leave
    nothing behind and allocate almost nothing on the way (a few small
    Python objects)."""
    import tracemalloc

    m = fastcnn.seed_cnn(seed=0)
    x = rng.random((50, 1, 28, 28)).astype(np.float32)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 50)]
    sgd = fastcnn.SGD(m, lr=1.0)
    ws = m.workspace(50, train=True)
    m.train_batch(x, t, ws)
    sgd.step()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            m.train_batch(x, t, ws)
            sgd.step()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 8 * 1024
    assert current - base < 2 * 1024
