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
