"""Fixtures shared by every test folder."""

import os
import time
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def restore_environment():
    """In-process tests that start a process group set MASTER_PORT & co.; later launches must not inherit them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session", autouse=True)
def outside_the_repository(tmp_path_factory):
    """In-process launches write results/ (checkpoints, index mappings) and nemo_run's state relative to the
    working directory and NEMORUN_HOME: both point into a temporary folder, so tests write nothing into the
    repository. Tests that need the repository pass its absolute path."""
    work = tmp_path_factory.mktemp("work")
    saved_cwd, saved_home = os.getcwd(), os.environ.get("NEMORUN_HOME")
    os.chdir(work)
    os.environ["NEMORUN_HOME"] = str(work / ".nemo_run")
    yield work
    os.chdir(saved_cwd)
    if saved_home is None:
        os.environ.pop("NEMORUN_HOME", None)
    else:
        os.environ["NEMORUN_HOME"] = saved_home


@pytest.fixture(scope="session")
def nemo():
    """Imports NeMo once for the in-process tests (about 25 s)."""
    from nemo.collections import llm

    return llm


# SmolLM2-135M-Instruct, shared by tests/conversion and tests/evaluation so one session imports and
# exports it once: the HF folder (cached in .cache/), imported to NeMo 2 once, exported back once.


def timed(label: str, step):
    started = time.perf_counter()
    result = step()
    print(f"\n[timing] {label}: {time.perf_counter() - started:.1f}s")
    return result


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    from conversion.smollm2 import ensure_smollm2

    return timed("ensure_smollm2", ensure_smollm2)


@pytest.fixture(scope="session")
def smollm2_nemo(smollm2_hf, tmp_path_factory) -> Path:
    from conversion.hf_to_nemo import import_hf

    out = tmp_path_factory.mktemp("nemo") / "smollm2-nemo"
    return timed("hf_to_nemo", lambda: import_hf(smollm2_hf, out))


@pytest.fixture(scope="session")
def smollm2_roundtrip(smollm2_nemo, tmp_path_factory) -> Path:
    from conversion.nemo_to_hf import export_nemo

    out = tmp_path_factory.mktemp("roundtrip") / "smollm2-hf"
    return timed("nemo_to_hf", lambda: export_nemo(smollm2_nemo, out))


@pytest.fixture(scope="session")
def tiny_imports(tmp_path_factory):
    """architecture -> (its tiny random HF folder, that folder imported to NeMo 2), made once per session on first
    use (tests/tiny_hf.py): the conversion tests and the MoE training runs share the Mixtral one."""
    from conversion.hf_to_nemo import import_hf
    from tiny_hf import make

    made = {}

    def imported(architecture: str) -> tuple[Path, Path]:
        if architecture not in made:
            root = tmp_path_factory.mktemp(architecture)
            hf = make(architecture, root / "hf")
            made[architecture] = hf, timed(f"hf_to_nemo {architecture}", lambda: import_hf(hf, root / "nemo"))
        return made[architecture]

    return imported


SESSION_FIXTURES_WORTH_SHARING = {  # fixture -> the group of tests that share it (one worker)
    "smollm2_hf": "smollm2",
    "smollm2_nemo": "smollm2",
    "smollm2_roundtrip": "smollm2",
    "tiny_imports": "tiny_imports",
}


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers), tests that share an expensive fixture stay on
    one worker: a module's tests share its module fixtures, every test of the imported SmolLM2
    checkpoint shares one import, and the tiny-architecture conversions share theirs with the MoE runs.
    Without xdist the marks do nothing."""
    for item in items:
        shared = [group for name, group in SESSION_FIXTURES_WORTH_SHARING.items() if name in item.fixturenames]
        group = shared[0] if shared else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
        if "smollm2" in shared:
            item.add_marker(pytest.mark.slow)  # the import alone is about a minute


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test is a failure here: every part this suite tests is real and can run on this machine
    (Slurm is installed by tests/slurm/cluster.sh), so a skip would hide a part that silently stopped running."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, which this suite counts as a failure: {reason}"
