"""`python -m evaluation`: evaluate, compare, generate. Exit 0 done, 2 refused (bad input), 1 failed."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from common import cli
from evaluation.errors import EvaluationFailure, Refusal
from evaluation.tasks import DEFAULT_BENCHMARKS, available_benchmarks, parse_data_overrides

USAGE = """\
python -m evaluation --model DIR [--benchmarks arithmetic,facts,heldout_text] [--limit N] [--out FILE.json|DIR]
python -m evaluation --compare A B        (A, B: result JSONs or models; B - A per metric)
python -m evaluation generate --model DIR --prompt TEXT [--max-new-tokens N]
python -m evaluation --list
"""


class Parser(argparse.ArgumentParser):
    """argparse's own errors become a Refusal: one `error:` line, exit 2."""

    def error(self, message: str):
        raise Refusal(message)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto",
                        help="apply the tokenizer's chat template (auto: when it has one)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, help="generation length (default: the benchmark's)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", help="float32, bfloat16, auto (default: float32 on cpu, auto on a GPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")


def evaluate_parser() -> Parser:
    parser = Parser(prog="python -m evaluation", usage=USAGE,
                    description="Evaluate a Hugging Face folder or NeMo 2 checkpoint with lm-evaluation-harness.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", type=Path, help="Hugging Face folder or NeMo 2 checkpoint")
    what.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="two result JSONs or models")
    what.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument("--benchmarks", default=",".join(DEFAULT_BENCHMARKS), help="comma-separated names")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=FILE",
                        help="a local JSONL for a benchmark's test split (repeatable)")
    parser.add_argument("--benchmarks-dir", action="append", default=[], type=Path, metavar="DIR",
                        help="more benchmark YAMLs (repeatable; same name replaces a shipped one)")
    parser.add_argument("--limit", type=int, help="items per benchmark (default: all)")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (default: the benchmark's, else 0)")
    parser.add_argument("--out", type=Path, help="result file (.json) or folder (default: results/evaluation)")
    add_model_options(parser)
    return parser


def generate_parser() -> Parser:
    parser = Parser(prog="python -m evaluation generate", description="Greedy answer of a model to one prompt.")
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face folder or NeMo 2 checkpoint")
    parser.add_argument("--prompt", required=True)
    add_model_options(parser)
    parser.set_defaults(max_new_tokens=128)
    return parser


def settings_from(args: argparse.Namespace):
    from evaluation.engine import Settings

    for name in ("limit", "num_fewshot", "batch_size", "max_new_tokens", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "num_fewshot" else 1):
            raise Refusal(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'num_fewshot' else 'positive'}, got {value}")
    return Settings(limit=getattr(args, "limit", None), num_fewshot=getattr(args, "num_fewshot", None),
                    batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                    chat_template=args.chat_template, device=args.device, dtype=args.dtype, threads=args.threads)


# ---------------------------------------------------------------- commands


def list_benchmarks(args) -> int:
    from evaluation.tasks import load_benchmark

    for name, config_file in available_benchmarks(args.benchmarks_dir).items():
        benchmark = load_benchmark(name, config_file)
        data = benchmark.data_files.get("test")
        print(f"{name:14} {benchmark.config.get('output_type', '?'):22} {data or 'no shipped data: --data ' + name + '=FILE'}")
    return 0


def prepare_request(model: Path, args):
    from evaluation.engine import prepare

    names = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
    return prepare(model, names, parse_data_overrides(args.data), settings_from(args), args.benchmarks_dir)


def run_evaluation(args) -> int:
    from evaluation.engine import evaluate, log
    from evaluation.results import print_table, results_table, write_record

    request = prepare_request(args.model, args)          # refusals happen here, before any model loads
    record = evaluate(request)
    print_table(results_table(record))
    log(f"wrote {write_record(record, args.out)}")
    return 0


def is_result_file(path: Path) -> bool:
    return path.suffix == ".json" or path.is_file()


def run_comparison(args) -> int:
    from evaluation.engine import evaluate, log
    from evaluation.results import comparison_table, differing_settings, print_table, read_record, write_record

    if args.out is not None and args.out.suffix == ".json":
        raise Refusal("--compare writes one JSON per evaluated model: give --out a folder")
    # Check both sides before evaluating either.
    sides = [read_record(path) if is_result_file(path) else prepare_request(path, args) for path in args.compare]
    records = []
    for side in sides:
        if isinstance(side, dict):
            records.append(side)
            continue
        record = evaluate(side)
        log(f"wrote {write_record(record, args.out)}")
        records.append(record)
    print_table(comparison_table(*records))
    for difference in differing_settings(*records):
        print(f"note: settings differ: {difference}")
    return 0


def run_generate(argv: list[str]) -> int:
    from evaluation.generate import generate
    from evaluation.models import resolve_model

    args = generate_parser().parse_args(argv)
    settings = settings_from(args)
    source = resolve_model(args.model)
    print(generate(source, args.prompt, args.max_new_tokens, settings))
    return 0


def dispatch(argv: list[str]) -> int:
    if argv[:1] == ["generate"]:
        return run_generate(argv[1:])
    args = evaluate_parser().parse_args(argv)
    if args.list:
        return list_benchmarks(args)
    if args.compare:
        return run_comparison(args)
    return run_evaluation(args)


def main(argv: list[str] | None = None) -> int:
    def evaluate_or_fail() -> int:
        try:
            return dispatch(sys.argv[1:] if argv is None else argv)
        except (Refusal, EvaluationFailure):
            raise
        except Exception as error:  # an unforeseen failure after work started: the trace, then one error line
            traceback.print_exc()
            raise EvaluationFailure(f"{type(error).__name__}: {error}") from error

    return cli.run(evaluate_or_fail)
