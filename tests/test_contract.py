"""The contract, checked by the project's own script against the importable
package, from outside the source tree.

tests/check_contract.py and tests/API.md are verbatim copies of the shared
originals (../shared/check_contract.py and ../shared/API.md), so that a fresh
clone can run the check; when the originals are present (the development
checkout), the check runs the original and the copies must equal them.
docs/API.md says the same to users (with the papers named by title rather
than by file) and goes on with the rest of the API: every code example of
the contract appears in it word for word.
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
    """tests/check_contract.py and tests/API.md are copies of the shared originals."""
    shared_dir = os.path.dirname(SHARED)
    for name in ("check_contract.py", "API.md"):
        original, copy = os.path.join(shared_dir, name), os.path.join(HERE, name)
        if os.path.isfile(original):
            with open(original) as a, open(copy) as b:
                assert b.read() == a.read(), f"{copy} differs from {original}: copy it again"


def test_the_users_api_page_keeps_every_example_of_the_contract():
    with open(os.path.join(HERE, "API.md")) as f:
        contract = f.read()
    with open(os.path.join(HERE, "..", "docs", "API.md")) as f:
        page = f.read()
    blocks = contract.split("```")[1::2]
    assert len(blocks) >= 5
    for block in blocks:
        assert block in page, f"docs/API.md lacks the contract's example:\n{block}"
    for name in ("seeds/", "shared/", "yours to design"):
        assert name not in page
