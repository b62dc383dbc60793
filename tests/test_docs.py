"""The documentation runs: every Python block of docs/paper.md in order (its
asserts check each equation against fastcnn), and a docstring on every
public name. (The README's examples train on the full data for minutes;
tests/test_sklearn.py and tests/test_onnx.py run those of their sections.)"""

import importlib
import importlib.util
import inspect
import os
import re

import pytest

import fastcnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks(path):
    with open(path) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_paper_walkthrough_runs():
    path = os.path.join(ROOT, "docs", "paper.md")
    if not os.path.isfile(path):
        pytest.skip("needs the source tree")
    blocks = python_blocks(path)
    assert len(blocks) > 15
    namespace = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/paper.md block {i + 1}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"docs/paper.md, python block {i + 1} fails: {e!r}\n{block}") from e


PUBLIC_MODULES = ["fastcnn", "fastcnn.layers", "fastcnn.model", "fastcnn.training",
                  "fastcnn.callbacks", "fastcnn.optim", "fastcnn.losses", "fastcnn.io",
                  "fastcnn.datasets", "fastcnn.conv_algorithms", "fastcnn.interop",
                  "fastcnn.plots", "fastcnn.bench", "fastcnn.models", "fastcnn.distributed"]
if importlib.util.find_spec("sklearn") is not None:  # the one module that needs it to import
    PUBLIC_MODULES.append("fastcnn.sklearn")


def test_every_public_name_has_a_docstring():
    missing = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        if not (module.__doc__ or "").strip():
            missing.append(name)
        names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        for attr in names:
            obj = getattr(module, attr)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", "") != name and name != "fastcnn":
                continue  # checked where it is defined
            if not (obj.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
            if inspect.isclass(obj):
                for meth_name, meth in vars(obj).items():
                    if meth_name.startswith("_") or not inspect.isfunction(meth):
                        continue
                    if not (meth.__doc__ or "").strip() and not _inherits_doc(obj, meth_name):
                        missing.append(f"{name}.{attr}.{meth_name}")
    assert not missing, "no docstring: " + ", ".join(sorted(set(missing)))


def _inherits_doc(cls, name):
    return any((getattr(base, name, None).__doc__ or "").strip()
               for base in cls.__mro__[1:] if getattr(base, name, None) is not None)


def test_version_is_the_packages():
    assert re.fullmatch(r"\d+\.\d+\.\d+", fastcnn.__version__)
