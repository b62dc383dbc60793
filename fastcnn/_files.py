"""Writing files so that a crash never leaves one half-written.

Everything fastcnn writes (models, checkpoints, CSV logs, sweep tables,
predictions, downloads) goes through `atomic_write`: into a temporary file
beside the target, flushed to disk, then renamed over the target.
"""

import csv
import io
import numbers
import os
import tempfile


def atomic_write(path, write):
    """Call write(fileobj) on a temporary file beside `path`, then rename it
    to `path`; on any failure (write raising included) the temporary file is
    removed and `path` is untouched. Missing parent directories are created."""
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


def write_csv(path, rows, fields=None):
    """Write dicts as CSV rows, atomically. `fields` (default: every key of
    the rows, in order of appearance) are the columns; other keys are left
    out. Floats are written with repr, so they read back to the same bits."""
    rows = list(rows)
    if fields is None:
        fields = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(float(v)) if _is_float(v) else v for k, v in row.items()})
    data = text.getvalue().encode()
    atomic_write(path, lambda f: f.write(data))


def _is_float(value):
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
