"""Checks on what users pass (arrays, numbers, sizes, choices), with one
message format.

The kernels run without bounds checks, so everything that reaches them goes
through here first: rank, shape, dtype, contiguity and finiteness. A failure
is a TypeError (wrong kind of thing) or ValueError (wrong value), and the
message says what was given and what was expected.
"""

import numbers

import numpy as np

DTYPES = ("float32", "float64")

# Rows checked for NaN/inf at a time, so that a memory-mapped dataset is not
# pulled into memory whole just to be checked.
_FINITE_CHUNK_BYTES = 8 << 20


def check_dtype(dtype):
    """Return np.dtype for "float32"/"float64" (or the NumPy dtypes), else raise."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    # native byte order: the kernels take no byte-swapped arrays (">f4" is float32 too)
    return np.dtype(dt.name)


# The kernels index with C ints: sizes, strides and paddings stay below this.
INT_MAX = 2**31 - 1


def check_int(value, name, minimum=1, maximum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_count(value, name):
    """A count of things (threads, workers): an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_size(value, name, minimum=1):
    """A size, stride or padding of a layer: an int the kernels can index with."""
    return check_int(value, name, minimum, INT_MAX)


def check_choice(value, name, choices):
    """value, if it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_bool(value, name):
    """value, if it is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_real(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_fraction(value, name):
    """A number in [0, 1): a momentum, a beta, a dropout rate."""
    value = _check_real(value, name)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def check_nonnegative(value, name):
    """A finite number >= 0: a weight decay, a least learning rate."""
    value = _check_real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_shape(shape, what, entries="input_shape entries"):
    """A shape: a tuple or list of sizes (each checked as `entries`);
    TypeError saying `what` it must be for anything else."""
    try:
        return tuple(check_size(s, entries) for s in shape)
    except TypeError:
        if isinstance(shape, (tuple, list)):
            raise
        raise TypeError(f"{what}, got {shape!r}") from None


def check_positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _as_array(x, name):
    if isinstance(x, np.ndarray):
        return x
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}: {e}") from None
    return arr


def _chunks(x):
    """x in pieces of whole rows of about _FINITE_CHUNK_BYTES each."""
    if x.ndim == 0 or x.shape[0] == 0:
        yield x
        return
    row_bytes = max(1, x[0].nbytes)
    step = max(1, _FINITE_CHUNK_BYTES // row_bytes)
    for start in range(0, x.shape[0], step):
        yield x[start : start + step]


def all_finite(x):
    """True if x holds no NaN or inf; scans large arrays a chunk of rows at a time."""
    return all(bool(np.isfinite(chunk).all()) for chunk in _chunks(x))


def _narrows(from_dtype, to_dtype):
    return from_dtype.kind == "f" and np.dtype(to_dtype).itemsize < from_dtype.itemsize


def fits(x, dtype):
    """True if every finite value of the real array x stays finite in `dtype`
    (False for 1e300 in float32, which would become inf)."""
    if not _narrows(x.dtype, dtype):
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        for chunk in _chunks(x):
            if not np.isfinite(chunk.astype(dtype)[np.isfinite(chunk)]).all():
                return False
    return True


def _too_large(name, x, dtype):
    biggest = 0.0
    for chunk in _chunks(x):
        finite = chunk[np.isfinite(chunk)]
        if finite.size:
            biggest = max(biggest, float(np.abs(finite).max()))
    dtype = np.dtype(dtype)
    return ValueError(
        f"{name} holds values too large for {dtype.name} (largest magnitude {biggest:.3g}; "
        f"{dtype.name} goes up to {float(np.finfo(dtype).max):.3g}); expected values that "
        f"stay finite in {dtype.name}"
    )


def cast_real(x, dtype, name):
    """x as a C-contiguous array of the float `dtype`, for the layers' own
    checked API: any real (bool, integer or floating) array is taken; complex,
    object, string and other arrays are refused with TypeError, and finite
    values that would overflow to inf in `dtype` with ValueError. NaN and inf
    are kept (they propagate through the layers)."""
    x = _as_array(x, name)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} has dtype {x.dtype}; expected real numbers (float32 or float64)")
    if _narrows(x.dtype, dtype):
        try:
            with np.errstate(over="raise"):
                return np.ascontiguousarray(x, dtype=dtype)
        except FloatingPointError:
            raise _too_large(name, x, dtype) from None
    return np.ascontiguousarray(x, dtype=dtype)


def check_images(x, input_shape, dtype, name="x", finite=True, copy_dtype=True):
    """Validate a batch of images (N, C, H, W) for a model taking `input_shape`.

    Any real floating dtype is accepted and cast to `dtype`; integer images are
    refused (pixels must be scaled to [0, 1] first, as datasets.load does).
    Non-contiguous and read-only arrays are accepted (copied where needed).
    Finite values too large for `dtype` (1e300 for float32) are refused, not
    cast to inf. With copy_dtype=False the dtype is checked but the array is not converted
    (fit converts batch by batch instead of copying a whole dataset).
    """
    x = _as_array(x, name)
    if x.dtype.kind in "iub":
        raise TypeError(
            f"{name} has dtype {x.dtype}; expected floating-point pixels "
            f"(float32 or float64, scaled to [0, 1]); for 8-bit images use x / 255"
        )
    if x.dtype.kind != "f":
        raise TypeError(f"{name} has dtype {x.dtype}; expected float32 or float64")
    if x.ndim != 4:
        hint = " (for one image, use x[None])" if x.ndim == 3 else ""
        raise ValueError(
            f"{name} has {x.ndim} dimensions {x.shape}; expected 4: (N, C, H, W){hint}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {x.shape}; expected at least one image")
    if tuple(x.shape[1:]) != tuple(input_shape):
        c, h, w = input_shape
        got_c, got_h, got_w = x.shape[1:]
        if got_c != c:
            what = f"{got_c} channels, the model takes {c}"
        else:
            what = f"{got_h}x{got_w} images, the model takes {h}x{w}"
        raise ValueError(
            f"{name} has shape {x.shape}: {what}; expected (N, {c}, {h}, {w})"
        )
    if finite and not all_finite(x):
        raise ValueError(f"{name} contains NaN or infinity; expected finite pixel values")
    if copy_dtype:
        return cast_real(x, dtype, name)
    if not fits(x, dtype):
        raise _too_large(name, x, dtype)
    return x


def check_targets(y, n, classes, dtype, name="y"):
    """Turn labels into the one-hot targets of eq. (13), shape (n, classes).

    Accepts integer class ids (n,) in [0, classes) or targets (n, classes).
    """
    y = _as_array(y, name)
    if y.ndim == 1:
        if y.dtype.kind not in "iu":
            raise TypeError(
                f"{name} has dtype {y.dtype}; class labels must be integers in "
                f"[0, {classes}) (or pass one-hot targets of shape (N, {classes}))"
            )
        if y.shape[0] != n:
            raise ValueError(f"{name} has {y.shape[0]} labels for {n} images")
        if n and (y.min() < 0 or y.max() >= classes):
            bad = y[(y < 0) | (y >= classes)][0]
            raise ValueError(
                f"{name} holds label {bad}, out of range: the model has {classes} "
                f"outputs, so labels must be in [0, {classes})"
            )
        t = np.zeros((n, classes), dtype=dtype)
        t[np.arange(n), y] = 1
        return t
    if y.ndim == 2:
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{name} has dtype {y.dtype}; expected numeric targets")
        if y.shape != (n, classes):
            raise ValueError(
                f"{name} has shape {y.shape}; expected ({n},) labels or ({n}, {classes}) targets"
            )
        if not np.isfinite(y).all():
            raise ValueError(f"{name} contains NaN or infinity; expected finite targets")
        if not fits(y, dtype):
            raise _too_large(name, y, dtype)
        return np.ascontiguousarray(y, dtype=dtype)
    raise ValueError(
        f"{name} has {y.ndim} dimensions; expected ({n},) labels or ({n}, {classes}) targets"
    )


def check_labels(y, n, classes, name="y"):
    """Class ids (n,) for evaluate: integer labels, or one-hot rows (argmax)."""
    y = _as_array(y, name)
    if y.ndim == 2:
        check_targets(y, n, classes, np.float64, name)
        return np.argmax(y, axis=1)
    if y.ndim != 1:
        raise ValueError(f"{name} has {y.ndim} dimensions; expected ({n},) labels")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} has dtype {y.dtype}; class labels must be integers")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels for {n} images")
    if n and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{name} holds labels outside [0, {classes})")
    return y
