"""How often a Hugging Face model answers held-out questions in the shipped chat data's ANSWER[value] format.

Run by hand after fine-tuning on data/sft_examples/chat_sft (data/README.md has the commands and figures):

    python -m bench.chat_format MODEL_DIR [MODEL_DIR ...]

Each question is one user turn after the training data's system prompt, rendered by the model folder's own
chat template (the exported one carries the recipe's template) and answered greedily.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELDOUT = REPO / "data" / "sft_examples" / "chat_heldout.jsonl"
SYSTEM_PROMPT = "You are a concise assistant."
ANSWER = re.compile(r"^ANSWER\[([^\]]+)\]")


def score(model_dir: str, max_new_tokens: int = 16) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    questions = [json.loads(line) for line in HELDOUT.read_text().splitlines()]
    in_format = correct = 0
    examples = []
    for question in questions:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question["question"]}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            output = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        answer = tokenizer.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        match = ANSWER.match(answer)
        in_format += bool(match)
        correct += bool(match) and match.group(1) == question["answer"]
        examples.append(answer)
    return {"model": model_dir, "questions": len(questions), "in_format": in_format, "correct": correct,
            "first_answers": examples[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    for model_dir in parser.parse_args().models:
        print(json.dumps(score(model_dir)))


if __name__ == "__main__":
    main()
