"""Fixed training runs whose results must not change under a refactoring.

    python tools/fixed_runs.py record runs.json    # before the change
    python tools/fixed_runs.py check runs.json     # after it: every digest equal

Each run trains a model on seeded synthetic images and records SHA-256
digests of its trained parameters, its per-batch losses and its predictions,
on both SIMD paths. The digests depend on the CPU's BLAS and FFT code for
the im2col and FFT runs, so compare records made on the same machine.
"""

import hashlib
import json
import sys
import tempfile

import numpy as np

import fastcnn
from fastcnn import models
from fastcnn.callbacks import EarlyStopping


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def data(n, shape=(1, 28, 28), classes=10, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + shape).astype(dtype), rng.integers(0, classes, n)


def custom(seed, dtype):
    L = fastcnn
    return fastcnn.Sequential([
        L.Conv2D(3, 5, 3, activation="relu", padding="same", name="a"),
        L.MaxPool2D(3, stride=2),
        L.Conv2D(5, 4, (3, 2), activation="tanh", stride=2, padding=1, algorithm="im2col"),
        L.Tanh(scaled=True),
        L.Conv2D(4, 6, 2, algorithm="fft"),
        L.Sigmoid(),
        L.MeanPool2D(2),
        L.Flatten(),
        L.Dense(12, 7, activation="relu"),
        L.ReLU(),
        L.Dense(7, 5),
        L.Softmax(),
    ], input_shape=(3, 17, 19), dtype=dtype, seed=seed)


def runs():
    x, y = data(700)
    x64 = x.astype("float64")
    xc, yc = data(300, (3, 17, 19), 5)
    out = {}

    def record(name, model, history, xs, ys):
        out[name] = {
            "params": digest(*model.params.values()),
            "loss": digest(np.array(history.loss)),
            "scores": digest(model.predict_scores(xs[:200])),
            "error": model.evaluate(xs[:200], ys[:200]),
        }

    for algo in ("direct", "im2col", "fft"):
        m = fastcnn.seed_cnn(seed=1, algorithm=algo)
        h = m.fit(x, y, epochs=2, batch_size=50, seed=3, progress=False)
        record(f"seed_cnn-f32-{algo}", m, h, x, y)
    m = fastcnn.seed_cnn(seed=2, dtype="float64")
    h = m.fit(x64, y, epochs=1, batch_size=33, lr=0.5, seed=1, progress=False,
              validation_data=(x64[:100], y[:100]))
    record("seed_cnn-f64-batch33", m, h, x64, y)
    m = models.lenet5(seed=0)
    h = m.fit(x, y, epochs=2, batch_size=64, optimizer=fastcnn.Adam(m, lr=1e-3), seed=5,
              progress=False)
    record("lenet5-adam", m, h, x, y)
    m = models.lenet5(seed=1, dtype="float64", activation="tanh", pooling="mean", loss="mse")
    h = m.fit(x64, y, epochs=3, batch_size=40,
              optimizer=fastcnn.SGD(m, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
              schedule=fastcnn.StepLR(2, 0.5), seed=2, progress=False)
    record("lenet5-f64-nesterov-steplr", m, h, x64, y)
    m = custom(3, "float32")
    h = m.fit(xc, yc, epochs=2, batch_size=32, optimizer=fastcnn.Adam(m, lr=1e-2),
              schedule=fastcnn.CosineLR(2), seed=4, progress=False)
    record("custom-f32", m, h, xc, yc)
    m = custom(4, "float64")
    h = m.fit(xc.astype("float64"), yc, epochs=1, batch_size=300, lr=0.3, seed=4,
              progress=False)
    record("custom-f64-one-batch", m, h, xc.astype("float64"), yc)
    with tempfile.TemporaryDirectory() as d:
        m = fastcnn.seed_cnn(seed=5)
        m.fit(x, y, epochs=2, batch_size=25, seed=6, progress=False, checkpoint_dir=d,
              validation_data=(x[:100], y[:100]))
        m = fastcnn.seed_cnn(seed=0)
        stop = EarlyStopping("val_error", patience=1)
        h = m.fit(x, y, epochs=5, batch_size=25, seed=6, progress=False, checkpoint_dir=d,
                  resume=True, validation_data=(x[:100], y[:100]), callbacks=[stop])
        record("seed_cnn-resumed-early-stopping", m, h, x, y)
        out["seed_cnn-resumed-early-stopping"]["val_error"] = h.val_error
    return out


def main():
    action, path = sys.argv[1], sys.argv[2]
    fastcnn.set_num_threads(2)
    result = {}
    for simd in fastcnn.available_simd_paths():
        fastcnn.set_simd_path(simd)
        result[simd] = runs()
    fastcnn.set_simd_path("auto")
    if action == "record":
        with open(path, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
        print(f"recorded {sum(len(r) for r in result.values())} runs in {path}")
        return 0
    with open(path) as f:
        expected = json.load(f)
    bad = [(simd, name, key) for simd, recs in expected.items() for name, rec in recs.items()
           for key, value in rec.items() if result.get(simd, {}).get(name, {}).get(key) != value]
    for simd, name, key in bad:
        print(f"DIFFERS: {simd} {name} {key}")
    print(f"{'all equal' if not bad else f'{len(bad)} differ'}: "
          f"{sum(len(r) for r in expected.values())} runs")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
