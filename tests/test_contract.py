"""API.md's contract, checked by the project's own script against the
importable package, from outside the source tree.

tests/check_contract.py is a verbatim copy of ../shared/check_contract.py, so
that a fresh clone can run it; when the shared original is present (the
development checkout), that one runs instead, and the copy must equal it.
docs/API.md begins with the contract, ../shared/API.md, word for word, and
goes on with what fastcnn adds to it.
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
    """tests/check_contract.py is a copy of the shared original, and docs/API.md
    starts with one."""
    shared_dir = os.path.dirname(SHARED)
    pairs = [(SHARED, COPY, False), (os.path.join(shared_dir, "API.md"),
                                     os.path.join(HERE, "..", "docs", "API.md"), True)]
    for original, copy, prefix in pairs:
        if os.path.isfile(original) and os.path.isfile(copy):
            with open(original) as a, open(copy) as b:
                want, got = a.read(), b.read()
            if prefix:
                got = got[:len(want)]
            assert got == want, f"{copy} differs from {original}: copy it again"
