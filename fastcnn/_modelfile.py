"""The model file: architecture (JSON) and parameters (arrays) in one .npz.

The file holds an array "__config__" (a JSON string: format name and
version, fastcnn version, the model's get_config()) and one array per
parameter, named as in `model.params`, and one per buffer
("__buffers__/NAME", as in `model.buffers`); a checkpoint of fit also holds
the state of training ("__training__", JSON) and its arrays
("__training__/NAME"). Nothing is pickled and files are read with
allow_pickle=False, so reading a file never runs code from it.

`write` goes through fastcnn._files.atomic_write, so a crash or Ctrl-C never
leaves a half-written model. `ModelFile` reads one entry at a time, each
.npy header checked against the archive and against what the caller
expects before its data is read, so that a damaged file cannot make it
allocate more memory than the file holds.

This module knows the format and the layers, not the model classes:
fastcnn.io builds a model from what it reads, and a checkpoint is read back
into the model that made it.
"""

import json
import math
import os
import zipfile
import zlib

import numpy as np

from fastcnn._files import atomic_write
from fastcnn._validate import check_dtype, check_int, check_shape
from fastcnn._version import __version__
from fastcnn.layers import layers_from_config

# What a model file may ask of the reader, checked before the memory is
# spent (fastcnn.io.load(limits=...) and fastcnn.io.LIMITS change them):
LIMITS = {
    # the JSON entries: an architecture of tens of thousands of layers is
    # well under a megabyte; a checkpoint's history grows with the batches
    "config_bytes": 16 << 20,
    "training_state_bytes": 256 << 20,
    # trainable scalars of the architecture (400 MB in float32)
    "parameters": 100_000_000,
    # every layer's output for one image, which each image of a batch needs
    "activation_bytes_per_image": 64 << 20,
}

FORMAT = "fastcnn-model"
FORMAT_VERSION = 1
CONFIG_KEY = "__config__"
TRAINING_KEY = "__training__"
BUFFERS_KEY = "__buffers__"  # BUFFERS_KEY/NAME: a buffer (batch norm's running estimates, ...)

# What reading a damaged zip archive or .npy entry raises: zipfile raises
# NotImplementedError for an unknown compression method or version and
# RuntimeError for an entry flagged as encrypted.
DAMAGED = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
           RuntimeError)


def write(path, model, training_state=None, training_arrays=None):
    """Write `model` (its get_config() and params) to `path` (.npz; the name
    is used as given), with the JSON-compatible `training_state` of a
    checkpoint and its arrays (an optimiser's memory) if given.

    A model whose parameters hold NaN or infinity is refused (ValueError),
    since reading would refuse the file."""
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
    for name, value in getattr(model, "buffers", {}).items():
        arrays[BUFFERS_KEY + "/" + name] = value
    atomic_write(path, lambda f: np.savez(f, **arrays))


# Keys of Sequential.get_config() that describe how a model is used, not
# what it computes: a checkpoint resumes whatever they hold.
NOT_ARCHITECTURE = ("classes", "default_optimizer")


def check_limits(limits):
    """LIMITS with the entries of `limits` (a dict, or None) in their place."""
    if limits is None:
        return dict(LIMITS)
    if not isinstance(limits, dict):
        raise TypeError(f"limits must be a dict of some of {sorted(LIMITS)}, got {limits!r}")
    unknown = sorted(set(limits) - set(LIMITS))
    if unknown:
        raise ValueError(f"unknown limits {unknown}; the limits are {sorted(LIMITS)}")
    for key, value in limits.items():
        check_int(value, f"limits[{key!r}]", minimum=1)
    return dict(LIMITS, **limits)


def architecture_difference(saved, current):
    """None if two get_config() dicts describe the same network, else a short
    phrase naming the first difference (a layer, the input, the dtype...)."""
    saved = {k: v for k, v in saved.items() if k not in NOT_ARCHITECTURE}
    current = {k: v for k, v in current.items() if k not in NOT_ARCHITECTURE}
    if saved == current:
        return None
    for key in ("input_shape", "dtype", "loss"):
        if saved.get(key) != current.get(key):
            return f"{key} {saved.get(key)!r} there, {current.get(key)!r} here"
    a, b = saved.get("layers", []), current.get("layers", [])
    for i, (x, y) in enumerate(zip(a, b)):
        if x == y:
            continue
        cx, cy = x.get("config", {}), y.get("config", {})
        name = cy.get("name", i + 1)
        if x.get("type") != y.get("type"):
            return f"layer {name}: {x.get('type')} there, {y.get('type')} here"
        keys = [k for k in sorted(set(cx) | set(cy)) if cx.get(k) != cy.get(k)]
        return f"layer {name} ({y.get('type')}): " + ", ".join(
            f"{k} {_short(cx.get(k))} there, {_short(cy.get(k))} here" for k in keys[:3])
    return f"{len(a)} layers there, {len(b)} here"


def _short(value):
    if value is None:
        return "the default"  # get_config leaves defaults out
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def bad(path, why):
    """The ValueError for a file that is not a usable model file."""
    return ValueError(f"{os.fspath(path)!s} is not a usable fastcnn model file: {why}")


def _ours(error, path):
    return isinstance(error, ValueError) and str(error).startswith(os.fspath(path))


class ModelFile:
    """A model file opened for reading (use `with ModelFile(path) as f:`).

    Attributes: `path`; `model_config`, the architecture (a dict, as
    get_config() wrote it); `dtype`, the parameters' dtype it declares.

    Every failure to read is a ValueError that names the file and the
    problem (FileNotFoundError for a missing file).
    """

    def __init__(self, path, limits=None):
        self.path = path
        self.limits = check_limits(limits)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such model file: {os.fspath(path)}")
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic.startswith(b"\x93NUMPY"):
            raise bad(path, "it holds a single array, not an .npz archive of a model")
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise bad(path, f"it is not an .npz (zip) archive (it starts with {magic!r})")
        try:
            self._archive = np.load(path, allow_pickle=False)
        except DAMAGED as e:
            raise bad(path, f"cannot read it as .npz ({type(e).__name__}: {e})") from None
        if not isinstance(self._archive, np.lib.npyio.NpzFile):
            raise bad(path, "it holds a single array, not an .npz archive of a model")
        try:
            self._read_config()
        except BaseException:
            self.close()
            raise

    def close(self):
        """Close the archive."""
        self._archive.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _guarded(self, read):
        """read(), with the damage it meets reported as ValueError naming the file."""
        try:
            return read()
        except DAMAGED + (KeyError, TypeError) as e:
            if _ours(e, self.path):
                raise
            if type(e) is ValueError:  # numpy's words for a bad .npy header, say
                raise bad(self.path, str(e)) from None
            raise bad(self.path, f"it is damaged ({type(e).__name__}: {e})") from None

    def _read_config(self):
        def read():
            if CONFIG_KEY not in self._archive.files:
                raise bad(self.path, f"it has no {CONFIG_KEY!r} entry (not written by fastcnn)")
            config = self._json(CONFIG_KEY, "configuration", self.limits["config_bytes"])
            if not isinstance(config, dict) or config.get("format") != FORMAT:
                raise bad(self.path, f"its format is "
                                     f"{config.get('format') if isinstance(config, dict) else None!r}, "
                                     f"expected {FORMAT!r}")
            version = config.get("format_version")
            if not isinstance(version, int) or version < 1:
                raise bad(self.path, f"its format version {version!r} is not valid")
            if version > FORMAT_VERSION:
                raise bad(self.path, f"it was written by fastcnn {config.get('fastcnn_version', '?')} "
                                     f"in format version {version}; this fastcnn ({__version__}) "
                                     f"reads format versions up to {FORMAT_VERSION}: upgrade "
                                     f"fastcnn to load it")
            spec = config.get("model")
            if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list):
                raise bad(self.path, "its configuration has no model architecture")
            return spec

        self.model_config = self._guarded(read)
        try:
            self.dtype = check_dtype(self.model_config.get("dtype"))
        except ValueError as e:
            raise bad(self.path, f"its architecture cannot be built ({e})") from None

    def _json(self, key, what, limit):
        raw = self._array(key, limit=limit, limit_name=what)
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise bad(self.path, f"its {key!r} entry is not a JSON string")
        try:
            return json.loads(str(raw))
        except json.JSONDecodeError as e:
            raise bad(self.path, f"its {what} is not valid JSON ({e})") from None

    def plan(self):
        """The layers of the file's architecture (unbuilt), once it is known
        to fit: the file holds every parameter, and neither the parameter
        count nor one image's activations exceed the limits. Nothing is
        allocated before that; a model is then built from these layers
        (Sequential.from_config(config, layers=...)), so the architecture is
        parsed once."""
        limits = self.limits
        try:
            layers = layers_from_config(self.model_config)
            shape = check_shape(self.model_config.get("input_shape"), "input_shape")
            count, activations = 0, math.prod(shape)
            for layer in layers:
                count += sum(math.prod(s) for s in layer.parameter_shapes().values())
                shape = tuple(layer.compute_output_shape(shape))
                activations += math.prod(shape)
                if activations * self.dtype.itemsize > limits["activation_bytes_per_image"]:
                    raise bad(self.path, f"its layer {layer.name or type(layer).__name__} brings "
                                         f"the activations of one image to "
                                         f"{activations * self.dtype.itemsize:,} bytes, more than "
                                         f"the limit of {limits['activation_bytes_per_image']:,} "
                                         f"(fastcnn.io.LIMITS['activation_bytes_per_image'])")
        except (TypeError, ValueError, KeyError) as e:
            if _ours(e, self.path):
                raise
            raise bad(self.path, f"its architecture cannot be built ({e})") from None
        if count > limits["parameters"]:
            raise bad(self.path, f"its architecture has {count:,} parameters, more than the "
                                 f"limit of {limits['parameters']:,} "
                                 f"(fastcnn.io.LIMITS['parameters'])")
        size = os.path.getsize(self.path)
        if count * self.dtype.itemsize > size:
            raise bad(self.path, f"its architecture needs {count} parameters, more than the "
                                 f"file ({size} bytes) holds")
        return layers

    def parameters(self, expected):
        """{name: array} of the parameters, for `expected` {name: array of the
        shape and dtype wanted} (a model's params): every one present, no
        other, each of that shape and dtype and finite."""
        stored = {n for n in self._archive.files if n not in (CONFIG_KEY, TRAINING_KEY)
                  and not n.startswith((TRAINING_KEY + "/", BUFFERS_KEY + "/"))}
        return self._entries(expected, stored, "", "parameters")

    def buffers(self, expected):
        """{name: array} of the buffers, as parameters() for a model's buffers."""
        prefix = BUFFERS_KEY + "/"
        stored = {n[len(prefix):] for n in self._archive.files if n.startswith(prefix)}
        return self._entries(expected, stored, prefix, "buffers")

    def _entries(self, expected, stored, prefix, what):
        missing, unexpected = sorted(set(expected) - stored), sorted(stored - set(expected))
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {what} {missing}")
            if unexpected:
                parts.append(f"unexpected entries {[prefix + n for n in unexpected]}")
            raise bad(self.path, "; ".join(parts))

        def read():
            values = {}
            for name, target in expected.items():
                value = self._array(prefix + name, target.shape, target.dtype)
                if value.dtype.kind == "f" and not np.isfinite(value).all():
                    raise bad(self.path, f"{what[:-1]} {name} contains NaN or infinity")
                values[name] = value
            return values

        return self._guarded(read)

    def training_state(self, parameters):
        """(state, arrays): the training state of a checkpoint (JSON values)
        and its arrays, or (None, {}) for a plain model file. `parameters`,
        the model's parameter count, bounds each array (an optimiser's
        memory is at most one value per parameter, in float64)."""
        limits = self.limits

        def read():
            if TRAINING_KEY not in self._archive.files:
                return None, {}
            state = self._json(TRAINING_KEY, "training state", limits["training_state_bytes"])
            if not isinstance(state, dict):
                raise bad(self.path, f"its {TRAINING_KEY!r} entry is not a JSON object")
            prefix = TRAINING_KEY + "/"
            arrays = {k[len(prefix):]: self._array(k, limit=8 * max(parameters, 1) + 64,
                                                   limit_name="optimiser state")
                      for k in self._archive.files if k.startswith(prefix)}
            return state, arrays

        return self._guarded(read)

    def _array(self, name, shape=None, dtype=None, limit=None, limit_name=None):
        """The entry `name`, after checking its .npy header (before any data is
        read): numbers or text, not Python objects; exactly as much data as
        the zip entry holds; `shape` and `dtype` if given, and at most
        `limit` bytes. The zip entry's declared size bounds what is
        decompressed (zipfile stops there), so a compressed entry that
        expands further is never read past what its header promised."""
        archive, path = self._archive, self.path
        member = name + ".npy"
        try:
            info = archive.zip.getinfo(member)
        except KeyError:
            raise bad(path, f"its entry {name!r} is not a .npy array") from None
        with archive.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                got_shape, _, got_dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                got_shape, _, got_dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise bad(path, f"its entry {name!r} is in .npy format {version}; "
                                f"expected 1.0 or 2.0")
            start = f.tell()
        if got_dtype.hasobject or got_dtype.kind not in "biufcSU":
            raise bad(path, f"its entry {name!r} holds {got_dtype} data (pickled objects or "
                            f"records); a fastcnn model file holds only numbers and text")
        nbytes = math.prod(got_shape) * got_dtype.itemsize
        if start + nbytes != info.file_size:
            raise bad(path, f"its entry {name!r} is damaged: its header announces {got_shape} "
                            f"{got_dtype} ({nbytes} bytes), the archive holds "
                            f"{max(0, info.file_size - start)} bytes")
        if limit is not None and nbytes > limit:
            raise bad(path, f"its entry {name!r} ({limit_name}) declares {nbytes:,} bytes, more "
                            f"than the {limit:,} such an entry may hold")
        if shape is not None and tuple(got_shape) != tuple(shape):
            raise bad(path, f"parameter {name} has shape {tuple(got_shape)}, the architecture "
                            f"needs {tuple(shape)}")
        if dtype is not None and got_dtype != dtype:
            raise bad(path, f"parameter {name} has dtype {got_dtype}, the model is {dtype}")
        return archive[name]
