"""CIFAR-10's python-version files, read without running their pickles.

The archive cifar-10-python.tar.gz (Alex Krizhevsky, "Learning Multiple
Layers of Features from Tiny Images", 2009) holds cifar-10-batches-py/ with
data_batch_1..5 (the 50,000 training images), test_batch (10,000) and
batches.meta. Each batch is a pickle that Python 2 wrote (protocol 2): a
dict with byte-string keys, b"data" a NumPy uint8 array (N, 3072) whose rows
are images as 1024 red, 1024 green, then 1024 blue bytes (each plane 32x32,
row by row), b"labels" a list of N ints 0..9, and b"batch_label" and
b"filenames", which fastcnn does not need.

Threat model. pickle.load calls whatever importable function the stream
names (os.system, builtins.eval...), so a tampered batch would run code as
the user: a download is checked against the published SHA-256, but a file
someone put in a search directory, or a mirror's archive before its check,
is not. So the batches go through `_Unpickler`, whose find_class knows only
the globals that a pickled uint8 array of these files names (NumPy's
_reconstruct, ndarray and dtype; and codecs.encode and bytes, with which
Python 3 pickles bytes at protocol 2) and answers each with a stand-in of this
module, never with NumPy's own: the stand-ins accept exactly the arguments
and state of a C-ordered uint8 array and build it with np.frombuffer, so
nothing from the stream reaches NumPy but bytes and a checked shape. Every
other global is refused before anything is called. Members are read by
exact name into memory, at most MAX_MEMBER bytes each and only from plain
files (no links or devices); nothing is extracted to disk.
"""

import gzip
import io
import os
import pickle
import pickletools
import tarfile
import zlib

import numpy as np

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
SHAPE = (3, 32, 32)
CLASSES = 10
# The real batches are about 31.04 MB (10,000 images of 3072 bytes, labels
# and file names); more than this is not a CIFAR-10 batch.
MAX_MEMBER = 32 * 2**20

_ROW = SHAPE[0] * SHAPE[1] * SHAPE[2]


class FormatError(ValueError):
    """A CIFAR-10 file or archive is not what the python version holds
    (datasets.load reports it as a datasets.DatasetError)."""


class _Global:
    """What find_class answers for an allowed global: calls `function`. Not a
    class, so that the stream cannot instantiate it (NEWOBJ); no attributes
    to set and a BUILD refused, so that a stream cannot change it for the
    next file (as it could a function's __defaults__)."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)

    def __setstate__(self, state):
        raise FormatError("the pickle sets the state of a function")


def _ndarray(*args):
    raise FormatError("numpy.ndarray called directly; the batches rebuild arrays with _reconstruct")


_NDARRAY = _Global(_ndarray)  # the class argument of _reconstruct


class _DType:
    """A uint8 dtype as numpy.dtype("u1", 0, 1) and its state rebuild it."""

    def __setstate__(self, state):
        # (version 3, byte order "|" (not applicable), no subarray, no field
        # names, no fields, element size -1, alignment -1, flags 0)
        if (not isinstance(state, tuple) or len(state) != 8 or state[0] != 3
                or state[1] not in ("|", b"|") or state[2:] != (None, None, None, -1, -1, 0)):
            raise FormatError(f"the dtype's state {_short(state)} is not uint8's")


def _dtype(name, align=False, copy=True):
    if name not in ("u1", b"u1") or align or not copy:
        raise FormatError(f"dtype {_short(name)} (align {align!r}, copy {copy!r}); "
                          f"expected uint8 ('u1')")
    return _DType()


class _Array:
    """A uint8 array as _reconstruct(ndarray, (0,), b"b") and its state
    (1, shape, dtype, is_fortran, raw bytes) rebuild it; .array holds it."""

    array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise FormatError(f"array state {_short(state)}; expected "
                              f"(1, shape, dtype, is_fortran, data)")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType):
            raise FormatError("the array's dtype is not uint8")
        if fortran is not False:
            raise FormatError("the array is in Fortran order; the batches are in C order")
        if (not isinstance(shape, tuple) or len(shape) != 2
                or not all(type(n) is int and n >= 0 for n in shape)):
            raise FormatError(f"array shape {_short(shape)}; expected (N, {_ROW})")
        if not isinstance(raw, bytes) or len(raw) != shape[0] * shape[1]:
            size = len(raw) if isinstance(raw, (bytes, str)) else type(raw).__name__
            raise FormatError(f"array of shape {shape} with {size} bytes of data")
        self.array = np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise FormatError("an array other than a plain ndarray")
    return _Array()


def _encode(text, encoding):
    # Python 3 pickles bytes at protocol 2 as codecs.encode(text, "latin1")
    if not isinstance(text, str) or encoding != "latin1":
        raise FormatError(f"codecs.encode with {encoding!r}; only latin1 is expected")
    return text.encode("latin1")


def _empty_bytes(*args):
    # Python 3 pickles b"" at protocol 2 as bytes()
    if args:
        raise FormatError(f"bytes{_short(args)}; only bytes() is expected")
    return b""


_GLOBALS = {
    # as NumPy 1 (and the real files) name it, and as NumPy 2 does
    ("numpy.core.multiarray", "_reconstruct"): _Global(_reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): _Global(_reconstruct),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Global(_dtype),
    ("_codecs", "encode"): _Global(_encode),
    ("__builtin__", "bytes"): _Global(_empty_bytes),  # as protocol 2 names builtins, for Python 2
}


class _Unpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes, ints and uint8 arrays; refuses any other
    global, so that no function the stream names is ever called."""

    def find_class(self, module, name):
        found = _GLOBALS.get((module, name))
        if found is None:
            raise FormatError(f"refused to load {module}.{name}: the pickle names a function "
                              f"or class that CIFAR-10's batches do not (a tampered file?)")
        return found

    def persistent_load(self, pid):
        raise FormatError("the pickle refers to a persistent object; CIFAR-10's batches do not")


def _short(value, limit=60, depth=0):
    """A repr for messages that stays short without first building a long
    one (a batch's state holds 30 MB of bytes; a tampered one may nest lists
    a million deep)."""
    if depth > 2 and isinstance(value, (tuple, list, dict)):
        return "..."
    if isinstance(value, (bytes, str)) and len(value) > limit:
        return f"<{type(value).__name__} of length {len(value)}>"
    if isinstance(value, dict):
        return f"<dict of {len(value)} entries>"
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"<int of {value.bit_length()} bits>"  # repr would refuse past 4300 digits
    if isinstance(value, (tuple, list)):
        parts = [_short(v, limit, depth + 1) for v in value[:6]] + (["..."] if len(value) > 6 else [])
        text = ", ".join(parts)
        text = f"({text},)" if isinstance(value, tuple) and len(value) == 1 else (
            f"({text})" if isinstance(value, tuple) else f"[{text}]")
    else:
        text = repr(value)
    return text if len(text) <= 4 * limit else text[:4 * limit] + "..."


def _check_memo(data):
    """Refuse memo indices that are larger than the count of opcodes before
    them. A real pickle numbers its memo 1, 2, 3... as it goes; CPython's
    unpickler sizes its memo by the largest index, so one LONG_BINPUT of
    2**32 - 1 in a tampered file would make it allocate gigabytes."""
    for count, (op, arg, _) in enumerate(pickletools.genops(data)):
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > count:
            raise FormatError(f"memo index {arg} after {count} opcodes (a tampered file?)")


def read_batch(data, where="batch"):
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one batch's bytes.

    Raises FormatError saying what was wrong: not a pickle, a refused
    global, no dict, a missing key, data that is not a uint8 array (N, 3072),
    labels that are not N ints 0..9.
    """
    try:
        _check_memo(data)
        batch = _Unpickler(io.BytesIO(data), encoding="bytes").load()
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from None
    except Exception as e:  # a malformed stream: truncated, bad opcodes, wrong arguments
        raise FormatError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise FormatError(f"{where}: holds a {type(batch).__name__}; expected a dict")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    for key in ("data", "labels"):
        if key not in batch:
            raise FormatError(f"{where}: no {key!r} entry (keys {_short(list(batch))})")
    images, labels = batch["data"], batch["labels"]
    if not isinstance(images, _Array):
        raise FormatError(f"{where}: 'data' is a {type(images).__name__}; expected a uint8 "
                          f"array (N, {_ROW})")
    images = images.array
    if images is None or images.shape[1] != _ROW:
        shape = None if images is None else images.shape
        raise FormatError(f"{where}: 'data' has shape {shape}; expected (N, {_ROW}), an image "
                          f"of {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} bytes per row")
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise FormatError(f"{where}: 'labels' must be a list of ints, got {_short(labels)}")
    if len(labels) != len(images):
        raise FormatError(f"{where}: {len(images)} images but {len(labels)} labels")
    for v in labels:
        if not 0 <= v < CLASSES:
            raise FormatError(f"{where}: label {_short(v)} out of range 0..{CLASSES - 1}")
    return images.reshape((-1,) + SHAPE), np.array(labels, dtype=np.int64)


def _archive_members(path, names):
    """{name: bytes} of the members FOLDER/name of the archive at path."""
    wanted = {f"{FOLDER}/{name}": name for name in names}
    found = {}
    try:
        with gzip.open(path, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r:") as tar:
                for member in tar:
                    member_name = member.name[2:] if member.name.startswith("./") else member.name
                    if member_name not in wanted:
                        continue
                    name = wanted[member_name]
                    if name in found:
                        raise FormatError(f"{path}: {member_name} is in the archive twice")
                    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                        raise FormatError(f"{path}: {member_name} is not a plain file (a link "
                                          f"or a device); refused")
                    if member.size > MAX_MEMBER:
                        raise FormatError(f"{path}: {member_name} has {member.size} bytes; a "
                                          f"CIFAR-10 batch has at most {MAX_MEMBER}")
                    data = tar.extractfile(member).read(member.size)
                    if len(data) != member.size:
                        raise FormatError(f"{path}: {member_name} is truncated")
                    found[name] = data
            # to the end of the gzip stream, so that its length and CRC are checked
            while gz.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise FormatError(f"{path}: corrupt or truncated archive ({type(e).__name__}: {e})") from None
    missing = [f"{FOLDER}/{name}" for name in names if name not in found]
    if missing:
        raise FormatError(f"{path}: no {', '.join(missing)} in the archive; is it "
                          f"{ARCHIVE}, the python version?")
    return found


def _folder_member(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise FormatError(f"{folder}: no file {name}")
    size = os.path.getsize(path)
    if size > MAX_MEMBER:
        raise FormatError(f"{path}: {size} bytes; a CIFAR-10 batch has at most {MAX_MEMBER}")
    with open(path, "rb") as f:
        return f.read(MAX_MEMBER + 1)


def read(path, split):
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of a split ("train":
    data_batch_1..5 in order; "test": test_batch), from the archive or from
    a directory holding the batch files (cifar-10-batches-py/)."""
    names = BATCHES[split]
    path = os.fspath(path)
    if os.path.isdir(path):
        members = {name: _folder_member(path, name) for name in names}
        where = {name: os.path.join(path, name) for name in names}
    else:
        members = _archive_members(path, names)
        where = {name: f"{path}: {FOLDER}/{name}" for name in names}
    batches = [read_batch(members.pop(name), where[name]) for name in names]
    if len(batches) == 1:
        return batches[0]
    return (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
