"""Throughput of data.prepare_pretraining against Megatron-LM's tools/preprocess_data.py, side by side.

    python bench/prepare_pretraining.py --megatron-lm /path/to/Megatron-LM --workers 2 \\
        --tokenizer models/tokenizers/tiny --tokenizer /path/to/a/bigger/hf/tokenizer

Both tools run as subprocesses on the same generated corpus (the shipped pydoc corpus repeated to
--target-mb), with the same tokenizer, worker count and --append-eod; the bench prints tokens/s end to
end (imports included), tokens/s after subtracting each tool's start-up cost (measured on a one-document
corpus), the ratio ours/theirs, and whether the .bin/.idx files are byte-identical. It also times the
bare fast tokenizer on the same documents (transformers' ``tokenizer(texts)``, tokenizer loaded and
texts read beforehand, same thread count) and prints ours / tokenizer-only: the floor this tool can
approach. The three run alternately, so a busy machine slows them alike; medians of --repeats.

The Megatron-LM checkout is yours to provide (this repository holds none of its code). Its
megatron/core shadows the installed megatron-core, so check out the tag matching the installed version
(`git checkout core_v0.15.3`); a newer checkout fails to import against this venv's dependencies.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO / "data" / "corpora" / "pydoc_topics.jsonl"
DEFAULT_TOKENIZER = REPO / "models" / "tokenizers" / "tiny"


@dataclass(frozen=True)
class Run:
    seconds: float
    prefix: Path  # PREFIX_text_document, without .bin/.idx


def make_corpus(source: Path, target_bytes: int, destination: Path) -> Path:
    text = source.read_bytes()
    copies = max(1, -(-target_bytes // len(text)))
    destination.write_bytes(text * copies)
    return destination


def one_document_corpus(source: Path, destination: Path) -> Path:
    with source.open("rb") as file:
        destination.write_bytes(file.readline())
    return destination


def ours_command(corpus: Path, tokenizer: Path, output_prefix: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "data.prepare_pretraining", "--input", str(corpus),
            "--tokenizer", str(tokenizer), "--output-prefix", str(output_prefix), "--append-eod",
            "--workers", str(workers), "--no-progress"]


def theirs_command(
    megatron_lm: Path, corpus: Path, tokenizer: Path, output_prefix: Path, workers: int
) -> list[str]:
    return [sys.executable, str(megatron_lm / "tools" / "preprocess_data.py"), "--input", str(corpus),
            "--output-prefix", str(output_prefix), "--tokenizer-type", "HuggingFaceTokenizer",
            "--tokenizer-model", str(tokenizer), "--append-eod", "--workers", str(workers),
            "--log-interval", str(10**9)]


# The bare tokenizer call on the corpus' documents, timed alone (loading and reading are not counted).
TOKENIZER_ONLY = """
import json, sys, time
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
with open(sys.argv[2], "rb") as corpus:
    texts = [json.loads(line)["text"] for line in corpus if line.strip()]
started = time.perf_counter()
tokenizer(texts)
print(time.perf_counter() - started)
"""


def tokenizer_only_seconds(tokenizer: Path, corpus: Path, workers: int) -> float:
    env = dict(os.environ, RAYON_NUM_THREADS=str(workers))  # the Rust thread pool: same count as the tools
    result = subprocess.run([sys.executable, "-c", TOKENIZER_ONLY, str(tokenizer), str(corpus)],
                            cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def timed(command: list[str], env: dict[str, str], output_prefix: Path, label: str) -> Run:
    output_prefix.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{label} failed (exit {result.returncode}):\n$ {' '.join(command)}\n{result.stderr[-3000:]}")
    return Run(seconds, Path(f"{output_prefix}_text_document"))


def token_count(prefix: Path) -> int:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(str(prefix))  # kept alive: sequence_lengths is a view of its memory map
    return int(dataset.sequence_lengths.sum())


def identical(a: Path, b: Path) -> bool:
    return all(filecmp.cmp(f"{a}{ext}", f"{b}{ext}", shallow=False) for ext in (".bin", ".idx"))


def bench_tokenizer(args, tokenizer: Path, corpus: Path, tiny_corpus: Path, workdir: Path) -> None:
    ours_env = dict(os.environ)
    # Megatron-LM's documented way to run its tools: the checkout first on PYTHONPATH.
    pythonpath = os.pathsep.join(filter(None, [str(args.megatron_lm), os.environ.get("PYTHONPATH")]))
    theirs_env = dict(os.environ, PYTHONPATH=pythonpath)
    out = workdir / tokenizer.name

    def ours(corpus_path: Path, tag: str) -> Run:
        command = ours_command(corpus_path, tokenizer, out / f"ours_{tag}", args.workers)
        return timed(command, ours_env, out / f"ours_{tag}", "ours")

    def theirs(corpus_path: Path, tag: str) -> Run:
        command = theirs_command(args.megatron_lm, corpus_path, tokenizer, out / f"theirs_{tag}", args.workers)
        return timed(command, theirs_env, out / f"theirs_{tag}", "Megatron-LM preprocess_data.py")

    ours_startup, theirs_startup = ours(tiny_corpus, "startup").seconds, theirs(tiny_corpus, "startup").seconds
    ours_runs, theirs_runs, tokenizer_runs = [], [], []
    for _ in range(args.repeats):  # interleaved, so a busy machine slows all alike
        ours_runs.append(ours(corpus, "full"))
        theirs_runs.append(theirs(corpus, "full"))
        tokenizer_runs.append(tokenizer_only_seconds(tokenizer, corpus, args.workers))

    tokens = token_count(ours_runs[-1].prefix)
    same = identical(ours_runs[-1].prefix, theirs_runs[-1].prefix)
    ours_s = statistics.median(r.seconds for r in ours_runs)
    theirs_s = statistics.median(r.seconds for r in theirs_runs)
    tokenizer_s = statistics.median(tokenizer_runs)
    ours_steady = tokens / max(ours_s - ours_startup, 1e-9)
    theirs_steady = tokens / max(theirs_s - theirs_startup, 1e-9)

    print(f"\ntokenizer {tokenizer} ({tokens:,} tokens, {corpus.stat().st_size / 1e6:.1f} MB, "
          f"{args.workers} workers, median of {args.repeats})")
    print(f"  {'':12} {'wall s':>8} {'startup s':>10} {'tokens/s':>12} {'tokens/s w/o startup':>21}")
    for label, seconds, startup, steady in (("ours", ours_s, ours_startup, ours_steady),
                                            ("Megatron-LM", theirs_s, theirs_startup, theirs_steady)):
        print(f"  {label:12} {seconds:8.1f} {startup:10.1f} {tokens / seconds:12,.0f} {steady:21,.0f}")
    print(f"  {'tokenizer only':14} {tokenizer_s:6.1f} {'':10} {tokens / tokenizer_s:12,.0f}   (transformers tokenizer(texts))")
    print(f"  ratio ours/theirs: {theirs_s / ours_s:.2f}x end to end, "
          f"{ours_steady / theirs_steady:.2f}x without start-up")
    print(f"  ours / tokenizer only: {ours_s / tokenizer_s:.2f}x the time")
    print(f"  each run, seconds: ours {[round(r.seconds, 1) for r in ours_runs]}, "
          f"Megatron-LM {[round(r.seconds, 1) for r in theirs_runs]}, tokenizer {[round(t, 1) for t in tokenizer_runs]}")
    print(f"  outputs byte-identical (.bin and .idx): {'yes' if same else 'NO'}", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--megatron-lm", type=Path, required=True,
                        help="local Megatron-LM checkout (the tag matching megatron-core, e.g. core_v0.15.3)")
    parser.add_argument("--tokenizer", type=Path, action="append",
                        help=f"HF tokenizer folder, repeatable (default {DEFAULT_TOKENIZER})")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="JSONL repeated to build the bench corpus")
    parser.add_argument("--target-mb", type=float, default=60, help="bench corpus size")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes, for both tools")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per tool (median reported)")
    parser.add_argument("--workdir", type=Path, help="where corpus and outputs go (default: a temporary folder)")
    args = parser.parse_args()
    if not (args.megatron_lm / "tools" / "preprocess_data.py").is_file():
        parser.error(f"{args.megatron_lm} has no tools/preprocess_data.py; pass a Megatron-LM checkout")
    args.tokenizer = args.tokenizer or [DEFAULT_TOKENIZER]
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        corpus = make_corpus(args.corpus, int(args.target_mb * 1e6), workdir / "corpus.jsonl")
        tiny_corpus = one_document_corpus(args.corpus, workdir / "one_document.jsonl")
        for tokenizer in args.tokenizer:
            bench_tokenizer(args, tokenizer.resolve(), corpus, tiny_corpus, workdir)


if __name__ == "__main__":
    main()
