"""Fixtures of tests/data."""

from pathlib import Path

import pytest

from local_tokenizers import write_llama3_style_tokenizer


@pytest.fixture(scope="session")
def llama3_style_tokenizer_dir(tmp_path_factory) -> Path:
    return write_llama3_style_tokenizer(tmp_path_factory.mktemp("llama3_style_tokenizer"))
