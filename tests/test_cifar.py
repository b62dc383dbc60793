"""CIFAR-10 from its python-version archive: small archives in the real
format, written here, found on the search path, unpacked or not, downloaded
from a local HTTP server; and files that are not what they should be, a
tampered pickle above all, refused with a DatasetError."""

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from fastcnn import _cifar, datasets
from fastcnn.datasets import DatasetError
from test_datasets import dead_url, isolated, server  # noqa: F401 (fixtures)

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def py2_pickle(obj):
    """obj pickled as Python 2's cPickle wrote CIFAR-10's batches (protocol
    2): byte strings as SHORT_BINSTRING or BINSTRING (Python 2's str), ints
    as BININT*, dicts and lists filled in batches, each put in the memo,
    tuples of up to three items with TUPLE1..3, and a uint8 array through
    numpy.core.multiarray._reconstruct, numpy.ndarray and
    numpy.dtype("u1", 0, 1), as NumPy 1 reduced it. Python 3's pickle would
    write bytes through _codecs.encode and name numpy._core instead."""
    out = bytearray(b"\x80\x02")
    memo = [0]

    def put():
        memo[0] += 1
        n = memo[0]
        out.extend(b"q" + bytes([n]) if n < 256 else b"r" + struct.pack("<I", n))

    def save(o):
        if isinstance(o, dict):
            out.extend(b"}")
            put()
            if o:
                out.extend(b"(")
                for k, v in o.items():
                    save(k)
                    save(v)
                out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"]")
            put()
            if o:
                out.extend(b"(")
                for v in o:
                    save(v)
                out.extend(b"e")
        elif isinstance(o, tuple):  # TUPLE1..3 up to three items, as protocol 2 does
            if len(o) > 3:
                out.extend(b"(")
            for v in o:
                save(v)
            out.extend(b"t" if len(o) > 3 else b")\x85\x86\x87"[len(o):len(o) + 1])
        elif o is None:
            out.extend(b"N")
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            if 0 <= o < 256:
                out.extend(b"K" + bytes([o]))
            elif 0 <= o < 65536:
                out.extend(b"M" + struct.pack("<H", o))
            else:
                out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, bytes):
            out.extend(b"U" + bytes([len(o)]) if len(o) < 256 else b"T" + struct.pack("<I", len(o)))
            out.extend(o)
            put()
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8 and o.flags.c_contiguous
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n")
            put()
            out.extend(b"cnumpy\nndarray\n")
            put()
            save((0,))
            save(b"b")
            out.extend(b"\x87R")  # TUPLE3, REDUCE
            put()
            out.extend(b"(K\x01")
            save(tuple(o.shape))
            out.extend(b"cnumpy\ndtype\n")
            put()
            save((b"u1", 0, 1))
            out.extend(b"R")
            put()
            save((3, b"|", None, None, None, -1, -1, 0))
            out.extend(b"b")  # BUILD
            save(False)
            save(o.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(f"py2_pickle does not write {type(o).__name__}")

    save(obj)
    out.extend(b".")
    return bytes(out)


def make_batch(n, rng, label=b"training batch 1 of 5"):
    return {b"batch_label": label,
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"image_{i:05d}.png".encode() for i in range(n)]}


META = {b"num_cases_per_batch": 10000,
        b"label_names": [name.encode() for name in datasets.CLASS_NAMES["cifar-10"]],
        b"num_vis": 3072}


def write_tar(path, members, extra=()):
    """A gzipped tar of cifar-10-batches-py/<name> -> bytes; `extra`:
    TarInfo objects (links, devices) added as they are."""
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo(_cifar.FOLDER)
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        tar.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{_cifar.FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def make_archive(directory, sizes=(3, 2, 4, 1, 2), test=5, seed=0, pickler=py2_pickle):
    """cifar-10-python.tar.gz in `directory` with data_batch_1..5 of `sizes`
    images and a test_batch of `test`; returns (archive path, the batch
    dicts by name)."""
    rng = np.random.default_rng(seed)
    batches = {name: make_batch(n, rng, f"training batch {i} of 5".encode())
               for i, (name, n) in enumerate(zip(TRAIN, sizes), 1)}
    batches["test_batch"] = make_batch(test, rng, b"testing batch 1 of 1")
    members = {name: pickler(b) for name, b in batches.items()}
    members["batches.meta"] = pickler(META)
    os.makedirs(directory, exist_ok=True)
    return write_tar(os.path.join(directory, _cifar.ARCHIVE), members), batches


def unpack(archive, directory):
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    return os.path.join(directory, _cifar.FOLDER)


def expected(batches, names):
    images = np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([batches[n][b"labels"] for n in names]).astype(np.int64)
    return images, labels


def check(got, batches, split, dtype=np.float32):
    x, y = got
    images, labels = expected(batches, TRAIN if split == "train" else ["test_batch"])
    assert x.shape == (len(labels), 3, 32, 32) and x.dtype == dtype
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-7)


def test_load_the_archive_from_data_dir(tmp_path, dtype):
    _, batches = make_archive(tmp_path)
    check(datasets.load("cifar-10", "train", data_dir=tmp_path, dtype=dtype.name), batches,
          "train", dtype)
    check(datasets.load("cifar-10", "test", data_dir=tmp_path, dtype=dtype.name), batches,
          "test", dtype)
    assert datasets.locate("cifar-10", "test", data_dir=tmp_path) == \
        (str(tmp_path / _cifar.ARCHIVE),)


def test_the_test_pickles_are_what_python_2_wrote():
    """Python 2's protocol 2: str as (SHORT_)BINSTRING, never Python 3's
    BINUNICODE or BINBYTES; the globals NumPy 1 named; and Python's own
    unpickler reads them as it reads the real files (encoding="bytes")."""
    import pickletools

    batch = make_batch(3, np.random.default_rng(0))
    data = py2_pickle(batch)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert ops[0] == ("PROTO", 2) and ops[1][0] == "EMPTY_DICT"
    assert {arg for name, arg in ops if name == "GLOBAL"} == {
        "numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert {name for name, _ in ops} <= {
        "PROTO", "EMPTY_DICT", "EMPTY_LIST", "MARK", "SETITEMS", "APPENDS", "BINPUT",
        "LONG_BINPUT", "SHORT_BINSTRING", "BINSTRING", "BININT1", "BININT2", "BININT",
        "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "GLOBAL", "REDUCE", "BUILD", "NONE", "NEWFALSE", "STOP"}
    back = pickle.loads(data, encoding="bytes")
    assert back.keys() == batch.keys() and back[b"labels"] == batch[b"labels"]
    np.testing.assert_array_equal(back[b"data"], batch[b"data"])


def test_channel_order(tmp_path):
    """A row is 1024 red, 1024 green, then 1024 blue bytes, each 32x32 row by
    row: red lands in x[:, 0], green in x[:, 1], blue in x[:, 2]."""
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    red, green, blue = i * 8, j * 8, 255 - i - j  # row index, column index, both
    row = np.concatenate([red.ravel(), green.ravel(), blue.ravel()]).astype(np.uint8)
    batch = {b"data": row[None], b"labels": [7], b"batch_label": b"testing batch 1 of 1",
             b"filenames": [b"one.png"]}
    folder = tmp_path / _cifar.FOLDER
    folder.mkdir()
    (folder / "test_batch").write_bytes(py2_pickle(batch))
    x, y = datasets.load("cifar-10", "test", data_dir=tmp_path, dtype="float64")
    assert y.tolist() == [7] and x.shape == (1, 3, 32, 32)
    for channel, plane in enumerate((red, green, blue)):
        np.testing.assert_array_equal(np.rint(x[0, channel] * 255), plane)
    assert x[0, 0, 3, 0] * 255 == 24 and x[0, 1, 0, 3] * 255 == 24  # rows are rows, columns columns


@pytest.mark.parametrize("where", ["folder", "the folder itself"])
def test_load_the_unpacked_directory(tmp_path, where):
    archive, batches = make_archive(tmp_path / "src")
    folder = unpack(archive, tmp_path / "data")
    data_dir = tmp_path / "data" if where == "folder" else folder
    check(datasets.load("cifar-10", "train", data_dir=data_dir), batches, "train")
    check(datasets.load("cifar-10", "test", data_dir=data_dir), batches, "test")
    assert datasets.locate("cifar-10", "train", data_dir=data_dir) == (str(folder),)


def test_python_3_pickles_of_the_same_batches_load_too(tmp_path):
    # someone who re-saved the batches with Python 3 (bytes through
    # _codecs.encode at protocol 2, numpy._core spelled as NumPy 2 does)
    for protocol in (2, 3, 4):
        _, batches = make_archive(tmp_path / str(protocol),
                                  pickler=lambda b, p=protocol: pickle.dumps(b, protocol=p))
        check(datasets.load("cifar-10", "train", data_dir=tmp_path / str(protocol)), batches,
              "train")
        # an empty batch: protocol 2 writes b"" as __builtin__.bytes()
        images, labels = _cifar.read_batch(pickle.dumps(batch_with(
            data=np.zeros((0, 3072), np.uint8), labels=[], filenames=[]), protocol=protocol))
        assert images.shape == (0, 3, 32, 32) and labels.shape == (0,)


def test_search_order(isolated, monkeypatch):  # noqa: F811
    env, cache = isolated / "env", isolated / "home/.cache/fastcnn"
    system = isolated / "system"
    make_archive(system / "cifar-10", test=1)
    assert len(datasets.load("cifar-10", "test")[1]) == 1
    make_archive(cache / "cifar-10", test=2)
    assert len(datasets.load("cifar-10", "test")[1]) == 2
    archive, _ = make_archive(isolated / "src", test=3)
    unpack(archive, env / "cifar-10")  # $FASTCNN_DATA/cifar-10/cifar-10-batches-py/
    monkeypatch.setenv("FASTCNN_DATA", str(env))
    assert len(datasets.load("cifar-10", "test")[1]) == 3
    make_archive(env / "cifar-10", test=4)  # the archive before the folder beside it
    assert len(datasets.load("cifar-10", "test")[1]) == 4
    assert datasets.search_path("cifar-10")[0] == str(env / "cifar-10")
    with pytest.raises(FileNotFoundError, match="does not hold cifar-10-python.tar.gz, or "
                                                "cifar-10-batches-py/ with test_batch"):
        datasets.load("cifar-10", "test", data_dir=isolated / "nothing")


def test_download_into_the_cache(isolated, server, monkeypatch):  # noqa: F811
    url, www = server
    archive, batches = make_archive(www)
    monkeypatch.setitem(datasets.MIRRORS, "cifar-10", [dead_url(), url])
    monkeypatch.setitem(datasets.SHA256, "cifar-10", {
        _cifar.ARCHIVE: hashlib.sha256(open(archive, "rb").read()).hexdigest()})
    check(datasets.load("cifar-10", "test"), batches, "test")
    cache = datasets.cache_dir("cifar-10")
    assert cache.startswith(str(isolated / "home")) and os.listdir(cache) == [_cifar.ARCHIVE]
    monkeypatch.setitem(datasets.MIRRORS, "cifar-10", [dead_url()])  # from the cache now
    check(datasets.load("cifar-10", "train"), batches, "train")


def test_download_refuses_a_wrong_checksum(isolated, server, monkeypatch):  # noqa: F811
    url, www = server
    make_archive(www)
    monkeypatch.setitem(datasets.MIRRORS, "cifar-10", [url])  # the real SHA-256, a fake archive
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz \\(SHA-256 [0-9a-f]{64} does "
                                           "not match the expected 6d958be0"):
        datasets.load("cifar-10", "test")
    assert os.listdir(datasets.cache_dir("cifar-10")) == []
    monkeypatch.setitem(datasets.SIZES, "cifar-10", {_cifar.ARCHIVE: 100})
    monkeypatch.setattr(datasets, "SIZE_MARGIN", 0)
    with pytest.raises(DatasetError, match="announces [0-9]+ bytes, more than the 100 the file "
                                           "may have"):
        datasets.load("cifar-10", "test")


def test_the_published_checksum_and_names():
    assert datasets.SHA256["cifar-10"] == {
        "cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"}
    assert datasets.SIZES["cifar-10"] == {"cifar-10-python.tar.gz": 170498071}
    assert datasets.MIRRORS["cifar-10"] == ["https://www.cs.toronto.edu/~kriz/"]
    assert datasets.CLASS_NAMES["cifar-10"] == [n.decode() for n in META[b"label_names"]]
    assert datasets.SHAPES["cifar-10"] == (3, 32, 32)


# ---- what is refused ---------------------------------------------------------------------------


def forbidden_pickle(module, name, argument):
    """A protocol-2 pickle that calls module.name(argument) when loaded."""
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
            + b"X" + struct.pack("<I", len(argument)) + argument.encode() + b"\x85R.")


@pytest.mark.parametrize("module, name, argument", [
    ("os", "system", "touch {marker}"),
    ("posix", "system", "touch {marker}"),
    ("builtins", "exec", "open({marker!r}, 'w').close()"),
    ("builtins", "eval", "open({marker!r}, 'w').close()"),
    ("subprocess", "getoutput", "touch {marker}"),
    ("numpy", "load", "{marker}"),  # NumPy, but not one of the four names an array needs
    ("numpy.core.multiarray", "scalar", "x"),
    ("_codecs", "decode", "{marker}"),
])
def test_a_pickle_naming_another_global_is_refused_and_not_run(tmp_path, module, name, argument):
    marker = str(tmp_path / "ran")
    payload = forbidden_pickle(module, name, argument.format(marker=marker))
    _, batches = make_archive(tmp_path / "src")
    members = {n: py2_pickle(b) for n, b in batches.items()}
    members["data_batch_3"] = payload
    (tmp_path / "data").mkdir()
    write_tar(tmp_path / "data" / _cifar.ARCHIVE, members)
    folder = tmp_path / "dir" / _cifar.FOLDER
    folder.mkdir(parents=True)
    for n, data in members.items():
        (folder / n).write_bytes(data)
    for data_dir in (tmp_path / "data", tmp_path / "dir"):
        with pytest.raises(DatasetError, match=f"data_batch_3: refused to load {module}.{name}"):
            datasets.load("cifar-10", "train", data_dir=data_dir)
        assert not os.path.exists(marker)
    # the same file as the test split is not even read for the test split
    assert len(datasets.load("cifar-10", "test", data_dir=tmp_path / "data")[1]) == 5


def test_a_reduce_inside_the_array_is_refused(tmp_path):
    """A gadget hidden where the array's arguments go: REDUCE on os.system
    inside the dtype's state is refused at the global, before any call."""
    good = py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    gadget = b"cos\nsystem\nX\x04\x00\x00\x00true\x85R"
    evil = good.replace(b"U\x01|", gadget, 1)
    assert evil != good
    with pytest.raises(_cifar.FormatError, match="refused to load os.system"):
        _cifar.read_batch(evil)


def batch_with(**changes):
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 9],
             b"batch_label": b"testing batch 1 of 1", b"filenames": [b"a.png", b"b.png"]}
    for key, value in changes.items():
        if value is None:
            del batch[key.encode()]
        else:
            batch[key.encode()] = value
    return batch


def nested_labels(depth):
    """A batch whose labels are [[[...[]...]]], `depth` lists deep: written as
    the stream (EMPTY_LIST `depth` times, then APPEND), as pickle.dumps would
    recurse too deep."""
    start = py2_pickle({b"data": np.zeros((2, 3072), np.uint8)})
    assert start.endswith(b"u.")
    return start[:-2] + b"U\x06labels" + b"]" * depth + b"a" * (depth - 1) + b"u."


def py2_pickle_dtype(array, dtype_name):
    """A py2_pickle of {b"data": array} whose dtype says dtype_name."""
    return py2_pickle({b"data": array, b"labels": [0] * len(array)}).replace(
        b"U\x02u1", b"U" + bytes([len(dtype_name)]) + dtype_name, 1)


@pytest.mark.parametrize("data, match", [
    (py2_pickle(batch_with(data=np.zeros((2, 3071), np.uint8))), r"shape \(2, 3071\)"),
    (py2_pickle(batch_with(data=np.zeros((2, 3, 1024), np.uint8))), r"array shape \(2, 3, 1024\)"),
    (py2_pickle(batch_with(data=[[0] * 3072] * 2)), "'data' is a list"),
    (py2_pickle(batch_with(labels=[0, 10])), "label 10 out of range 0..9"),
    (py2_pickle(batch_with(labels=[-1, 0])), "label -1 out of range 0..9"),
    (pickle.dumps(batch_with(labels=[0, 2**70]), protocol=2), "label 1180591620717411303424 out"),
    (pickle.dumps(batch_with(labels=[0, 2**20000]), protocol=2), "label <int of 20001 bits> out"),
    (nested_labels(10**5), r"'labels' must be a list of ints, got \[\[\[\.\.\.\]\]\]"),
    (py2_pickle(batch_with(labels=[0])), "2 images but 1 labels"),
    (py2_pickle(batch_with(labels=[0, True])), "'labels' must be a list of ints"),
    (py2_pickle(batch_with(labels=b"\x00\x01")), "'labels' must be a list of ints"),
    (py2_pickle(batch_with(labels=None)), "no 'labels' entry"),
    (py2_pickle(batch_with(data=None)), "no 'data' entry"),
    (py2_pickle([1, 2, 3]), "holds a list; expected a dict"),
    (py2_pickle_dtype(np.zeros((1, 3072), np.uint8), b"f4"), "dtype b'f4'"),
    (py2_pickle_dtype(np.zeros((1, 3072), np.uint8), b"O"), "dtype b'O'"),
    (py2_pickle(batch_with())[:-40], "not a readable pickle"),
    (b"not a pickle at all", "not a readable pickle"),
    (b"", "not a readable pickle"),
    (b"\x80\x02(I1\nP0\n.", "persistent object"),
    # CPython's unpickler would size its memo for index 2**32 - 1: gigabytes
    (b"\x80\x02K\x00r\xff\xff\xff\xff.", "memo index 4294967295 after 2 opcodes"),
    (b"\x80\x02K\x00p100000000\n.", "memo index 100000000 after 2 opcodes"),
])
def test_batches_that_are_not_cifar_10s_are_refused(tmp_path, data, match):
    with pytest.raises(_cifar.FormatError, match=match):
        _cifar.read_batch(data)
    folder = tmp_path / _cifar.FOLDER
    folder.mkdir()
    (folder / "test_batch").write_bytes(data)
    with pytest.raises(DatasetError, match=f"test_batch: .*{match}"):
        datasets.load("cifar-10", "test", data_dir=tmp_path)


def test_an_array_whose_bytes_disagree_with_its_shape_is_refused():
    good = py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    bad = good.replace(b"K\x01M\x00\x0c\x86", b"M\x10'M\x00\x0c\x86", 1)  # shape (10000, 3072)
    assert bad != good
    with pytest.raises(_cifar.FormatError, match=r"shape \(10000, 3072\) with 3072 bytes"):
        _cifar.read_batch(bad)


def test_missing_members(tmp_path):
    _, batches = make_archive(tmp_path / "src")
    members = {n: py2_pickle(b) for n, b in batches.items() if n not in ("data_batch_4",)}
    archive = write_tar(tmp_path / _cifar.ARCHIVE, members)
    with pytest.raises(DatasetError, match="no cifar-10-batches-py/data_batch_4 in the archive"):
        datasets.load("cifar-10", "train", data_dir=tmp_path)
    assert len(datasets.load("cifar-10", "test", data_dir=tmp_path)[1]) == 5
    with tarfile.open(archive, "w:gz") as tar:  # another dataset's archive
        info = tarfile.TarInfo("cifar-100-python/train")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DatasetError, match="no cifar-10-batches-py/test_batch in the archive; is "
                                           "it cifar-10-python.tar.gz, the python version"):
        datasets.load("cifar-10", "test", data_dir=tmp_path)


@pytest.mark.parametrize("cut", [0.5, 0.9, "trailer", "header"])
def test_a_truncated_or_corrupt_archive(tmp_path, cut):
    archive, _ = make_archive(tmp_path, sizes=(40, 40, 40, 40, 40), test=40)
    data = open(archive, "rb").read()
    if cut == "trailer":  # the gzip CRC and length: the whole tar is there, the check fails
        data = data[:-4]
    elif cut == "header":
        data = b"\x1f\x8b" + bytes(100)
    else:
        data = data[: int(len(data) * cut)]
    open(archive, "wb").write(data)
    for split in ("train", "test"):
        with pytest.raises(DatasetError, match="corrupt or truncated archive"):
            datasets.load("cifar-10", split, data_dir=tmp_path)


def test_not_a_gzip_file(tmp_path):
    (tmp_path / _cifar.ARCHIVE).write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DatasetError, match="corrupt or truncated archive"):
        datasets.load("cifar-10", "test", data_dir=tmp_path)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "chardev", "fifo"])
def test_links_and_devices_are_refused(tmp_path, kind):
    _, batches = make_archive(tmp_path / "src")
    members = {n: py2_pickle(b) for n, b in batches.items() if n != "test_batch"}
    info = tarfile.TarInfo(f"{_cifar.FOLDER}/test_batch")
    info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                 "chardev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info.linkname = "/etc/passwd" if kind != "hardlink" else f"{_cifar.FOLDER}/data_batch_1"
    write_tar(tmp_path / _cifar.ARCHIVE, members, extra=[info])
    with pytest.raises(DatasetError, match="test_batch is not a plain file"):
        datasets.load("cifar-10", "test", data_dir=tmp_path)


def test_oversized_and_repeated_members(tmp_path, monkeypatch):
    archive, batches = make_archive(tmp_path)
    monkeypatch.setattr(_cifar, "MAX_MEMBER", 5000)
    with pytest.raises(DatasetError, match=r"test_batch has \d+ bytes; a CIFAR-10 batch has at "
                                           r"most 5000"):
        datasets.load("cifar-10", "test", data_dir=tmp_path)
    folder = unpack(archive, tmp_path / "dir")
    with pytest.raises(DatasetError, match=r"test_batch: \d+ bytes; a CIFAR-10 batch has at most"):
        datasets.load("cifar-10", "test", data_dir=folder)
    monkeypatch.undo()
    members = {n: py2_pickle(b) for n, b in batches.items()}
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("test_batch", "test_batch"):
            info = tarfile.TarInfo(f"{_cifar.FOLDER}/{name}")
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    with pytest.raises(DatasetError, match="cifar-10-batches-py/test_batch is in the archive twice"):
        datasets.load("cifar-10", "test", data_dir=tmp_path)


def test_a_damaged_batch_is_a_dataset_error_whatever_the_damage():
    """Every byte of a small batch changed, one at a time, to a few values:
    each load gives a FormatError or the batch's shapes, never another
    exception (and the refused globals are never imported)."""
    good = py2_pickle(batch_with(data=np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 7))
    header = good[: good.index(b"\x89T")]  # everything before the array's 6144 bytes
    for i in range(len(header)):
        for value in (0, 1, 0x7F, 0xFF, good[i] ^ 0x20):
            damaged = good[:i] + bytes([value]) + good[i + 1:]
            try:
                images, labels = _cifar.read_batch(damaged)
            except _cifar.FormatError:
                continue
            assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
            assert labels.dtype == np.int64 and len(labels) == len(images)
            assert labels.min(initial=0) >= 0 and labels.max(initial=0) <= 9


def test_gzip_of_a_batch_is_not_a_batch(tmp_path):
    folder = tmp_path / _cifar.FOLDER
    folder.mkdir()
    (folder / "test_batch").write_bytes(gzip.compress(py2_pickle(batch_with())))
    with pytest.raises(DatasetError, match="test_batch: not a readable pickle"):
        datasets.load("cifar-10", "test", data_dir=tmp_path)


def test_random_batches_and_damage():
    """Hypothesis: batches of 0 to 3 images in Python 2's format or Python 3's
    protocols 2 to 4, whole (read back exactly) or damaged (a byte changed,
    bytes cut or inserted: a FormatError, or arrays of the right kinds)."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(n=st.integers(0, 3), seed=st.integers(0, 2**32 - 1),
                      protocol=st.sampled_from(["py2", 2, 3, 4]),
                      damage=st.one_of(st.none(), st.tuples(
                          st.sampled_from(["set", "cut", "insert"]), st.integers(0, 10**6),
                          st.binary(min_size=1, max_size=6))))
    def run(n, seed, protocol, damage):
        batch = make_batch(n, np.random.default_rng(seed))
        data = py2_pickle(batch) if protocol == "py2" else pickle.dumps(batch, protocol=protocol)
        if damage is None:
            images, labels = _cifar.read_batch(data)
            np.testing.assert_array_equal(images.reshape(n, 3072), batch[b"data"])
            assert labels.tolist() == batch[b"labels"]
            return
        op, pos, junk = damage
        pos %= len(data)
        data = {"set": data[:pos] + junk[:1] + data[pos + 1:], "cut": data[:pos],
                "insert": data[:pos] + junk + data[pos:]}[op]
        try:
            images, labels = _cifar.read_batch(data)
        except _cifar.FormatError:
            return
        assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == np.int64 and labels.shape == (len(images),)
        assert labels.min(initial=0) >= 0 and labels.max(initial=0) <= 9

    run()


# ---- the command line --------------------------------------------------------------------------


def cli(*args):
    from fastcnn import cli as command

    return command.main(list(args))


@pytest.fixture
def archive_dir(tmp_path):
    directory = tmp_path / "data"
    _, batches = make_archive(directory, sizes=(4, 4, 4, 4, 4), test=6)
    return directory, batches


def test_train_and_evaluate_lenet5_on_cifar_10(archive_dir, tmp_path, capsys):
    import fastcnn
    from fastcnn import models, optim

    data, batches = archive_dir
    path = tmp_path / "lenet.npz"
    assert cli("train", "--dataset", "cifar-10", "--model", "lenet5", "--data-dir", str(data),
               "--batch-size", "5", "--seed", "2", "--no-progress", "--save", str(path)) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    assert "lenet5 on cifar-10 (20 training, 6 test images)" in out and "test error:" in out
    model = fastcnn.load(path)
    assert tuple(model.input_shape) == (3, 32, 32) and model.layers[0].params["weight"].shape[1] == 3
    # what the command trained is what the library trains on the loaded data
    x, y = datasets.load("cifar-10", "train", data_dir=data)
    ref = models.lenet5(seed=2, input_shape=(3, 32, 32))
    ref.fit(x, y, epochs=1, batch_size=5, optimizer=optim.create("adam", ref), seed=2,
            progress=False)
    for k in ref.params:
        np.testing.assert_array_equal(ref.params[k], model.params[k])

    assert cli("evaluate", str(path), "--dataset", "cifar-10", "--data-dir", str(data)) == 0
    out = capsys.readouterr().out
    assert f"{path} on cifar-10 test (6 images): error" in out
    present = sorted(set(batches["test_batch"][b"labels"]))
    names = datasets.CLASS_NAMES["cifar-10"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == [names[c] for c in present]

    np.save(tmp_path / "two.npy", batches["test_batch"][b"data"][:2].reshape(2, 3, 32, 32))
    assert cli("predict", str(path), str(tmp_path / "two.npy")) == 0
    expected = model.predict(datasets.load("cifar-10", "test", data_dir=data)[0][:2])
    lines = capsys.readouterr().out.splitlines()  # the class by name, and its probability
    assert [line.rsplit(" ", 1)[0] for line in lines] == [
        f"{tmp_path / 'two.npy'}[{i}]: {names[expected[i]]}" for i in range(2)]


def test_train_vgg_mini_on_cifar_10(archive_dir, tmp_path, capsys):
    import fastcnn

    data, _ = archive_dir
    path = tmp_path / "vgg.npz"
    assert cli("train", "--dataset", "cifar-10", "--model", "vgg_mini", "--data-dir", str(data),
               "--batch-size", "10", "--no-progress", "--save", str(path)) == 0, \
        capsys.readouterr().err
    assert "vgg_mini on cifar-10" in capsys.readouterr().out
    model = fastcnn.load(path)
    assert tuple(model.input_shape) == (3, 32, 32)
    assert model.predict(datasets.load("cifar-10", "test", data_dir=data)[0]).shape == (6,)


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "seed_cnn"], "--model seed_cnn takes 1x28x28 images, and cifar-10's "
                                       "are 3x32x32: use --model lenet5, vgg_mini"),
    (["sweep", "--model", "seed_cnn", "--scheduler", "serial"],
     "--model seed_cnn takes 1x28x28 images"),
    (["train", "--recipe", "fashion-mnist"], "--recipe fashion-mnist trains on 1x28x28 images, "
                                             "and cifar-10's are 3x32x32"),
])
def test_models_for_grey_images_are_refused_before_the_data_is_read(args, message, capsys):
    # the data directory does not exist: the error is about the model
    assert cli(*args, "--dataset", "cifar-10", "--data-dir", "/nonexistent/dir",
               "--no-progress") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fastcnn: error: {message}")
    assert err.count("\n") == 1 and "/nonexistent" not in err


def test_without_model_cifar_10_trains_lenet5(archive_dir, capsys):
    """The default network is the paper's where it fits, LeNet-5 for colour."""
    data, _ = archive_dir
    assert cli("train", "--dataset", "cifar-10", "--data-dir", str(data), "--batch-size", "5",
               "--no-progress") == 0, capsys.readouterr().err
    assert "lenet5 on cifar-10 (20 training, 6 test images)" in capsys.readouterr().out


def test_evaluate_refuses_a_model_for_other_images(tmp_path, capsys):
    import fastcnn

    fastcnn.seed_cnn().save(tmp_path / "grey.npz")
    assert cli("evaluate", str(tmp_path / "grey.npz"), "--dataset", "cifar-10",
               "--data-dir", "/nonexistent/dir") == 1
    assert capsys.readouterr().err == (f"fastcnn: error: {tmp_path / 'grey.npz'} takes 1x28x28 "
                                       f"images, and cifar-10's are 3x32x32: evaluate it on a "
                                       f"dataset it was trained for\n")


def test_sweep_on_cifar_10(archive_dir, tmp_path, capsys):
    pytest.importorskip("tqdm")
    data, _ = archive_dir
    assert cli("sweep", "--model", "lenet5", "--dataset", "cifar-10", "--data-dir", str(data),
               "--lr", "0.001,0.01", "--scheduler", "serial", "--csv", str(tmp_path / "s.csv"),
               "--no-progress") == 0, capsys.readouterr().err
    assert "2 runs of lenet5 on cifar-10" in capsys.readouterr().out
