"""The GPU proof script (bench/gpu/proof.py) measures the model the recipes train, and runs end to end on CPU with
tiny sizes (its dry run), so the day a GPU is lent it is a single command."""

import json
import subprocess
import sys
from pathlib import Path

import fiddle as fdl
import pytest

from planning.layout import model_shape

REPO = Path(__file__).resolve().parents[2]


def test_proof_model_is_nemos_llama32_1b(nemo, recipe_config):
    sys.path.insert(0, str(REPO / "bench" / "gpu"))
    try:
        import proof
    finally:
        sys.path.pop(0)
    config = recipe_config("llama32_1b_sft").model.config
    expected = model_shape(config, vocab=128256)
    assert proof.LLAMA32_1B == expected
    assert fdl.get_callable(config).__name__ == "Llama32Config1B"


@pytest.mark.slow
def test_proof_dry_run_on_cpu(tmp_path):
    out = tmp_path / "proof.json"
    done = subprocess.run([sys.executable, "bench/gpu/proof.py", "--dry-run", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [r["run"] for r in results] == ["sft", "lora", "dpo"]
    assert all(r["tokens_per_second_per_gpu"] > 0 for r in results)
