"""The single-host Slurm cluster (cluster.sh), for the tests of this folder that submit jobs."""

import os
import re
import subprocess
from pathlib import Path

import pytest

CLUSTER = Path(__file__).resolve().parent / "cluster.sh"


@pytest.fixture(scope="module")
def cluster():
    """`cluster.sh up` (installs slurm-wlm if missing): a machine where it cannot come up fails the tests that
    submit jobs, with cluster.sh's output; there is no skip, which would let `make test` pass without Slurm."""
    result = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"cluster.sh up exited {result.returncode}:\n{result.stdout}\n{result.stderr}", pytrace=False)
    match = re.search(r"export SLURM_CONF=(\S+)", result.stdout)
    assert match, result.stdout
    os.environ["SLURM_CONF"] = match.group(1)
    return match.group(1)

