"""save / load: round trips, and a clear error for every kind of bad file."""

import io as stdio
import json
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastcnn
from fastcnn import io


@pytest.fixture
def trained(rng):
    m = fastcnn.seed_cnn(seed=0, dtype="float64")
    x, y = rng.random((10, 1, 28, 28)), rng.integers(0, 10, 10)
    m.fit(x, y, batch_size=5, progress=False)
    return m, x


def test_round_trip(trained, tmp_path, dtype):
    m, x = trained
    if dtype == np.float32:
        m = fastcnn.seed_cnn(seed=4, dtype="float32")
    path = tmp_path / "model.npz"
    m.save(path)
    m2 = fastcnn.load(path)
    assert m2.dtype == m.dtype and list(m2.params) == list(m.params)
    for k in m.params:
        np.testing.assert_array_equal(m2.params[k], m.params[k])
        assert m2.params[k].dtype == m.params[k].dtype
    np.testing.assert_array_equal(m2.forward(x), m.forward(x))
    assert m2.summary() == m.summary()


def test_generic_model_round_trip(tmp_path, rng):
    m = fastcnn.Sequential([fastcnn.Conv2D(2, 3, (3, 2), activation="sigmoid"), fastcnn.Sigmoid(),
                            fastcnn.MeanPool2D(3), fastcnn.Flatten(), fastcnn.Dense(3 * 3 * 4, 4)],
                           input_shape=(2, 11, 13), dtype="float32", seed=9)
    m.save(tmp_path / "g.npz")
    m2 = fastcnn.load(tmp_path / "g.npz")
    x = rng.random((3, 2, 11, 13)).astype(np.float32)
    np.testing.assert_array_equal(m2.forward(x), m.forward(x))
    assert [type(a) for a in m2.layers] == [type(a) for a in m.layers]


def test_file_holds_no_pickle_and_keeps_the_name(trained, tmp_path):
    m, _ = trained
    path = tmp_path / "model.weights"  # no .npz suffix added
    m.save(path)
    assert os.listdir(tmp_path) == ["model.weights"]
    with np.load(path, allow_pickle=False) as z:
        cfg = json.loads(str(z["__config__"]))
        assert cfg["format"] == "fastcnn-model" and cfg["format_version"] == 1
        assert cfg["fastcnn_version"] == fastcnn.__version__
        assert set(z.files) == {"__config__"} | set(m.params)


def test_save_is_atomic(trained, tmp_path, monkeypatch):
    m, _ = trained
    path = tmp_path / "model.npz"
    m.save(path)
    good = path.read_bytes()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(KeyboardInterrupt):
        m.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary left behind


def write_npz(path, arrays):
    buf = stdio.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def model_arrays(m):
    with np.load(stdio.BytesIO(_saved_bytes(m)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _saved_bytes(m):
    buf = stdio.BytesIO()
    arrays = {"__config__": np.array(json.dumps({
        "format": io.FORMAT, "format_version": io.FORMAT_VERSION,
        "fastcnn_version": fastcnn.__version__, "model": m.get_config()}))}
    arrays.update(m.params)
    np.savez(buf, **arrays)
    return buf.getvalue()


def edit_config(arrays, **changes):
    cfg = json.loads(str(arrays["__config__"]))
    cfg.update(changes)
    arrays["__config__"] = np.array(json.dumps(cfg))
    return arrays


@pytest.mark.parametrize("tamper, match", [
    (lambda a: edit_config(a, format_version=2), "format version 2.*up to 1.*upgrade"),
    (lambda a: edit_config(a, format="other"), "format is 'other'"),
    (lambda a: {k: v for k, v in a.items() if k != "C2.bias"}, r"missing parameters \['C2.bias'\]"),
    (lambda a: dict(a, extra=np.zeros(3)), r"unexpected entries \['extra'\]"),
    (lambda a: dict(a, **{"FC.weight": np.zeros((10, 191))}), "FC.weight has shape"),
    (lambda a: dict(a, **{"FC.bias": np.zeros(10, np.float32)}), "FC.bias has dtype float32"),
    (lambda a: dict(a, **{"FC.bias": np.full(10, np.nan)}), "FC.bias contains NaN"),
    (lambda a: {k: v for k, v in a.items() if k != "__config__"}, "no '__config__'"),
    (lambda a: dict(a, __config__=np.array("{not json")), "not valid JSON"),
    (lambda a: dict(a, __config__=np.zeros(3)), "not a JSON string"),
    (lambda a: edit_config(a, model={"layers": [{"type": "Evil", "config": {}}],
                                     "input_shape": [1, 28, 28], "dtype": "float64"}),
     "unknown layer type 'Evil'"),
    (lambda a: edit_config(a, model={"layers": [{"type": "Dense", "config": {"in_features": -3,
                                                                             "out_features": 2}}],
                                     "input_shape": [1, 28, 28], "dtype": "float64"}),
     "cannot be built"),
])
def test_tampered_files(trained, tmp_path, tamper, match):
    m, _ = trained
    path = tmp_path / "bad.npz"
    write_npz(path, tamper(model_arrays(m)))
    with pytest.raises(ValueError, match=match):
        fastcnn.load(path)


def test_pickled_objects_are_refused_not_run(tmp_path, trained):
    m, _ = trained
    arrays = model_arrays(m)
    arrays["FC.bias"] = np.array([object()] * 10, dtype=object)
    path = tmp_path / "pickled.npz"
    write_npz(path, arrays)
    with pytest.raises(ValueError, match="not a usable fastcnn model file"):
        fastcnn.load(path)


def test_truncated_and_foreign_files(trained, tmp_path):
    m, _ = trained
    path = tmp_path / "m.npz"
    m.save(path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a usable fastcnn model file"):
            fastcnn.load(bad)
    flipped = bytearray(data)
    # corrupt the middle of a stored array (CRC fails) but keep the zip directory
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("C2.weight.npy")
    flipped[info.header_offset + 200] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="not a usable fastcnn model file"):
        fastcnn.load(bad)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a usable fastcnn model file"):
        fastcnn.load(text)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        fastcnn.load(single)
    with pytest.raises(FileNotFoundError):
        fastcnn.load(tmp_path / "missing.npz")


def test_save_creates_missing_directories_and_refuses_a_directory(tmp_path):
    m = fastcnn.seed_cnn()
    m.save(tmp_path / "a" / "b" / "model.npz")
    assert fastcnn.load(tmp_path / "a" / "b" / "model.npz").num_parameters() == 3898
    with pytest.raises(IsADirectoryError, match="is a directory"):
        m.save(tmp_path / "a")


def test_pickle_is_the_saved_model_and_trains_on(rng):
    """pickle (multiprocessing, Dask) keeps what save() keeps; the copy's
    layers still see its flat parameters, so training it goes on exactly as
    training the original would."""
    import pickle

    x, y = rng.random((40, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 40)
    m = fastcnn.models.lenet5(seed=1, algorithm="im2col")
    m.fit(x, y, batch_size=10, progress=False)
    data = pickle.dumps(m)
    assert len(data) < 2 * m._flat_params.nbytes  # no activations or buffers
    c = pickle.loads(data)
    assert c.get_config() == m.get_config() and list(c.params) == list(m.params)
    for name, p in c.params.items():
        np.testing.assert_array_equal(p, m.params[name])
        assert np.shares_memory(p, c._flat_params)
    m.fit(x, y, batch_size=10, seed=5, progress=False)
    c.fit(x, y, batch_size=10, seed=5, progress=False)
    np.testing.assert_array_equal(c._flat_params, m._flat_params)
    assert not np.array_equal(c._flat_params, pickle.loads(data)._flat_params)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_the_umask_allows(tmp_path, umask):
    """As open() would create them, not the 0600 of a temporary file: in a
    child process, so that the umask of this one is left alone."""
    code = (f"import os, fastcnn\nos.umask({umask})\n"
            f"fastcnn.seed_cnn().save({str(tmp_path / 'm.npz')!r})\n"
            f"from fastcnn._files import write_csv\n"
            f"write_csv({str(tmp_path / 't.csv')!r}, [{{'a': 1}}])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    for name in ("m.npz", "t.csv"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask


def test_a_killed_save_leaves_a_temporary_file_that_the_next_save_removes(tmp_path):
    """SIGKILL in the middle of writing (the write blocks on a pipe), then a
    save into the same directory: the orphan goes, another live process's
    temporary file and files that are not fastcnn's stay."""
    import signal
    code = ("import os, sys, fastcnn._files as f\n"
            f"f.atomic_write({str(tmp_path / 'big.npz')!r}, "
            "lambda out: (out.write(b'x' * 1000), out.flush(), print('writing', flush=True),"
            " sys.stdin.read()))\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert child.stdout.readline() == "writing\n"
        orphans = [n for n in os.listdir(tmp_path) if n.endswith(".fastcnn-tmp")]
        assert len(orphans) == 1 and orphans[0].startswith(".big.npz.")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    from fastcnn import _files
    alive = f".other.npz.{_files._HOST}.{os.getpid()}.abc123{_files.TEMP_SUFFIX}"
    foreign = [".big.npz.notours.tmp", "notes.fastcnn-tmp", f".x.{_files._HOST}.12.ab.tmp"]
    for name in [alive] + foreign:
        (tmp_path / name).write_bytes(b"")
    fastcnn.seed_cnn().save(tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == sorted([alive, "m.npz"] + foreign)
