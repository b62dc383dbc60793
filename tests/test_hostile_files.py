"""Files made to hurt the reader: compression bombs, architectures that ask
for more than a machine has, hand-damaged checkpoints. Each bomb is opened
in a child process whose address space is limited (resource.RLIMIT_AS), so
that a regression fails its test with MemoryError instead of taking the
machine's memory."""

import io
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import fastcnn
from fastcnn import _modelfile
from fastcnn.layers import Conv2D, Dense, Flatten, ReLU

resource = pytest.importorskip("resource")  # POSIX

CHILD_MEMORY = 768 << 20  # address space of a child: fastcnn and NumPy need ~400 MiB


def run_limited(code, memory=CHILD_MEMORY, timeout=300):
    """Run `code` in a child Python whose address space is `memory` bytes."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit, cwd="/")


def npy_header(shape, dtype):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": shape})
    return buf.getvalue()


def rewrite(path, replace):
    """Rewrite the .npz at path with entries replaced: {name.npy: bytes, or
    a function writing into a zip entry opened for writing}."""
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    entries.update(replace)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, data in entries.items():
            if callable(data):
                with z.open(name, "w", force_zip64=True) as f:
                    data(f)
            else:
                z.writestr(name, data)


def json_bomb(prefix, chars):
    """A writer of a .npy text entry: the JSON `prefix` then spaces (valid
    JSON still), `chars` characters in all (4 bytes each, as NumPy's text)."""
    def write(f):
        f.write(npy_header((), f"<U{chars}"))
        f.write(np.array(prefix).astype(f"<U{len(prefix)}").tobytes())
        chunk = b" \0\0\0" * (1 << 18)
        left = (chars - len(prefix)) * 4
        while left > 0:
            f.write(chunk[:left])
            left -= len(chunk)
    return write


def saved(tmp_path, model=None, name="m.npz"):
    path = tmp_path / name
    (model or fastcnn.seed_cnn()).save(path)
    return path


# ------------------------------------------------------------ compression bombs
@pytest.fixture(scope="module")
def config_bomb(tmp_path_factory):
    """A 0.6 MB model file whose deflated __config__ expands to 1 GiB."""
    path = saved(tmp_path_factory.mktemp("bomb"))
    with np.load(path) as f:
        config = str(f["__config__"])
    rewrite(path, {"__config__.npy": json_bomb(config, 1 << 28)})
    return path


def test_a_config_that_expands_to_a_gigabyte_is_refused_unread(config_bomb):
    assert os.path.getsize(config_bomb) < 2 << 20
    r = run_limited(f"""
        import fastcnn
        try:
            fastcnn.load({str(config_bomb)!r})
        except ValueError as e:
            print(e)
        """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "'__config__' (configuration) declares 1,073,741,824 bytes, more than the " \
           "16,777,216" in r.stdout


def test_a_training_state_bomb_is_refused_on_resume(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)
    fastcnn.seed_cnn().fit(x, y, batch_size=20, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / "last.npz"
    with np.load(path) as f:
        state = str(f["__training__"])
    rewrite(path, {"__training__.npy": json_bomb(state, 1 << 27)})  # 512 MiB
    np.save(tmp_path / "x.npy", x)
    r = run_limited(f"""
        import numpy as np, fastcnn
        x = np.load({str(tmp_path / 'x.npy')!r})
        try:
            fastcnn.seed_cnn().fit(x, np.arange(40) % 10, epochs=2, batch_size=20,
                                   progress=False, checkpoint_dir={str(tmp_path)!r}, resume=True)
        except ValueError as e:
            print(e)
        """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{path} is not a usable fastcnn model file: its entry '__training__' (training " \
           f"state) declares 536,870,912 bytes" in r.stdout


def test_an_optimiser_array_larger_than_the_model_is_refused(tmp_path):
    model = fastcnn.seed_cnn()
    path = saved(tmp_path)
    big = np.zeros(10 * model.num_parameters())
    buf = io.BytesIO()
    np.lib.format.write_array(buf, big)
    rewrite(path, {"__training__.npy": _text("{}"), "__training__/m.npy": buf.getvalue()})
    with pytest.raises(ValueError, match=r"'__training__/m' \(optimiser state\) declares 311,840 "
                                         r"bytes, more than the 31,248"):
        fastcnn.io.load(path, with_training_state=True)


def _text(s):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(s))
    return buf.getvalue()


# ------------------------------------------------------------ architectures too big to run
def with_layers(tmp_path, change):
    path = saved(tmp_path)
    with np.load(path) as f:
        config = json.loads(str(f["__config__"]))
    change(config["model"]["layers"])
    rewrite(path, {"__config__.npy": _text(json.dumps(config))})
    return path


def test_huge_padding_is_refused_at_load_naming_the_layer(tmp_path):
    """A tiny file whose C2 pads by 10,000: 12 maps of 20,008^2 pixels, 19 GB
    per image at predict; refused at load, in a child with 768 MiB."""
    path = with_layers(tmp_path, lambda layers: layers[2]["config"].update(padding=10_000))
    assert os.path.getsize(path) < 100_000
    r = run_limited(f"""
        import fastcnn
        try:
            fastcnn.load({str(path)!r})
        except ValueError as e:
            print(e)
        """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "its layer C2 brings the activations of one image to" in r.stdout
    assert "fastcnn.io.LIMITS['activation_bytes_per_image']" in r.stdout


def test_limits_can_be_raised_or_lowered_per_call(tmp_path):
    path = saved(tmp_path)
    with pytest.raises(ValueError, match=r"3,898 parameters, more than the limit of 1,000"):
        fastcnn.io.load(path, limits={"parameters": 1000})
    with pytest.raises(ValueError, match="activations of one image"):
        fastcnn.io.load(path, limits={"activation_bytes_per_image": 10_000})
    assert fastcnn.io.load(path, limits={"parameters": 3898}).num_parameters() == 3898
    with pytest.raises(ValueError, match=r"unknown limits \['params'\]"):
        fastcnn.io.load(path, limits={"params": 1})
    with pytest.raises(ValueError, match="limits\\['parameters'\\] must be"):
        fastcnn.io.load(path, limits={"parameters": 0})
    with pytest.raises(TypeError, match="limits must be a dict"):
        fastcnn.io.load(path, limits=5)
    assert fastcnn.io.LIMITS is _modelfile.LIMITS


def test_loading_is_linear_in_the_number_of_layers(tmp_path):
    """8x the layers take well under 64x the time (quadratic would): medians
    of three loads each, 2,500 and 20,000 ReLU layers."""
    def model_file(n):
        layers = [ReLU() for _ in range(n)] + [Flatten(), Dense(4, 2)]
        return saved(tmp_path, fastcnn.Sequential(layers, (1, 2, 2)), f"{n}.npz")

    def seconds(path):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fastcnn.load(path)
            times.append(time.perf_counter() - start)
        return sorted(times)[1]

    small, large = model_file(2500), model_file(20000)
    assert seconds(large) < 24 * seconds(small)


# ------------------------------------------------------------ damaged checkpoints
@pytest.fixture
def checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)
    fastcnn.models.lenet5().fit(x, y, batch_size=20, progress=False, checkpoint_dir=tmp_path,
                                validation_data=(x[:10], y[:10]))
    return tmp_path, x, y


def _drop(key):
    return lambda state: state.pop(key)


def _set(key, value):
    return lambda state: state.__setitem__(key, value)


@pytest.mark.parametrize("damage, entry", [
    (_drop("rng"), "has no 'rng' entry"),
    (_set("rng", "mt19937"), "entry 'rng' is str"),
    (_set("rng", {"bit_generator": "PCG64", "state": {"state": "x", "inc": 3}}), "entry 'rng'"),
    (_set("rng", {"bit_generator": "Evil"}), "entry 'rng'"),
    (_set("history", {"loss": [1.0]}), "entry 'history'"),
    (_set("batches", ["two"]), "entry 'history'"),
    (_set("epochs_done", 7), "entry 'history'"),
    (_set("epochs_done", -1), "entry 'epochs_done' is -1"),
    (_set("epochs_done", True), "entry 'epochs_done' is bool"),
    (_set("best", {"score": "low"}), "entry 'best'"),
    (_set("optimizer", {"t": "many"}), "entry 'optimizer'"),
    (_set("optimizer", {"t": -3}), "entry 'optimizer'"),
    (_set("arguments", []), "entry 'arguments' is list"),
])
def test_a_damaged_training_state_names_the_file_and_entry(checkpoint, damage, entry):
    directory, x, y = checkpoint
    path = directory / "last.npz"
    with np.load(path) as f:
        state = json.loads(str(f["__training__"]))
    damage(state)
    rewrite(path, {"__training__.npy": _text(json.dumps(state))})
    model = fastcnn.models.lenet5()
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError) as e:
        model.fit(x, y, epochs=2, batch_size=20, progress=False, checkpoint_dir=directory,
                  resume=True, validation_data=(x[:10], y[:10]))
    assert str(e.value).startswith(f"{path} is not a usable fastcnn model file: its training "
                                   f"state")
    assert entry in str(e.value)
    for k in before:  # refused before anything changed
        np.testing.assert_array_equal(model.params[k], before[k])


@pytest.mark.parametrize("array", [np.zeros(5), np.full(61706, np.nan), np.zeros((61706, 1)),
                                   np.zeros(61706, np.int64)])
def test_damaged_optimiser_arrays_are_refused(checkpoint, array):
    directory, x, y = checkpoint
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    rewrite(directory / "last.npz", {"__training__/m.npy": buf.getvalue()})
    with pytest.raises(ValueError, match=r"its training state entry 'optimizer' is damaged "
                                         r"\(ValueError: Adam state 'm'"):
        fastcnn.models.lenet5().fit(x, y, epochs=2, batch_size=20, progress=False,
                                    checkpoint_dir=directory, resume=True,
                                    validation_data=(x[:10], y[:10]))


def test_a_sound_checkpoint_still_resumes(checkpoint):
    directory, x, y = checkpoint
    model = fastcnn.models.lenet5()
    history = model.fit(x, y, epochs=2, batch_size=20, progress=False, checkpoint_dir=directory,
                        resume=True, validation_data=(x[:10], y[:10]))
    assert len(history.epoch_loss) == 2


def test_conv_dense_model_round_trip_within_limits(tmp_path):
    model = fastcnn.Sequential([Conv2D(1, 4, 3, padding=1), Flatten(), Dense(4 * 8 * 8, 3)],
                               (1, 8, 8))
    assert fastcnn.load(saved(tmp_path, model)).num_parameters() == model.num_parameters()


# ------------------------------------------------------------ extreme but finite inputs
def extreme_images():
    x = np.zeros((5, 1, 28, 28), np.float32)
    x[3] = 3e38  # finite in float32; the first convolution's sums are not
    return x


def test_predict_reports_an_overflow_not_nan_probabilities():
    model = fastcnn.models.lenet5()
    for call in (model.predict, model.predict_proba, lambda x: model.evaluate(x, np.zeros(5, int))):
        with pytest.raises(FloatingPointError, match=r"the forward pass overflowed: 1 image\(s\), "
                                                     r"the first at index 3, .*first in layer "
                                                     r"C1.*reach 3e\+38"):
            call(extreme_images())
    assert model.predict(extreme_images()[:3]).shape == (3,)  # the others are fine


def test_fit_blames_the_images_not_the_learning_rate():
    x, y = extreme_images(), np.arange(5)
    with pytest.raises(FloatingPointError, match="overflowed in epoch 1, batch 1: .* before any "
                                                 "training step, so not through the learning "
                                                 "rate.*scale the images"):
        fastcnn.models.lenet5().fit(x, y, batch_size=5, progress=False)
    # later in a run, huge images are still named as the cause
    x = np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32)
    x[19] = 3e38  # in some batch of the shuffled epoch
    with pytest.raises(FloatingPointError, match=r"overflowed in epoch 1, batch \d: .*reach 3e\+38"):
        fastcnn.models.lenet5().fit(x, np.arange(20) % 10, batch_size=5, progress=False,
                                    validation_data=None, seed=0)


def test_a_learning_rate_too_large_is_still_named():
    x = np.random.default_rng(0).random((200, 1, 28, 28), dtype=np.float32)
    with pytest.raises(FloatingPointError, match="try a smaller learning rate"):
        fastcnn.models.lenet5().fit(x, np.arange(200) % 10, batch_size=20, lr=1e30,
                                    progress=False)


def test_predict_keeps_large_maps_within_its_budget(monkeypatch):
    """A model within the load limits whose maps take 5.8 MB per image:
    predict computes fewer images at a time instead of 64 at once, with the
    same results."""
    import tracemalloc
    model = fastcnn.Sequential([Conv2D(1, 8, 3, padding=200), Flatten(), Dense(8 * 426 * 426, 2)],
                               (1, 28, 28))
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    monkeypatch.setattr(fastcnn.Sequential, "PREDICT_BYTES", 32 << 20)
    tracemalloc.start()
    small = model.predict_scores(x, batch_size=64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 << 20  # 64 images at once: 370 MB
    monkeypatch.setattr(fastcnn.Sequential, "PREDICT_BYTES", 1 << 40)
    np.testing.assert_array_equal(small, model.predict_scores(x, batch_size=64))


# ------------------------------------------------------------ IDX files
def test_a_gzipped_idx_file_is_read_header_first(tmp_path):
    """0.5 MB of gzip: a header for 10 bytes, then 512 MiB of zeros. Read
    header first, the file is refused after 11 bytes of data, in a child
    whose address space (512 MiB) could not hold the whole stream."""
    import gzip
    path = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(10))
        chunk = bytes(1 << 20)
        for _ in range(512):
            f.write(chunk)
    assert path.stat().st_size < 1 << 20
    r = run_limited(f"""
        from fastcnn import datasets
        try:
            datasets.read_idx({str(path)!r})
        except datasets.DatasetError as e:
            print(e)
        """, memory=512 << 20)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "has trailing bytes: dimensions (10,) need 18 bytes, the file has more" in r.stdout


@pytest.mark.parametrize("compress", [False, True])
def test_an_idx_header_declaring_too_much_is_refused_unread(tmp_path, compress):
    import gzip
    data = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (60000, 300, 300))
    path = tmp_path / "big-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(fastcnn.datasets.DatasetError,
                       match=r"declares dimensions \(60000, 300, 300\) of uint8, 5,400,000,000 "
                             r"bytes, more than the limit of 1,073,741,824"):
        fastcnn.datasets.read_idx(path)
    small = tmp_path / "small-idx1-ubyte"
    small.write_bytes(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(100))
    with pytest.raises(fastcnn.datasets.DatasetError, match="more than the limit of 99"):
        fastcnn.datasets.read_idx(small, max_bytes=99)
    assert fastcnn.datasets.read_idx(small, max_bytes=100).shape == (100,)


def test_a_small_gzip_cannot_claim_a_large_array(tmp_path):
    """Deflate expands at most ~1032x: 40 bytes of gzip declaring 100 MB are
    refused from their sizes alone."""
    import gzip
    path = tmp_path / "liar-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (10**8).to_bytes(4, "big")))
    with pytest.raises(fastcnn.datasets.DatasetError, match="more than .* bytes of gzip data can "
                                                            "hold"):
        fastcnn.datasets.read_idx(path)


def test_a_npy_whose_header_lies_is_refused_before_numpy_allocates(tmp_path):
    """228 bytes announcing 10 GB of pixels, given to fastcnn predict in a
    child with 768 MiB: a clear error, not MemoryError."""
    path = tmp_path / "liar.npy"
    path.write_bytes(npy_header((100000, 1000, 100), "u1") + bytes(100))
    model = saved(tmp_path)
    r = run_limited(f"""
        import sys
        from fastcnn.cli import main
        sys.exit(main(["predict", {str(model)!r}, {str(path)!r}]))
        """)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "its header announces (100000, 1000, 100) uint8 (10,000,000,128 bytes), the file " \
           "has 228" in r.stderr
