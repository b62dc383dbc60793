"""MNIST, Fashion-MNIST and CIFAR-10: files found locally or downloaded and verified.

`load(name, split)` looks for the dataset's files (MNIST's and
Fashion-MNIST's four IDX files, gzipped or not; CIFAR-10's
cifar-10-python.tar.gz, or the cifar-10-batches-py/ directory it unpacks to) in
  1. `data_dir`, if given (and nowhere else);
  2. $FASTCNN_DATA/<name>;
  3. ~/.cache/fastcnn/<name> (where downloads go);
  4. /usr/share/datasets/<name> (Debian's packages: `apt-get install dataset-fashion-mnist`);
and otherwise downloads them from the dataset's public mirrors into the
cache, checking each file's SHA-256 before it is kept.
"""

import gzip
import hashlib
import math
import os
import zlib

import numpy as np

from fastcnn import _cifar
from fastcnn._files import atomic_write
from fastcnn._optional import install_hint
from fastcnn._validate import check_dtype, check_int, check_shape

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# MNIST's and Fashion-MNIST's original gzip files (SHA-256 from TensorFlow
# Datasets' url_checksums), and CIFAR-10's python version (Krizhevsky,
# "Learning Multiple Layers of Features from Tiny Images", 2009). CIFAR-10's
# page publishes an MD5 (c58f30108f718f92721af3b95e74349a, which torchvision
# checks) and no SHA-256; the SHA-256 here is the one Keras checks for the same
# URL (keras/src/datasets/cifar10.py).
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    # S3 website endpoints serve plain HTTP only; the SHA-256 check is what
    # makes a download trustworthy, not the transport.
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ],
    "cifar-10": ["https://www.cs.toronto.edu/~kriz/"],
}
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "cifar-10": {
        _cifar.ARCHIVE: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    },
}
# Bytes of each file: a download that goes past it (plus SIZE_MARGIN) is
# stopped, so that a wrong or hostile mirror cannot fill the disk; a file
# of unknown size (checksums= of download) stops at MAX_DOWNLOAD
SIZES = {
    "mnist": {"train-images-idx3-ubyte.gz": 9912422, "train-labels-idx1-ubyte.gz": 28881,
              "t10k-images-idx3-ubyte.gz": 1648877, "t10k-labels-idx1-ubyte.gz": 4542},
    "fashion-mnist": {"train-images-idx3-ubyte.gz": 26421880,
                      "train-labels-idx1-ubyte.gz": 29515,
                      "t10k-images-idx3-ubyte.gz": 4422102, "t10k-labels-idx1-ubyte.gz": 5148},
    "cifar-10": {_cifar.ARCHIVE: 170498071},
}
SIZE_MARGIN = 4096
MAX_DOWNLOAD = 1 << 30
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "cifar-10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"],
}
# (channels, height, width) of each dataset's images
SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar-10": _cifar.SHAPE}
SYSTEM_DIR = "/usr/share/datasets"
DOWNLOAD_TIMEOUT = 60  # seconds without progress before a mirror is given up

# IDX type byte -> big-endian dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetError(ValueError):
    """A dataset file is missing, malformed or fails its checksum."""


# The most data read_idx takes from one file (MNIST's training images are
# 47 MB): a header that declares more is refused before anything is read.
IDX_MAX_BYTES = 1 << 30


def read_idx(path, max_bytes=None):
    """Read an IDX file (raw or gzip-compressed) into a NumPy array.

    The header is read and checked first: two zero bytes, a known type
    byte, the number of dimensions, then each dimension as a big-endian
    uint32. Then exactly the bytes the dimensions declare are read, in
    chunks, so memory grows only with data that is really there; the file
    must end right after them. Returns the array in native byte order
    (uint8 for MNIST's images and labels).

    max_bytes (default IDX_MAX_BYTES, 1 GiB) bounds the data: a header that
    declares more is refused before anything is read, and so is a raw file
    whose length disagrees with its header, and a gzip file too small to
    expand to what its header declares.

    Raises FileNotFoundError for a missing file and DatasetError (a
    ValueError) for anything that is not a well-formed IDX file: too short,
    wrong magic bytes, a corrupt or truncated gzip stream, a header whose
    dimensions disagree with the length of the data, or more dimensions than
    NumPy arrays can have.
    """
    path = os.fspath(path)
    limit = IDX_MAX_BYTES if max_bytes is None else check_int(max_bytes, "max_bytes", minimum=0)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    size = os.path.getsize(path)
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            return _read_idx(f, path, size, compressed, limit)
    except (OSError, EOFError, zlib.error) as e:
        if not compressed:
            raise
        raise DatasetError(f"{path}: corrupt or truncated gzip data ({e})") from None


# deflate's greatest expansion (258 bytes from 2 bits): a gzip file of n bytes
# holds at most about 1032 n
_MAX_RATIO = 1032


def _read_idx(f, path, size, compressed, limit):
    head = f.read(4)
    if len(head) < 4:
        raise DatasetError(f"{path}: {len(head)} bytes, too short for an IDX header")
    if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
        raise DatasetError(
            f"{path}: not an IDX file (magic bytes {head.hex()}; expected 0000 then a "
            f"type byte in {[hex(t) for t in _IDX_TYPES]} and the number of dimensions)"
        )
    ndim = head[3]
    if ndim == 0:
        raise DatasetError(f"{path}: IDX header gives 0 dimensions")
    header = 4 + 4 * ndim
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header ({4 + len(dims)} bytes, needs {header})")
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[head[2]])
    # Python integers: a product of up to 255 uint32 dimensions overflows int64
    nbytes = math.prod(shape) * dtype.itemsize
    expected = header + nbytes
    if nbytes > limit:
        raise DatasetError(f"{path}: its header declares dimensions {shape} of {dtype.name}, "
                           f"{nbytes:,} bytes, more than the limit of {limit:,} "
                           f"(datasets.IDX_MAX_BYTES, or read_idx(max_bytes=...))")
    if not compressed and size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: {what}: dimensions {shape} need {expected} bytes, the file has {size}")
    if compressed and expected > _MAX_RATIO * size + 1024:
        raise DatasetError(f"{path}: truncated: dimensions {shape} need {expected} bytes, more "
                           f"than {size} bytes of gzip data can hold")
    data = bytearray()
    while len(data) < nbytes:
        chunk = f.read(min(1 << 22, nbytes - len(data)))
        if not chunk:
            raise DatasetError(f"{path}: truncated: dimensions {shape} need {expected} bytes, "
                               f"the file has {header + len(data)}")
        data += chunk
    if f.read(1):
        raise DatasetError(f"{path}: has trailing bytes: dimensions {shape} need {expected} "
                           f"bytes, the file has more")
    try:
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
    except ValueError as e:  # more than 64 dimensions, or a shape too big to index
        raise DatasetError(f"{path}: IDX dimensions {shape} cannot be a NumPy array ({e})") from None
    return array.astype(dtype.newbyteorder("="))


def _check_name(name, split):
    if name not in MIRRORS:
        raise ValueError(f"unknown dataset {name!r}; fastcnn knows {sorted(MIRRORS)}")
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def cache_dir(name):
    """~/.cache/fastcnn/<name>, where downloads are kept."""
    return os.path.join(os.path.expanduser("~"), ".cache", "fastcnn", name)


def search_path(name, data_dir=None):
    """The directories `load` looks in, in order."""
    if data_dir is not None:
        return [os.fspath(data_dir)]
    dirs = []
    if os.environ.get("FASTCNN_DATA"):
        dirs.append(os.path.join(os.environ["FASTCNN_DATA"], name))
    dirs.append(cache_dir(name))
    dirs.append(os.path.join(SYSTEM_DIR, name))
    return dirs


def _find(directory, base):
    for candidate in (base + ".gz", base):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _fetch(url, dest, sha256, limit=None):
    """Download url to dest through a temporary file (fastcnn._files.atomic_write),
    kept only if its SHA-256 matches; stopped past `limit` bytes, if given."""
    import urllib.request  # here: only downloads need it, and it is slow to import

    limit = MAX_DOWNLOAD if limit is None else limit + SIZE_MARGIN

    def write(out):
        digest = hashlib.sha256()
        size = 0
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as r:
            announced = r.headers.get("Content-Length")
            if announced is not None and announced.isdigit() and int(announced) > limit:
                raise DatasetError(f"the server announces {int(announced)} bytes, more than the "
                                   f"{limit} the file may have; nothing was downloaded")
            while True:
                chunk = r.read(min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise DatasetError(f"more than the {limit} bytes the file may have; stopped")
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise DatasetError(f"SHA-256 {digest.hexdigest()} does not match the expected {sha256}")

    atomic_write(dest, write)


def _what_to_put(name):
    """The files a user can put in place of a download, in words."""
    if name == "cifar-10":
        return f"{_cifar.ARCHIVE} (or the {_cifar.FOLDER}/ directory it unpacks to)"
    return "the four IDX files (gzipped or not)"


def download(name, directory=None, mirrors=None, checksums=None):
    """Download the files of `name` (MNIST's and Fashion-MNIST's four gzip
    files, CIFAR-10's cifar-10-python.tar.gz) into `directory` (default: the cache).

    Each file is tried on each mirror in turn and kept only when its SHA-256
    matches. Files already present and verified are not fetched again.
    Returns the directory. Raises DatasetError, naming every URL tried and
    what went wrong with it, when no mirror gives a file.
    """
    _check_name(name, "train")
    directory = os.fspath(directory) if directory is not None else cache_dir(name)
    mirrors = list(mirrors if mirrors is not None else MIRRORS[name])
    import http.client

    checksums = dict(checksums if checksums is not None else SHA256[name])
    os.makedirs(directory, exist_ok=True)
    for filename, sha in checksums.items():
        dest = os.path.join(directory, filename)
        if os.path.isfile(dest) and _sha256(dest) == sha:
            continue
        limit = SIZES.get(name, {}).get(filename)
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + filename
            try:
                _fetch(url, dest, sha, limit)
                break
            except (OSError, http.client.HTTPException, ValueError) as e:
                errors.append(f"{url} ({e})")
        else:
            # one line, which the command line prints as it is
            tried = "tried " + "; ".join(errors) if errors else "no mirrors given"
            raise DatasetError(
                f"could not download {filename} of {name} from any mirror: {tried}. "
                f"Put {_what_to_put(name)} in a directory and pass data_dir=... (--data-dir "
                f"on the command line), or in $FASTCNN_DATA/{name}"
            )
    return directory


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _find_cifar(directory, split):
    """The archive, or a directory holding the split's batch files: the
    unpacked cifar-10-batches-py/, or `directory` itself if it is one."""
    archive = os.path.join(directory, _cifar.ARCHIVE)
    if os.path.isfile(archive):
        return archive
    for folder in (os.path.join(directory, _cifar.FOLDER), directory):
        if all(os.path.isfile(os.path.join(folder, b)) for b in _cifar.BATCHES[split]):
            return folder
    return None


def locate(name, split, data_dir=None, download_missing=True):
    """Paths of a split's files, downloading into the cache if needed:
    (images, labels) for MNIST and Fashion-MNIST; for CIFAR-10 a 1-tuple,
    cifar-10-python.tar.gz or the directory that holds the split's batches."""
    _check_name(name, split)
    if name == "cifar-10":
        def find(directory):
            path = _find_cifar(directory, split)
            return (path,) if path else None
        wanted = (f"{_cifar.ARCHIVE}, or {_cifar.FOLDER}/ with "
                  f"{', '.join(_cifar.BATCHES[split])}")
    else:
        def find(directory):
            paths = tuple(_find(directory, base) for base in FILES[split])
            return paths if all(paths) else None
        wanted = f"{FILES[split][0]}[.gz] and {FILES[split][1]}[.gz]"
    for directory in search_path(name, data_dir):
        paths = find(directory)
        if paths:
            return paths
    if data_dir is not None:
        raise FileNotFoundError(f"{data_dir} does not hold {wanted}")
    if not download_missing:
        raise FileNotFoundError(f"{name} {split} not found in {search_path(name)}: none holds {wanted}")
    return find(download(name))


def load(name, split="train", data_dir=None, dtype="float32"):
    """Images and labels of MNIST, Fashion-MNIST or CIFAR-10.

    Parameters
    ----------
    name : "mnist", "fashion-mnist" or "cifar-10"
    split : "train" (60,000 images; CIFAR-10: 50,000, data_batch_1..5 in
        order) or "test" (10,000)
    data_dir : path, optional
        Directory holding the IDX files (gzipped or not), or CIFAR-10's
        cifar-10-python.tar.gz or unpacked cifar-10-batches-py/; when given,
        only it is searched and nothing is downloaded.
    dtype : "float32" or "float64"

    Returns
    -------
    x : ndarray (N, C, H, W) of dtype, pixels scaled to [0, 1]: (N, 1, 28, 28)
        for MNIST and Fashion-MNIST; (N, 3, 32, 32), red, green, blue, for CIFAR-10
    y : ndarray (N,) int64, class ids 0..9 (CLASS_NAMES[name] names them)

    CIFAR-10's batches are pickles; they are read with an unpickler that
    rebuilds only their dicts, lists and uint8 arrays and refuses anything
    else (see fastcnn._cifar), so a tampered file cannot run code.
    """
    dtype = check_dtype(dtype)
    if name == "cifar-10":
        return _load_cifar(split, data_dir, dtype)
    images_path, labels_path = locate(name, split, data_dir)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(f"{labels_path}: expected uint8 labels (N,), got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{labels_path}: label {labels.max()} out of range 0..9")
    x = images.astype(dtype)[:, None, :, :]
    x /= 255
    return x, labels.astype(np.int64)


def _load_cifar(split, data_dir, dtype):
    (path,) = locate("cifar-10", split, data_dir)
    try:
        images, labels = _cifar.read(path, split)
    except _cifar.FormatError as e:
        raise DatasetError(str(e)) from None
    x = images.astype(dtype)
    x /= 255
    return x, labels


def standardize(train, *others):
    """Shift and scale images by the training set's mean and standard
    deviation (one number each): returns (train, *others) standardised.
    Networks with ReLU and Adam, such as models.lenet5, train better on
    standardised pixels; the paper's sigmoid network uses them as loaded."""
    mean, std = float(np.mean(train)), float(np.std(train))
    if not np.isfinite(std) or std == 0:
        raise ValueError("the training images are constant: nothing to standardise by")
    out = tuple((np.asarray(a) - mean) / std for a in (train,) + others)
    return out if others else out[0]


def read_images(path, channels=1, size=None):
    """Images to classify, from an IDX file (raw or gzip), a .npy file, or a
    picture (PNG, JPEG...: needs Pillow, which `fastcnn[plot]` brings).

    Returns float32 (N, channels, H, W) in [0, 1]: 8-bit pixels are divided
    by 255; float .npy arrays are taken as they are and must lie in [0, 1].
    Shapes (H, W), (N, H, W) and (N, C, H, W) are accepted; pictures are
    converted to grey (channels=1) or RGB (channels=3).

    size : (H, W), optional
        Scale images of another size to H x W (Pillow's antialiased
        bilinear filter, on every channel; needs Pillow).
    """
    if size is not None:
        size = check_shape(size, "size must be (height, width)")
        if len(size) != 2:
            raise ValueError(f"size must be (height, width), got {size!r}")
    a = _read_image_array(path, channels)
    if size is not None and a.shape[2:] != size:
        a = resize(a, size)
    return a


def resize(images, size):
    """float32 images (N, C, H, W) scaled to size (H', W') by Pillow's
    antialiased bilinear filter, channel by channel, clipped to [0, 1]."""
    Image = _pillow("resizing images")
    h, w = size
    out = np.empty(images.shape[:2] + (h, w), np.float32)
    for i in range(images.shape[0]):
        for c in range(images.shape[1]):
            plane = Image.fromarray(np.ascontiguousarray(images[i, c], dtype=np.float32), mode="F")
            out[i, c] = np.asarray(plane.resize((w, h), Image.Resampling.BILINEAR))
    return np.clip(out, 0, 1, out=out)


def _pillow(purpose):
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"{purpose} needs Pillow: {install_hint('plot')}") from None
    return Image


def _read_npy(path):
    """A .npy file, once its header agrees with its length (a header that
    announces more than the file holds would have NumPy allocate it all)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
            start = f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DatasetError(f"{path}: holds Python objects; expected an array of pixels")
    needed = start + math.prod(shape) * dtype.itemsize
    size = os.path.getsize(path)
    if needed != size:
        raise DatasetError(f"{path}: its header announces {shape} {dtype} ({needed:,} bytes), "
                           f"the file has {size:,}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DatasetError(f"{path}: not a readable .npy array ({e})") from None


def _read_image_array(path, channels):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    name = path.lower()
    if name.endswith(".npy"):
        a = _read_npy(path)
    elif name.endswith((".gz", ".idx")) or "-ubyte" in name or "idx3" in name:
        a = read_idx(path)
    else:
        Image = _pillow(f"reading {path}")
        try:
            with Image.open(path) as img:
                a = np.asarray(img.convert("L" if channels == 1 else "RGB"))
        except OSError as e:
            raise DatasetError(f"{path}: not a readable image ({e})") from None
        a = a[None] if channels == 1 else a.transpose(2, 0, 1)[None]
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255
    elif a.dtype.kind == "f":
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise DatasetError(f"{path}: float pixels must be finite and in [0, 1]")
        a = a.astype(np.float32)
    else:
        raise DatasetError(f"{path}: pixels of dtype {a.dtype}; expected uint8, or floats in [0, 1]")
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[:, None] if channels == 1 else a[None]
    if a.ndim != 4:
        raise DatasetError(f"{path}: {a.ndim}-dimensional array; expected (H, W), (N, H, W) "
                           f"or (N, C, H, W) images")
    return a


__all__ = ["load", "read_idx", "download", "locate", "search_path", "cache_dir", "DatasetError",
           "CLASS_NAMES", "SHAPES", "SIZES", "SIZE_MARGIN", "MAX_DOWNLOAD", "read_images",
           "resize", "standardize", "IDX_MAX_BYTES"]
