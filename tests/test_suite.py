"""The suite itself: under CI=true nothing may skip silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_skip_fails_under_ci(tmp_path):
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_skipping.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.skipif(True, reason='optional package missing')\n"
        "def test_marked():\n    pass\n\n"
        "def test_imperative():\n    pytest.skip('data file missing')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = lambda ci: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        env={**env, "CI": ci}, capture_output=True, text=True, cwd=tmp_path)
    local = run("")
    assert local.returncode == 0 and "2 skipped" in local.stdout, local.stdout
    ci = run("true")
    assert ci.returncode == 1 and "1 failed, 1 error" in ci.stdout, ci.stdout  # setup: error
    assert "skipped under CI=true, which counts as a failure: data file missing" in ci.stdout
