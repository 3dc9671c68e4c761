"""Fixtures shared by every test folder."""

import fcntl
import os
import shutil
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


# SmolLM2-135M-Instruct, shared by tests/conversion, tests/evaluation and the walkthrough: the HF folder (cached
# in .cache/), imported to NeMo 2 once per `make test`, exported back once. Under pytest-xdist both workers use
# the same copies: the first to need one builds it under a lock, the other waits for it or finds it done.


def timed(label: str, step):
    started = time.perf_counter()
    result = step()
    print(f"\n[timing] {label}: {time.perf_counter() - started:.1f}s")
    return result


def built_once_per_run(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """`build(path)` run by one worker of this pytest run; every worker gets the finished `path`, alone in its
    folder (a test may check what a build leaves beside its output)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base  # xdist: popen-gwN folders share one parent per run
    path, done = shared / f"{name}.built" / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(path.parent, ignore_errors=True)
            path.parent.mkdir()
            timed(name, lambda: build(path))
            done.touch()
    return path


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    from conversion.smollm2 import ensure_smollm2

    return timed("ensure_smollm2", ensure_smollm2)


@pytest.fixture(scope="session")
def smollm2_nemo(smollm2_hf, tmp_path_factory, worker_id) -> Path:
    from conversion.hf_to_nemo import import_hf

    return built_once_per_run(tmp_path_factory, worker_id, "smollm2-nemo", lambda out: import_hf(smollm2_hf, out))


@pytest.fixture(scope="session")
def smollm2_roundtrip(smollm2_nemo, tmp_path_factory, worker_id) -> Path:
    from conversion.nemo_to_hf import export_nemo

    return built_once_per_run(tmp_path_factory, worker_id, "smollm2-roundtrip-hf", lambda out: export_nemo(smollm2_nemo, out))


@pytest.fixture(scope="session")
def tiny_imports(tmp_path_factory, worker_id):
    """architecture -> (its tiny random HF folder, that folder imported to NeMo 2), each built once per run on
    first use (tests/tiny_hf.py): the conversion tests and the MoE training runs share the Mixtral one."""
    from conversion.hf_to_nemo import import_hf
    from tiny_hf import make

    def build(architecture: str, folder: Path) -> None:
        import_hf(make(architecture, folder / "hf"), folder / "nemo")

    def imported(architecture: str) -> tuple[Path, Path]:
        folder = built_once_per_run(tmp_path_factory, worker_id, f"tiny-{architecture}",
                                    lambda path: build(architecture, path))
        return folder / "hf", folder / "nemo"

    return imported


LOADS_SMOLLM2 = ("smollm2_hf", "smollm2_nemo", "smollm2_roundtrip")


def shares_a_module_fixture(item) -> bool:
    return any(d.scope in ("module", "class") for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers with --dist loadgroup), the tests of a module that share a
    module fixture run on one worker, so the fixture is built once; every other test goes wherever a worker is
    free, the slow ones first. Without xdist the group marks do nothing."""
    for item in items:
        if shares_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
        if any(name in item.fixturenames for name in LOADS_SMOLLM2):
            item.add_marker(pytest.mark.slow)  # the import alone is about a minute
    # Long tests first, so that neither worker is left with one at the end while the other idles.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
