"""Fixtures shared by every test folder."""

import os

import pytest


@pytest.fixture(autouse=True)
def restore_environment():
    """In-process tests that start a process group set MASTER_PORT & co.; later launches must not inherit them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def nemo():
    """Imports NeMo once for the in-process tests (about 25 s)."""
    from nemo.collections import llm

    return llm


SESSION_FIXTURES_WORTH_SHARING = ("smollm2_hf", "smollm2_nemo", "smollm2_roundtrip")


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers), tests that share an expensive fixture stay on
    one worker: a module's tests share its module fixtures, and every test of the imported SmolLM2
    checkpoint shares one import. Without xdist the marks do nothing."""
    for item in items:
        shares_smollm2 = any(name in item.fixturenames for name in SESSION_FIXTURES_WORTH_SHARING)
        group = "smollm2" if shares_smollm2 else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
