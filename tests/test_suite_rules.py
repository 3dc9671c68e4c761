"""The suite's own rules hold: a skipped test fails the run."""

import os
import subprocess
import sys

from launching import REPO


def test_a_skipped_test_fails_the_run(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("import pytest\n\ndef test_probe():\n    pytest.skip('slurmctld missing')\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", str(probe)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )
    assert result.returncode == 1, result.stdout
    assert "skipped, which this suite counts as a failure: Skipped: slurmctld missing" in result.stdout
