"""IDX reading, the dataset search path, and verified downloads from a local
HTTP server on 127.0.0.1 (this machine has no internet)."""

import functools
import gzip
import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest

from fastcnn import datasets
from fastcnn.datasets import DatasetError
from helpers import need


def idx_bytes(array, type_byte=0x08):
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_byte]
    return header + array.astype(dt).tobytes()


def write_split(directory, n, split="train", compress=True, rng=None):
    rng = rng or np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    names = datasets.FILES[split]
    os.makedirs(directory, exist_ok=True)
    for name, arr in zip(names, (images, labels)):
        data = idx_bytes(arr)
        if compress:
            with gzip.open(os.path.join(directory, name + ".gz"), "wb") as f:
                f.write(data)
        else:
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("type_byte, values", [
    (0x08, np.arange(24) % 256), (0x09, np.arange(-12, 12)), (0x0B, np.arange(24) * 1000 - 9000),
    (0x0C, np.arange(24) * 10**7), (0x0D, np.linspace(-1, 1, 24)), (0x0E, np.linspace(-1, 1, 24)),
])
def test_read_idx_types(tmp_path, compress, type_byte, values):
    arr = values.reshape(2, 3, 4)
    data = idx_bytes(arr, type_byte)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(data) if compress else data)
    got = datasets.read_idx(path)
    assert got.shape == (2, 3, 4) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr.astype(got.dtype))


@pytest.mark.parametrize("data, match", [
    (b"", "too short"),
    (b"\x00\x00", "too short"),
    (b"\x08\x03\x00\x00" + bytes(20), "not an IDX file"),
    (b"\x00\x00\x07\x01" + bytes(8), "not an IDX file"),
    (b"\x00\x01\x08\x01" + bytes(8), "not an IDX file"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    (idx_bytes(np.zeros((5, 4), np.uint8))[:-1], "truncated"),
    (idx_bytes(np.zeros((5, 4), np.uint8)) + b"\x00", "trailing bytes"),
    (idx_bytes(np.zeros((5, 4), np.int32), 0x0C)[:-3], "truncated"),
])
def test_read_idx_rejects_bad_files(tmp_path, data, match):
    for compress in (False, True):
        path = tmp_path / "bad"
        path.write_bytes(gzip.compress(data) if compress else data)
        with pytest.raises(DatasetError, match=match):
            datasets.read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8).reshape(10, 100) % 7))
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated gzip"):
        datasets.read_idx(tmp_path / "cut.gz")
    bad = bytearray(good)
    bad[30] ^= 0xFF
    (tmp_path / "flip.gz").write_bytes(bytes(bad))
    with pytest.raises(DatasetError):
        datasets.read_idx(tmp_path / "flip.gz")


@pytest.mark.parametrize("compress", [True, False])
def test_load_from_data_dir(tmp_path, compress, dtype):
    images, labels = write_split(tmp_path, 7, "test", compress)
    x, y = datasets.load("mnist", "test", data_dir=tmp_path, dtype=dtype.name)
    assert x.shape == (7, 1, 28, 28) and x.dtype == dtype
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(x[:, 0], images / 255.0, rtol=1e-7)
    assert x.min() >= 0 and x.max() <= 1


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        datasets.load("cifar")
    with pytest.raises(ValueError, match="split must be"):
        datasets.load("mnist", "validation")
    with pytest.raises(ValueError, match="dtype"):
        datasets.load("mnist", dtype="int8")
    with pytest.raises(FileNotFoundError, match="does not hold"):
        datasets.load("mnist", "train", data_dir=tmp_path)
    write_split(tmp_path, 5, "train")
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(DatasetError, match="5 images but .* 4 labels"):
        datasets.load("mnist", "train", data_dir=tmp_path)
    labels.write_bytes(gzip.compress(idx_bytes(np.full(5, 12, np.uint8))))
    with pytest.raises(DatasetError, match="label 12 out of range"):
        datasets.load("mnist", "train", data_dir=tmp_path)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real cache, system directory or FASTCNN_DATA: only what the test makes."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FASTCNN_DATA", raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DIR", str(tmp_path / "system"))
    return tmp_path


def test_search_order(isolated, monkeypatch):
    env, cache, system = isolated / "env", isolated / "home/.cache/fastcnn", isolated / "system"
    write_split(system / "mnist", 3)
    assert datasets.load("mnist")[0].shape[0] == 3
    write_split(cache / "mnist", 4)
    assert datasets.load("mnist")[0].shape[0] == 4
    write_split(env / "mnist", 5)
    monkeypatch.setenv("FASTCNN_DATA", str(env))
    assert datasets.load("mnist")[0].shape[0] == 5
    write_split(isolated / "explicit", 6)
    assert datasets.load("mnist", data_dir=isolated / "explicit")[0].shape[0] == 6
    assert datasets.search_path("mnist") == [str(env / "mnist"), str(cache / "mnist"),
                                             str(system / "mnist")]


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (url, www)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    httpd.shutdown()
    httpd.server_close()


def dead_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    return f"http://127.0.0.1:{port}/"


def publish(www, n=9):
    write_split(www, n, "train")
    write_split(www, 4, "test", rng=np.random.default_rng(1))
    return {f: hashlib.sha256((www / f).read_bytes()).hexdigest()
            for f in os.listdir(www) if f.endswith(".gz")}


def test_download_verifies_and_falls_back_to_the_next_mirror(server, tmp_path):
    url, www = server
    sums = publish(www)
    dest = tmp_path / "dl"
    datasets.download("mnist", dest, mirrors=[dead_url(), url], checksums=sums)
    assert sorted(os.listdir(dest)) == sorted(sums)
    x, y = datasets.load("mnist", "train", data_dir=dest)
    assert x.shape == (9, 1, 28, 28)


def test_download_rejects_a_wrong_checksum_and_keeps_nothing(server, tmp_path):
    url, www = server
    sums = publish(www)
    sums["train-images-idx3-ubyte.gz"] = "0" * 64
    dest = tmp_path / "dl"
    with pytest.raises(DatasetError, match="SHA-256 .* does not match"):
        datasets.download("mnist", dest, mirrors=[url], checksums=sums)
    assert "train-images-idx3-ubyte.gz" not in os.listdir(dest)
    assert not [f for f in os.listdir(dest) if f.startswith(".download")]


def test_download_reports_every_mirror(tmp_path):
    sums = {"train-images-idx3-ubyte.gz": "0" * 64}
    with pytest.raises(DatasetError, match="(?s)could not download.*127.0.0.1.*127.0.0.1.*data_dir"):
        datasets.download("mnist", tmp_path, mirrors=[dead_url(), dead_url()], checksums=sums)


def test_download_error_reads_as_one_sentence(server, tmp_path):
    """Issue 16: the message read "...of mnist:; https://..." once the command
    line had joined its lines. It is one line now, each URL with its error."""
    url, www = server
    sums = publish(www)
    sums["train-images-idx3-ubyte.gz"] = "0" * 64  # served, but not the expected file
    dead = dead_url()
    with pytest.raises(DatasetError) as info:
        datasets.download("mnist", tmp_path, mirrors=[dead, url], checksums=sums)
    message = str(info.value)
    assert "\n" not in message and ":;" not in message and ": ;" not in message
    assert message.startswith("could not download train-images-idx3-ubyte.gz of mnist from any "
                              f"mirror: tried {dead}train-images-idx3-ubyte.gz (")
    assert f"; {url}train-images-idx3-ubyte.gz (SHA-256 " in message
    assert message.count("127.0.0.1") == 2  # each URL once, not again inside its error
    assert message.endswith("). Put the four IDX files (gzipped or not) in a directory and pass "
                            "data_dir=... (--data-dir on the command line), or in "
                            "$FASTCNN_DATA/mnist")
    with pytest.raises(DatasetError, match=r"Put cifar-10-python\.tar\.gz \(or the "
                                           r"cifar-10-batches-py/ directory it unpacks to\)"):
        datasets.download("cifar-10", tmp_path, mirrors=[dead])
    with pytest.raises(DatasetError, match="from any mirror: no mirrors given"):
        datasets.download("mnist", tmp_path, mirrors=[], checksums=sums)


def test_download_error_on_the_command_line(isolated, monkeypatch, capsys):
    from fastcnn import cli

    dead = dead_url()
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [dead])
    assert cli.main(["train", "--dataset", "mnist", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ":;" not in err
    assert err.startswith("fastcnn: error: could not download train-images-idx3-ubyte.gz of mnist "
                          f"from any mirror: tried {dead}train-images-idx3-ubyte.gz (")


def test_the_command_line_joins_lines_after_a_colon_with_a_space():
    from fastcnn.cli import _one_line

    assert _one_line("could not read:\n  a.gz: bad\n  b.gz: worse\nTry again") == \
        "could not read: a.gz: bad; b.gz: worse; Try again"
    assert _one_line("\n\n") == ""


def test_download_stops_past_the_known_size(server, tmp_path, monkeypatch):
    url, www = server
    sums = publish(www)
    monkeypatch.setitem(datasets.SIZES, "mnist", {"train-labels-idx1-ubyte.gz": 10})
    monkeypatch.setattr(datasets, "SIZE_MARGIN", 0)
    size = (www / "train-labels-idx1-ubyte.gz").stat().st_size
    with pytest.raises(DatasetError, match=f"train-labels-idx1-ubyte.gz \\(the server announces "
                                           f"{size} bytes, more than the 10 the file may have; "
                                           f"nothing was downloaded\\)"):
        datasets.download("mnist", tmp_path / "dl", mirrors=[url], checksums=sums)
    assert "train-labels-idx1-ubyte.gz" not in os.listdir(tmp_path / "dl")


@pytest.fixture
def endless_server():
    """A mirror that streams zeros without end and announces no length;
    yields (url, a function giving the bytes it has sent)."""
    sent = [0]

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            chunk = bytes(1 << 16)
            try:
                while sent[0] < 1 << 30:
                    self.wfile.write(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass  # the client went away

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", lambda: sent[0]
    httpd.shutdown()
    httpd.server_close()


def test_an_endless_download_stops_at_the_known_size_and_writes_nothing(endless_server, tmp_path):
    url, sent = endless_server
    sums = {"t10k-labels-idx1-ubyte.gz": "0" * 64}
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz \\(more than the 8638 "
                                           "bytes the file may have; stopped\\)"):
        datasets.download("mnist", tmp_path / "dl", mirrors=[url], checksums=sums)
    assert os.listdir(tmp_path / "dl") == []  # not even a temporary file
    assert sent() < 64 << 20  # the server was cut off, not read to its end


def test_load_downloads_into_the_cache_when_nothing_is_found(isolated, server, monkeypatch):
    url, www = server
    sums = publish(www)
    monkeypatch.setitem(datasets.MIRRORS, "fashion-mnist", [url])
    monkeypatch.setitem(datasets.SHA256, "fashion-mnist", sums)
    x, y = datasets.load("fashion-mnist", "test")
    assert x.shape == (4, 1, 28, 28)
    cache = datasets.cache_dir("fashion-mnist")
    assert cache.startswith(str(isolated / "home"))
    assert sorted(os.listdir(cache)) == sorted(sums)
    # a second load uses the cache: the server can go away
    monkeypatch.setitem(datasets.MIRRORS, "fashion-mnist", [dead_url()])
    assert datasets.load("fashion-mnist", "train")[0].shape == (9, 1, 28, 28)


def test_real_fashion_mnist():
    found = os.path.isdir(os.path.join(datasets.SYSTEM_DIR, "fashion-mnist")) or any(
        all(datasets._find(d, b) for b in datasets.FILES["train"])
        for d in datasets.search_path("fashion-mnist"))
    need(found, "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    x, y = datasets.load("fashion-mnist", "train")
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (60000,) and set(np.unique(y)) == set(range(10))
    xt, yt = datasets.load("fashion-mnist", "test", dtype="float64")
    assert xt.shape == (10000, 1, 28, 28) and xt.dtype == np.float64
    assert 0 <= xt.min() and xt.max() == 1.0
    assert np.bincount(yt).tolist() == [1000] * 10


def test_read_images_shapes_and_types(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    cases = {"a.npy": (u8, (4, 1, 28, 28)), "b.npy": (u8[0], (1, 1, 28, 28)),
             "c.npy": (u8[:, None], (4, 1, 28, 28)), "d.npy": (u8 / 255.0, (4, 1, 28, 28))}
    for name, (array, shape) in cases.items():
        np.save(tmp_path / name, array)
        got = datasets.read_images(tmp_path / name)
        assert got.shape == shape and got.dtype == np.float32
        np.testing.assert_allclose(got.reshape(-1), (u8 / 255.0).reshape(-1)[: got.size], rtol=1e-6)
    (tmp_path / "e.gz").write_bytes(gzip.compress(idx_bytes(u8)))
    assert datasets.read_images(tmp_path / "e.gz").shape == (4, 1, 28, 28)
    PIL = pytest.importorskip("PIL.Image")
    PIL.fromarray(u8[2]).save(tmp_path / "f.png")
    np.testing.assert_allclose(datasets.read_images(tmp_path / "f.png")[0, 0], u8[2] / 255.0,
                               rtol=1e-6)
    rgb = datasets.read_images(tmp_path / "f.png", channels=3)
    assert rgb.shape == (1, 3, 28, 28)
    for bad, match in [(np.array(["a"]), "dtype"), (np.full((2, 2), np.nan), "finite"),
                       (np.zeros((1, 1, 1, 2, 2), np.uint8), "5-dimensional")]:
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(DatasetError, match=match):
            datasets.read_images(tmp_path / "bad.npy")
    (tmp_path / "junk.png").write_bytes(b"not a picture")
    with pytest.raises(DatasetError, match="not a readable image"):
        datasets.read_images(tmp_path / "junk.png")
