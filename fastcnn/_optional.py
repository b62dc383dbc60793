"""Optional dependencies, imported on first use so that `import fastcnn`
stays light (scipy.fft alone takes longer to import than fastcnn)."""

import functools
import importlib


@functools.lru_cache(maxsize=None)
def module(name):
    """The module `name`, or None where it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - exercised where the extra is absent
        return None


def install_hint(extra):
    """How to install an extra, from an index or from a checkout (fastcnn is
    installed from its source tree more often than not)."""
    return f"pip install 'fastcnn[{extra}]' (from a checkout: pip install '.[{extra}]')"
