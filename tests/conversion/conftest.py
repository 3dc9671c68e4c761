"""Session fixtures: SmolLM2 as an HF folder (cached in .cache/), imported to NeMo 2 once, exported back once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conversion.hf_to_nemo import import_hf
from conversion.nemo_to_hf import export_nemo
from conversion.smollm2 import ensure_smollm2


def timed(label: str, step):
    started = time.perf_counter()
    result = step()
    print(f"\n[timing] {label}: {time.perf_counter() - started:.1f}s")
    return result


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    return timed("ensure_smollm2", ensure_smollm2)


@pytest.fixture(scope="session")
def smollm2_nemo(smollm2_hf, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nemo") / "smollm2-nemo"
    return timed("hf_to_nemo", lambda: import_hf(smollm2_hf, out))


@pytest.fixture(scope="session")
def smollm2_roundtrip(smollm2_nemo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("roundtrip") / "smollm2-hf"
    return timed("nemo_to_hf", lambda: export_nemo(smollm2_nemo, out))
