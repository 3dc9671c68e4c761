"""Running lm-eval: one model load (lm-eval's HFLM), every benchmark in one simple_evaluate call.

Order matters for the promise "bad input is refused before any model loads": benchmarks and their
data are checked, then the model path, and only then is anything heavy imported or exported.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from evaluation.errors import EvaluationFailure
from evaluation.models import ModelSource, hf_folder, resolve_model
from evaluation.tasks import DEFAULT_BENCHMARKS, Benchmark, select_benchmarks, write_task_configs

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def log(message: str) -> None:
    print(f"[evaluation] {message}", file=sys.stderr, flush=True)


@dataclass
class Settings:
    limit: int | None = None            # items per benchmark (None: all)
    num_fewshot: int | None = None      # None: the benchmark's own default (0 unless its YAML says)
    batch_size: int = 8
    max_new_tokens: int | None = None   # None: the benchmark's max_gen_toks
    chat_template: str = "auto"         # auto: when the tokenizer has one (instruct models); on; off
    device: str | None = None           # None: cuda if available, else cpu
    dtype: str | None = None            # None: float32 on cpu, the checkpoint's own dtype on a GPU
    threads: int | None = None          # CPU threads for torch (None: torch's default, one per core)
    seed: int = 1234
    bootstrap_iters: int = 1000         # lm-eval's stderr bootstrap for non-mean metrics


@dataclass
class Request:
    """An evaluation, checked: the benchmarks with their data, and the model."""
    source: ModelSource
    benchmarks: list[Benchmark]
    settings: Settings


def go_offline() -> None:
    """No hub at run time: datasets and huggingface_hub must never try to download."""
    for variable in OFFLINE_VARIABLES:
        os.environ[variable] = "1"
    # Both read the variables once, at import; NeMo (an on-the-fly export) may have imported them already.
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True


def prepare(model: Path | str, benchmarks: list[str] | tuple[str, ...] = DEFAULT_BENCHMARKS,
            data: dict[str, Path] | None = None, settings: Settings | None = None,
            benchmarks_dirs: list[Path] = ()) -> Request:
    """Every check that needs no model: raises Refusal with the reason."""
    chosen = select_benchmarks(list(benchmarks), data, list(benchmarks_dirs))
    return Request(resolve_model(model), chosen, settings or Settings())


# ---------------------------------------------------------------- the model


def pick_device(requested: str | None) -> str:
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def load_lm(hf_dir: Path, settings: Settings):
    from lm_eval.models.huggingface import HFLM

    import torch

    if settings.threads:
        # On a shared, busy CPU several threads per op wait on each other: one thread was 7x faster there.
        torch.set_num_threads(settings.threads)
    device = pick_device(settings.device)
    dtype = settings.dtype or ("float32" if device == "cpu" else "auto")
    log(f"loading {hf_dir} on {device} ({dtype})")
    try:
        return HFLM(pretrained=str(hf_dir), device=device, dtype=dtype, batch_size=settings.batch_size)
    except Exception as error:
        raise EvaluationFailure(f"cannot load {hf_dir} with transformers: {type(error).__name__}: {error}") from error


def wants_chat_template(lm, setting: str) -> bool:
    """Instruct models get their chat template (lm-eval's apply_chat_template), base models plain text."""
    has_template = bool(getattr(lm.tokenizer, "chat_template", None))
    if setting == "on" and not has_template:
        raise EvaluationFailure("--chat-template on, but the tokenizer has no chat template")
    return has_template if setting == "auto" else setting == "on"


# ---------------------------------------------------------------- lm-eval


def quiet_lm_eval() -> None:
    # lm-eval logs every config step at INFO; our own progress lines say what happens.
    logging.getLogger("lm_eval").setLevel(logging.WARNING)


def run_lm_eval(lm, benchmarks: list[Benchmark], settings: Settings, chat: bool) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    quiet_lm_eval()
    with tempfile.TemporaryDirectory(prefix="eval-tasks-") as scratch:
        include_path = write_task_configs(benchmarks, Path(scratch))
        task_manager = TaskManager(include_path=str(include_path), include_defaults=False)
        gen_kwargs = {"max_gen_toks": settings.max_new_tokens} if settings.max_new_tokens else None
        try:
            return lm_eval.simple_evaluate(
                model=lm,
                tasks=[benchmark.name for benchmark in benchmarks],
                task_manager=task_manager,
                num_fewshot=settings.num_fewshot,
                limit=settings.limit,
                apply_chat_template=chat,
                fewshot_as_multiturn=chat,
                gen_kwargs=gen_kwargs,
                bootstrap_iters=settings.bootstrap_iters,
                log_samples=False,
                random_seed=settings.seed,
                numpy_random_seed=settings.seed,
                torch_random_seed=settings.seed,
                fewshot_random_seed=settings.seed,
            )
        except Exception as error:
            raise EvaluationFailure(f"lm-eval failed: {type(error).__name__}: {error}") from error


def metric_rows(lm_eval_results: dict, benchmarks: list[Benchmark]) -> list[dict]:
    """lm-eval's `{"metric,filter": value, "metric_stderr,filter": stderr}` as one row per metric."""
    rows = []
    for benchmark in benchmarks:
        scores = lm_eval_results["results"][benchmark.name]
        samples = lm_eval_results.get("n-samples", {}).get(benchmark.name, {}).get("effective")
        for key, value in scores.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr"):
                continue
            stderr = scores.get(f"{metric}_stderr,{filter_name}")
            rows.append({
                "benchmark": benchmark.name,
                "metric": metric,
                "filter": filter_name,
                "value": value,
                "stderr": stderr if isinstance(stderr, (int, float)) else None,
                "samples": samples,
            })
    return rows


# ---------------------------------------------------------------- one run


def evaluate(request: Request) -> dict:
    """Runs the checked request; returns the result record (what `python -m evaluation` writes)."""
    go_offline()
    import lm_eval

    started = time.perf_counter()
    settings = request.settings
    log(f"model {request.source.describe()}")
    with hf_folder(request.source) as hf_dir:
        lm = load_lm(hf_dir, settings)
        chat = wants_chat_template(lm, settings.chat_template)
        names = ", ".join(benchmark.name for benchmark in request.benchmarks)
        log(f"benchmarks {names}; limit {settings.limit}; chat template {'applied' if chat else 'not applied'}")
        results = run_lm_eval(lm, request.benchmarks, settings, chat)
    return {
        "model": request.source.path.name,
        "checkpoint": str(request.source.path),
        "model_kind": request.source.kind,
        "results": metric_rows(results, request.benchmarks),
        "settings": {**asdict(settings), "device": pick_device(settings.device), "chat_template_applied": chat},
        "benchmarks": {
            benchmark.name: {
                "config": str(benchmark.config_file),
                "data": {split: str(path) for split, path in benchmark.data_files.items()},
                "num_fewshot": results["configs"][benchmark.name].get("num_fewshot"),
            }
            for benchmark in request.benchmarks
        },
        "lm_eval_version": lm_eval.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def evaluate_model(model: Path | str, benchmarks: list[str] | tuple[str, ...] = DEFAULT_BENCHMARKS,
                   data: dict[str, Path] | None = None, settings: Settings | None = None,
                   benchmarks_dirs: list[Path] = ()) -> dict:
    """The Python entry: check everything, then evaluate. Refusal / EvaluationFailure on trouble."""
    return evaluate(prepare(model, benchmarks, data, settings, benchmarks_dirs))
