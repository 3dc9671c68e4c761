"""Evaluation of Hugging Face folders and NeMo 2 checkpoints with EleutherAI's lm-evaluation-harness.

    python -m evaluation --model DIR_OR_CHECKPOINT [--benchmarks ...] [--limit N] [--out FILE.json]
    python -m evaluation --compare A.json B.json
    python -m evaluation generate --model DIR --prompt "..."

From Python: evaluation.engine.evaluate_model(model, benchmarks, data, Settings(...)) returns the
result record; evaluation.results.write_record writes it. See evaluation/README.md.
"""
