"""The single-host Slurm cluster (cluster.sh), for the tests of this folder that submit jobs."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CLUSTER = Path(__file__).resolve().parent / "cluster.sh"


@pytest.fixture(scope="module")
def cluster():
    result = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        if shutil.which("slurmctld") is None:
            pytest.skip(f"Slurm could not be installed here (cluster.sh up: {result.stderr.strip()[-300:]})")
        pytest.fail(f"cluster.sh up failed:\n{result.stdout}\n{result.stderr}")
    match = re.search(r"export SLURM_CONF=(\S+)", result.stdout)
    assert match, result.stdout
    os.environ["SLURM_CONF"] = match.group(1)
    return match.group(1)

