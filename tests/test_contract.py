"""API.md's contract, checked by the project's own script against the
importable package, from outside the source tree.

tests/check_contract.py is a verbatim copy of ../shared/check_contract.py, so
that a fresh clone can run it; when the shared original is present (the
development checkout), that one runs instead, and the copy must equal it.
"""

import os
import subprocess
import sys

import fastcnn

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "check_contract.py")
COPY = os.path.join(HERE, "check_contract.py")


def test_contract_holds(tmp_path):
    script = SHARED if os.path.isfile(SHARED) else COPY
    # run from an empty directory, importing fastcnn the way this session does
    pkg_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [pkg_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fastcnn honours the API.md contract" in r.stdout


def test_vendored_copies_are_current():
    """tests/check_contract.py and docs/API.md are copies of the shared originals."""
    shared_dir = os.path.dirname(SHARED)
    pairs = [(SHARED, COPY), (os.path.join(shared_dir, "API.md"),
                              os.path.join(HERE, "..", "docs", "API.md"))]
    for original, copy in pairs:
        if os.path.isfile(original) and os.path.isfile(copy):
            with open(original) as a, open(copy) as b:
                assert a.read() == b.read(), f"{copy} differs from {original}: copy it again"
