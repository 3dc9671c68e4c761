"""DPO of a real pretrained model on CPU: SmolLM2-135M-Instruct, from its imported NeMo checkpoint, on the
shipped pairs (ChatML). A short `launch.py recipe=smollm2_135m_dpo` run raises the reward margin and accuracy;
the trained checkpoint exports to Hugging Face with conversion.nemo_to_hf, loads in transformers, and there
prefers the chosen answers more than the original model does (the DPO implicit reward, recomputed in HF).

The HF folder and its NeMo import are the session's (tests/conftest.py).
"""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from launching import launch

pytestmark = pytest.mark.slow  # every test here trains or launches training

REPO = Path(__file__).resolve().parents[2]
PAIRS = REPO / "data" / "sft_examples" / "preference_pairs.jsonl"
STEPS = 8
TRAIN_PAIRS = 16  # a subset of the shipped pairs: the reference pre-pass scores every pair once
BETA = 0.1

LINE = re.compile(r"global_step: (\d+) \| reduced_train_loss: ([-\d.e]+) \| reward_chosen: ([-\d.e]+) \| "
                  r"reward_rejected: ([-\d.e]+) \| reward_margin: ([-\d.e]+) \| reward_accuracy: ([-\d.e]+)")
LOSS, CHOSEN, REJECTED, MARGIN, ACCURACY = range(5)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(PAIRS.read_text().splitlines(keepends=True)[:TRAIN_PAIRS]))
    return path


@pytest.fixture(scope="module")
def trained(smollm2_nemo, pairs_file, tmp_path_factory):
    """(per-step metrics, log dir) of a short DPO run."""
    log_dir = tmp_path_factory.mktemp("smollm2_dpo")
    done = launch("recipe=smollm2_135m_dpo", f"trainer.max_steps={STEPS}", f"data.paths.0={pairs_file}",
                  f"log.log_dir={log_dir}", f"log.ckpt.every_n_train_steps={STEPS}",
                  f"resume.restore_config.path={smollm2_nemo}", f"data.tokenizer.source={smollm2_nemo}",
                  cwd=log_dir, OMP_NUM_THREADS="2")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    rows = {int(m[0]): [float(v) for v in m[1:]] for m in LINE.findall(output)}
    assert sorted(rows) == list(range(STEPS)), output[-3000:]
    return rows, log_dir


def mean(rows, column):
    return sum(r[column] for r in rows) / len(rows)


def test_dpo_raises_margin_and_accuracy(trained):
    rows, _ = trained
    # step 0: the policy is the reference (the imported weights), so loss = log 2 and every reward is 0
    assert rows[0][LOSS] == pytest.approx(math.log(2), abs=1e-3)
    assert rows[0][MARGIN] == pytest.approx(0, abs=1e-4) and rows[0][ACCURACY] == 0
    first, last = [rows[s] for s in range(2)], [rows[s] for s in range(STEPS - 3, STEPS)]
    print(f"\nmargin {mean(first, MARGIN):.3f} -> {mean(last, MARGIN):.3f}, "
          f"accuracy {mean(first, ACCURACY):.3f} -> {mean(last, ACCURACY):.3f}, "
          f"loss {mean(first, LOSS):.3f} -> {mean(last, LOSS):.3f}")
    assert mean(last, MARGIN) > mean(first, MARGIN) + 0.1
    assert mean(last, ACCURACY) >= mean(first, ACCURACY) + 0.5
    assert mean(last, LOSS) < mean(first, LOSS) - 0.05


def answer_logps(model, tokenizer, pairs):
    """Per pair: (log pi(chosen), log pi(rejected)) summed over the whole ChatML text. The prompt tokens are
    the same in both and come first, so in the DPO reward difference they cancel exactly."""
    out = []
    for pair in pairs:
        sums = []
        for side in ("chosen", "rejected"):
            text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in pair[side])
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            with torch.no_grad():
                logits = model(ids).logits[0, :-1].float()
            sums.append(float(torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).sum()))
        out.append(sums)
    return out


def test_trained_checkpoint_exports_and_loads_in_transformers(trained, smollm2_hf, pairs_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conversion.nemo_to_hf import export_nemo

    _, log_dir = trained
    checkpoints = sorted((log_dir / "smollm2_135m_dpo" / "checkpoints").glob(f"*step={STEPS - 1}*-last"))
    assert checkpoints, list((log_dir / "smollm2_135m_dpo").rglob("*"))[:20]
    exported = export_nemo(checkpoints[-1], tmp_path / "smollm2-dpo-hf")

    tokenizer = AutoTokenizer.from_pretrained(exported)
    policy = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()[:8]]
    after, before = answer_logps(policy, tokenizer, pairs), answer_logps(reference, tokenizer, pairs)
    margins = [BETA * ((pc - rc) - (pr - rr)) for (pc, pr), (rc, rr) in zip(after, before)]
    accuracy = sum(m > 0 for m in margins) / len(margins)
    print(f"\nexported model, 8 training pairs: DPO margin {sum(margins) / len(margins):.3f}, accuracy {accuracy:.2f}")
    assert sum(margins) / len(margins) > 0.05 and accuracy >= 0.75
    # A working chat model still: through the exported tokenizer's chat template, the greedy answer to a known
    # question is the original model's ("The capital of France is Paris.", STACK.md), not merely some text.
    prompt = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                                     tokenize=False, add_generation_prompt=True), return_tensors="pt").input_ids

    def answer(model) -> str:
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                                   pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(generated[0, prompt.shape[1]:], skip_special_tokens=True)

    trained_answer, original_answer = answer(policy), answer(reference)
    print(f"exported model: {trained_answer!r} (original: {original_answer!r})")
    assert "Paris" in original_answer and trained_answer == original_answer
