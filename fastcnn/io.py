"""Model files: architecture (JSON) and parameters (arrays) in one .npz.

The file holds an array "__config__" (a JSON string: format name and
version, fastcnn version, the model's get_config()) and one array per
parameter, named as in `model.params`. Nothing is pickled and `load` reads
with allow_pickle=False, so loading a file never runs code from it. Layers
are rebuilt from a fixed table of fastcnn's own classes.

`save` writes to a temporary file in the target directory and renames it
over the target, so a crash or Ctrl-C never leaves a half-written model.
"""

import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

from fastcnn._validate import check_dtype
from fastcnn._version import __version__

FORMAT = "fastcnn-model"
FORMAT_VERSION = 1
CONFIG_KEY = "__config__"
# checkpoints of fit also hold the state of training, as JSON (see fastcnn.training)
TRAINING_KEY = "__training__"


def atomic_write(path, write):
    """Call write(fileobj) on a temporary file beside `path`, then rename it
    to `path`; on any failure the temporary file is removed and `path` is
    untouched. Missing parent directories are created."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save(model, path, training_state=None, training_arrays=None):
    """Write `model` to `path` (.npz; the name is used as given), with the
    JSON-compatible `training_state` of a checkpoint and its arrays (an
    optimiser's memory) if given.

    A model whose parameters hold NaN or infinity is refused (ValueError),
    since `load` would refuse the file."""
    for name, value in model.params.items():
        if not np.isfinite(value).all():
            raise ValueError(f"cannot save the model: parameter {name} contains NaN or "
                             f"infinity, and fastcnn.load refuses such files")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastcnn_version": __version__,
        "model": model.get_config(),
    }
    arrays = {CONFIG_KEY: np.array(json.dumps(config))}
    if training_state is not None:
        arrays[TRAINING_KEY] = np.array(json.dumps(training_state))
    for name, value in (training_arrays or {}).items():
        arrays[TRAINING_KEY + "/" + name] = value
    for name, value in model.params.items():
        arrays[name] = value
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _bad(path, why):
    return ValueError(f"{os.fspath(path)!s} is not a usable fastcnn model file: {why}")


def load(path, with_training_state=False):
    """Read a model written by `save` (or `Sequential.save`, or a checkpoint of fit).

    With with_training_state=True, return (model, state, arrays): the
    training state and arrays of a checkpoint, or None and {} for a plain
    model file.

    Raises FileNotFoundError for a missing file, and ValueError, naming the
    problem, for a file that is not a fastcnn model (wrong format, truncated,
    corrupt, pickled objects, missing or unexpected parameters, wrong shapes
    or dtypes, NaN or inf values: a model with NaN parameters is refused
    here, not loaded) or that was written by a newer fastcnn whose format
    this one cannot read. Each array's header is checked against the
    architecture and the archive before its data is read, so a damaged file
    cannot make `load` allocate more memory than the file holds.
    """
    from fastcnn.model import Sequential

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such model file: {os.fspath(path)}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise _bad(path, "it holds a single array, not an .npz archive of a model")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise _bad(path, f"it is not an .npz (zip) archive (it starts with {magic!r})")
    try:
        archive = np.load(path, allow_pickle=False)
    except _DAMAGED as e:
        raise _bad(path, f"cannot read it as .npz ({type(e).__name__}: {e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _bad(path, "it holds a single array, not an .npz archive of a model")
    with archive:
        try:
            model = _read(path, archive, Sequential)
            if not with_training_state:
                return model
            state, arrays = None, {}
            if TRAINING_KEY in archive.files:
                raw = _array(path, archive, TRAINING_KEY)
                if raw.dtype.kind != "U" or raw.ndim != 0:
                    raise _bad(path, f"its {TRAINING_KEY!r} entry is not a JSON string")
                state = json.loads(str(raw))
                prefix = TRAINING_KEY + "/"
                arrays = {k[len(prefix):]: _array(path, archive, k)
                          for k in archive.files if k.startswith(prefix)}
            return model, state, arrays
        except _DAMAGED + (KeyError, TypeError) as e:
            if isinstance(e, ValueError) and str(e).startswith(os.fspath(path)):
                raise  # already ours
            if type(e) is ValueError:  # numpy's words for a bad .npy header, say
                raise _bad(path, str(e)) from None
            raise _bad(path, f"it is damaged ({type(e).__name__}: {e})") from None


# What reading a damaged zip archive or .npy entry raises: zipfile raises
# NotImplementedError for an unknown compression method or version and
# RuntimeError for an entry flagged as encrypted.
_DAMAGED = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError)


def _array(path, archive, name, shape=None, dtype=None):
    """archive[name], after checking its .npy header (before any data is read):
    numbers or text, not Python objects; exactly as much data as the zip entry
    holds; and `shape` and `dtype` if given."""
    member = name + ".npy"
    try:
        info = archive.zip.getinfo(member)
    except KeyError:
        raise _bad(path, f"its entry {name!r} is not a .npy array") from None
    with archive.zip.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            got_shape, _, got_dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            got_shape, _, got_dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _bad(path, f"its entry {name!r} is in .npy format {version}; expected 1.0 or 2.0")
        start = f.tell()
    if got_dtype.hasobject or got_dtype.kind not in "biufcSU":
        raise _bad(path, f"its entry {name!r} holds {got_dtype} data (pickled objects or records); "
                         f"a fastcnn model file holds only numbers and text")
    nbytes = math.prod(got_shape) * got_dtype.itemsize
    if start + nbytes != info.file_size:
        raise _bad(path, f"its entry {name!r} is damaged: its header announces {got_shape} "
                         f"{got_dtype} ({nbytes} bytes), the archive holds "
                         f"{max(0, info.file_size - start)} bytes")
    if shape is not None and tuple(got_shape) != tuple(shape):
        raise _bad(path, f"parameter {name} has shape {tuple(got_shape)}, the architecture "
                         f"needs {tuple(shape)}")
    if dtype is not None and got_dtype != dtype:
        raise _bad(path, f"parameter {name} has dtype {got_dtype}, the model is {dtype}")
    return archive[name]


def _read(path, archive, Sequential):
    from fastcnn.model import _layers_from_config

    names = set(archive.files)
    if CONFIG_KEY not in names:
        raise _bad(path, f"it has no {CONFIG_KEY!r} entry (not written by fastcnn)")
    raw = _array(path, archive, CONFIG_KEY)
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise _bad(path, f"its {CONFIG_KEY!r} entry is not a JSON string")
    try:
        config = json.loads(str(raw))
    except json.JSONDecodeError as e:
        raise _bad(path, f"its configuration is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise _bad(path, f"its format is {config.get('format') if isinstance(config, dict) else None!r}, "
                         f"expected {FORMAT!r}")
    version = config.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise _bad(path, f"its format version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise _bad(path, f"it was written by fastcnn {config.get('fastcnn_version', '?')} in "
                         f"format version {version}; this fastcnn ({__version__}) reads format "
                         f"versions up to {FORMAT_VERSION}: upgrade fastcnn to load it")
    spec = config.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list):
        raise _bad(path, "its configuration has no model architecture")
    try:
        # before anything is allocated: the file must hold every parameter
        needed = sum(math.prod(shape) for layer in _layers_from_config(spec)
                     for shape in layer.parameter_shapes().values())
        dtype = check_dtype(spec.get("dtype"))
        if needed * dtype.itemsize > os.path.getsize(path):
            raise _bad(path, f"its architecture needs {needed} parameters, more than the "
                             f"file ({os.path.getsize(path)} bytes) holds")
        model = Sequential.from_config(spec)
    except (TypeError, ValueError, KeyError) as e:
        if str(e).startswith(os.fspath(path)):
            raise
        raise _bad(path, f"its architecture cannot be built ({e})") from None

    expected = set(model.params)
    stored = {n for n in names - {CONFIG_KEY, TRAINING_KEY}
              if not n.startswith(TRAINING_KEY + "/")}
    missing, unexpected = sorted(expected - stored), sorted(stored - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing parameters {missing}")
        if unexpected:
            parts.append(f"unexpected entries {unexpected}")
        raise _bad(path, "; ".join(parts))
    for name, target in model.params.items():
        value = _array(path, archive, name, target.shape, target.dtype)
        if not np.isfinite(value).all():
            raise _bad(path, f"parameter {name} contains NaN or infinity")
        target[...] = value
    return model
