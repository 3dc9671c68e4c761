"""Fixtures shared by every test folder."""

import pytest


@pytest.fixture(scope="session")
def nemo():
    """Imports NeMo once for the in-process tests (about 25 s)."""
    from nemo.collections import llm

    return llm
