"""Writing files so that a crash never leaves one half-written.

Everything fastcnn writes (models, checkpoints, CSV logs, sweep tables,
predictions, downloads) goes through `atomic_write`: into a temporary file
beside the target, flushed to disk, then renamed over the target.
"""

import csv
import io
import numbers
import os
import socket
import tempfile
import threading
import time
import zlib

# Temporary files are named .<target>.<host>.<pid>.<random>.fastcnn-tmp:
# what a killed save leaves behind can be told from another process's save
# in progress, and from files that are not fastcnn's.
TEMP_SUFFIX = ".fastcnn-tmp"
STALE_AFTER = 24 * 3600  # seconds; for temporary files of other machines (shared disks)
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"


def atomic_write(path, write):
    """Call write(fileobj) on a temporary file beside `path`, then rename it
    to `path`; on any failure (write raising included) the temporary file is
    removed and `path` is untouched. Missing parent directories are created.

    The file gets the permissions `open()` would give a new file (0666 less
    the umask), not the 0600 of a temporary file. Temporary files left in
    the directory by a save that was killed (its process is gone) are
    removed first: only fastcnn's own, by their name."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    os.makedirs(directory, exist_ok=True)
    sweep_temporary_files(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{_HOST}.{os.getpid()}.",
                               suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # POSIX; Windows has no modes to set
                os.fchmod(f.fileno(), 0o666 & ~_umask())
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


def check_writable(path, directory=False, name=None):
    """Raise, before any work, if a file (with directory=True a directory)
    cannot be written at `path`: a directory where a file is meant (an
    existing one, or a name ending in a separator), a file in the way, or
    the nearest existing directory not writable. The messages start with
    `name` and the path (an option of the command line), else "cannot write
    PATH". Returns the path as a str."""
    path = os.fspath(path)
    label = f"{name} {path}" if name else f"cannot write {path}"
    if not path:
        raise ValueError(f"{name or 'path'} must be a file name, got an empty string")
    if not directory and (os.path.isdir(path) or path.endswith(("/", os.sep))):
        raise IsADirectoryError(f"{label}: that is a directory; give a file name")
    if directory and os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{label}: that is a file, not a directory")
    parent = os.path.abspath(path) if directory else os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # atomic_write creates the missing directories
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(f"{label}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{label}: cannot write in {parent}")
    return path


def sweep_temporary_files(directory):
    """Remove the temporary files of fastcnn's saves into `directory` whose
    process is gone (this machine's), or that are older than STALE_AFTER
    (another machine's, on a shared disk). Returns the paths removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
            continue
        parts = name[: -len(TEMP_SUFFIX)].rsplit(".", 3)
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        host, pid = parts[1], int(parts[2])
        full = os.path.join(directory, name)
        try:
            if host == _HOST:
                if _running(pid):
                    continue
            elif now - os.lstat(full).st_mtime < STALE_AFTER:
                continue
            os.unlink(full)
            removed.append(full)
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def _running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, alive
    return True


def _umask():
    """The process's umask (os.umask can only be read by setting it, which
    other threads could see, so Linux's /proc is asked first)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


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
