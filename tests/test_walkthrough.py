"""README.md's "Fine-tune Llama 3.1 8B on your data", run step by step as written, with SmolLM2-135M-Instruct on
the CPU in place of Llama: the commands are read from the section's fenced block, changed only by MAPPING
(model and paths) and EXTRA (a short run), and run in order in a temporary folder. A command edited in the
README is the command tested here. The run it trains is then checked as a user would want it: the recipe's
end-of-run average is the exact mean of the last two checkpoints, the exported folder has its logits and a
lower held-out loss than the base model, and evaluation scored that folder."""

import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from exported_model import (assert_export_has_the_checkpoints_logits, assert_training_lowered_the_held_out_loss,
                            checkpoint_at, generate, model_weights)
from launching import REPO, child_environment, training_steps

pytestmark = pytest.mark.slow

SECTION = "## Fine-tune Llama 3.1 8B on your data"
SHIPPED_JSONL = REPO / "data" / "sft_examples" / "prompt_response.jsonl"
# What each command runs: the README's placeholders -> this test's (applied in order, plain text; a path
# placeholder only where an argument starts).
MAPPING = (
    (" /models/Llama-3.1-8B", " {hf}"),  # the Hugging Face folder: the SmolLM2 fixture's
    (" /data/my_sft.jsonl", f" {SHIPPED_JSONL}"),  # the user's JSONL: the shipped prompt/response examples
    ("llama31_8b", "smollm2_135m"),  # the catalog model, and with it the recipe
    ("=/data/", "={tmp}/data/"),
    (" /data/", " {tmp}/data/"),
    (" /models/", " {tmp}/models/"),
)
# Appended to the commands that start with these words: a few training steps (two checkpoints, for the
# recipe's end-of-run average), then a few items per benchmark and short answers.
EXTRA = {
    "python launch.py recipe=smollm2_135m_sft data.dataset_root=": " trainer.max_steps=4 log.ckpt.every_n_train_steps=2"
    " then.eval.limit=2 then.eval.threads=1 then.eval.max_new_tokens=32",
}
STEPS = 4


def walkthrough_commands() -> list[str]:
    """The lines of the section's ```bash block, comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def as_tested(command: str, hf: Path, tmp: Path) -> str:
    for written, tested in MAPPING:
        command = command.replace(written, tested.format(hf=hf, tmp=tmp))
    command += next((extra for start, extra in EXTRA.items() if command.startswith(start)), "")
    # This venv's python; launch.py from the repository, while results/ land in the temporary folder.
    command = command.replace("python launch.py", f"{shlex.quote(sys.executable)} {REPO / 'launch.py'}")
    return command.replace("python -m", f"{shlex.quote(sys.executable)} -m")


@pytest.fixture(scope="module")
def walkthrough(smollm2_hf, tmp_path_factory) -> tuple[Path, list[str]]:
    """(the folder the commands ran in, each command's output)."""
    commands = walkthrough_commands()
    assert [c.split()[:3] for c in commands] == [
        ["python", "-m", "data.sft"], ["python", "-m", "conversion.hf_to_nemo"],
        ["python", "launch.py", "recipe=llama31_8b_sft"], ["python", "launch.py", "recipe=llama31_8b_sft"],
    ]
    assert commands[-1].endswith("--then average,export,eval")
    tmp = tmp_path_factory.mktemp("walkthrough")
    environment = child_environment(NEMO_MODELS_CACHE=str(tmp / "nemo-models"), PYTHONPATH=str(REPO),
                                    NEMORUN_HOME=str(tmp / ".nemo_run"), OMP_NUM_THREADS="2")
    outputs = []
    for command in commands:
        tested = as_tested(command, smollm2_hf, tmp)
        done = subprocess.run(["bash", "-c", tested], cwd=tmp, env=environment, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{tested}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        outputs.append(done.stdout + done.stderr)
    return tmp, outputs


def test_the_readme_walkthrough_runs_as_written(walkthrough):
    tmp, outputs = walkthrough
    imported = tmp / "nemo-models" / "HuggingFaceTB" / "SmolLM2-135M-Instruct"
    assert (imported / "weights" / "metadata.json").is_file()
    assert f"the smollm2_135m_* recipes restore from nemo://HuggingFaceTB/SmolLM2-135M-Instruct (= {imported})" in outputs[1]
    assert "python launch.py recipe=smollm2_135m_sft data.dataset_root=" in outputs[1]
    assert f"({imported}: exists)" in outputs[2]
    assert f"Restoring model weights from RestoreConfig(path='{imported}'" in outputs[3]
    steps = training_steps(outputs[3])
    assert [s[0] for s in steps] == list(range(STEPS)) and all(math.isfinite(loss) for _, loss, _ in steps)


def test_the_run_is_averaged_exported_and_evaluated(walkthrough, smollm2_hf):
    tmp, outputs = walkthrough
    run_dir = tmp / "results" / "smollm2_135m_sft"
    # The recipe's AverageLastCheckpoints(last=2) ran after llm.finetune returned: the mean of steps 1 and 3.
    averaged_dir = run_dir / "averaged"
    assert (averaged_dir / "context" / "io.json").is_file(), "the end-of-training average is missing"
    first, last = model_weights(checkpoint_at(run_dir, 1)), model_weights(checkpoint_at(run_dir, STEPS - 1))
    averaged = model_weights(averaged_dir)
    assert sorted(averaged) == sorted(last)
    moved = 0
    for name, tensor in last.items():
        expected = ((first[name].double() + tensor.double()) / 2).to(tensor.dtype)
        assert torch.equal(averaged[name], expected), name
        moved += not torch.equal(first[name], tensor)
    assert moved > 0, "training changed no weight between the two checkpoints"

    # Then, in order: the average exported (python -m conversion.nemo_to_hf), then evaluated.
    hf_dir = run_dir / "hf"
    assert "[then] average: done when training ends" in outputs[3]
    assert f"[then] export: python -m conversion.nemo_to_hf --nemo {run_dir.resolve() / 'averaged'}" in outputs[3]
    assert (hf_dir / "model.safetensors").is_file()
    assert generate(hf_dir).strip()
    assert_export_has_the_checkpoints_logits(averaged_dir, hf_dir)
    assert_training_lowered_the_held_out_loss(smollm2_hf, hf_dir)
    record = json.loads((run_dir / "eval.json").read_text())
    assert Path(record["checkpoint"]) == hf_dir.resolve() and record["model_kind"] == "hf"
    assert record["results"] and all(row["samples"] == 2 for row in record["results"]), record["results"]
