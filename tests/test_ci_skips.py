"""With CI=true, a test skipped for any reason but a missing CUDA device fails the run (tests/conftest.py)."""

import os
import subprocess
import sys

from conftest import REPO

PROBE = """
import pytest


def test_gpu():
    pytest.skip("needs a CUDA device")


def test_data():
    pytest.skip("offline data mirror not found")
"""


def run_probe(tmp_path, ci: str, gpu_only: bool = False):
    (tmp_path / "test_probe.py").write_text(PROBE.split("def test_data")[0] if gpu_only else PROBE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO / "tests"), "SPOT_SKIP_PROBE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", str(tmp_path)]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_in_ci_a_skip_for_missing_data_fails_the_run_and_is_listed(tmp_path):
    result = run_probe(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "SKIPPED IN CI: test_probe.py::test_data: Skipped: offline data mirror not found" in result.stdout
    assert "test_gpu" not in result.stdout.split("skipped tests fail the session")[-1]


def test_outside_ci_skips_pass_and_in_ci_a_cuda_skip_alone_passes(tmp_path):
    assert run_probe(tmp_path, "").returncode == 0
    assert run_probe(tmp_path, "true", gpu_only=True).returncode == 0


def test_the_files_that_run_first_are_there():
    """`make test` starts the longest files first (conftest.LONGEST_FIRST): a renamed one would quietly run last."""
    from conftest import LONGEST_FIRST

    assert [name for name in LONGEST_FIRST if not (REPO / "tests" / name).is_file()] == []
