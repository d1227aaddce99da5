"""`make test-docker` on a machine without Docker's engine, compose or debootstrap: one line naming the packages,
not a traceback."""

import subprocess
import sys

import pytest

from config import ROOT


@pytest.mark.slow
def test_missing_commands_are_named_with_their_packages_before_anything_starts(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tests/docker/run.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": str(tmp_path)})
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    for named in ("dockerd", "debootstrap", "apt-get install -y docker.io", " debootstrap'"):
        assert named in done.stderr
