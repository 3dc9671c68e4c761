"""Writes SFT data that teaches the answer format of the shipped `arithmetic` benchmark (GSM8K's `#### N`).

    python -m evaluation.make_arithmetic_sft [--out data/sft_examples/arithmetic_sft] [--count 400]

The same word-problem templates as evaluation/benchmarks/arithmetic.jsonl (evaluation.make_benchmarks),
other numbers (another seed), and no question of the benchmark itself: {"input": "Question: ...\\nAnswer:",
"output": "<worked steps>\\n#### <number>"}, the prompt the benchmark shows. training.jsonl and a 5%
validation.jsonl, the layout of an SFT `data.dataset_root`:

    python launch.py recipe=smollm2_135m_sft data.dataset_root=data/sft_examples/arithmetic_sft trainer.max_steps=30 \\
        then.eval.limit=40 --then average,export,eval:arithmetic
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evaluation.make_benchmarks import arithmetic_problems, jsonl_text

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "data" / "sft_examples" / "arithmetic_sft"
SEED = 2026  # not the benchmark's: other numbers
COUNT = 400


def sft_records(count: int = COUNT) -> list[dict]:
    benchmark = {problem["question"] for problem in arithmetic_problems()}
    problems = [p for p in arithmetic_problems(count, seed=SEED) if p["question"] not in benchmark]
    return [{"input": f"Question: {p['question']}\nAnswer:", "output": p["answer"]} for p in problems]


def write(out_dir: Path = OUT_DIR, count: int = COUNT) -> list[Path]:
    records = sft_records(count)
    held_out = max(1, len(records) // 20)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {"training.jsonl": records[held_out:], "validation.jsonl": records[:held_out]}
    for name, split in splits.items():
        (out_dir / name).write_text(jsonl_text(split))
    return [out_dir / name for name in splits]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--count", type=int, default=COUNT)
    args = parser.parse_args(argv)
    for path in write(args.out, args.count):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
