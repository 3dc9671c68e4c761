"""README.md's "Fine-tune Llama 3.1 8B on your data", run step by step as written, with SmolLM2-135M-Instruct on
the CPU in place of Llama: the commands are read from the section's fenced block, changed only by MAPPING
(model and paths) and EXTRA (a short run), and run in order in a temporary folder. A command edited in the
README is the command tested here."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from launching import REPO, child_environment

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
# recipe's end-of-run average); a few items per benchmark and short answers (the SmolLM2 recipe trains at
# 256 tokens, which the export records as the model's length, below the benchmarks' 256 generated tokens).
EXTRA = {
    "python launch.py recipe=smollm2_135m_sft data.dataset_root=": " trainer.max_steps=4 log.ckpt.every_n_train_steps=2",
    "python -m evaluation": " --limit 2 --max-new-tokens 32",
}


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


def test_the_readme_walkthrough_runs_as_written(smollm2_hf, tmp_path):
    commands = walkthrough_commands()
    assert [c.split()[:3] for c in commands] == [
        ["python", "-m", "data.sft"], ["python", "-m", "conversion.hf_to_nemo"], ["python", "launch.py", "recipe=llama31_8b_sft"],
        ["python", "launch.py", "recipe=llama31_8b_sft"], ["python", "-m", "conversion.nemo_to_hf"], ["python", "-m", "evaluation"],
    ]
    models_cache = tmp_path / "nemo-models"
    environment = child_environment(NEMO_MODELS_CACHE=str(models_cache), PYTHONPATH=str(REPO),
                                    NEMORUN_HOME=str(tmp_path / ".nemo_run"), OMP_NUM_THREADS="2")
    outputs = []
    for command in commands:
        tested = as_tested(command, smollm2_hf, tmp_path)
        done = subprocess.run(["bash", "-c", tested], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{tested}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        outputs.append(done.stdout + done.stderr)

    imported = models_cache / "HuggingFaceTB" / "SmolLM2-135M-Instruct"
    assert (imported / "weights" / "metadata.json").is_file()
    assert f"the smollm2_135m_* recipes restore from nemo://HuggingFaceTB/SmolLM2-135M-Instruct (= {imported})" in outputs[1]
    assert "python launch.py recipe=smollm2_135m_sft data.dataset_root=" in outputs[1]
    assert f"({imported}: exists)" in outputs[2]
    assert f"Restoring model weights from RestoreConfig(path='{imported}'" in outputs[3]
    assert (tmp_path / "models" / "smollm2_135m_sft-hf" / "model.safetensors").is_file()
    scores = json.loads((tmp_path / "results" / "smollm2_135m_sft-eval.json").read_text())
    assert scores, "the evaluation wrote no scores"
