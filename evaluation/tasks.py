"""Benchmarks: lm-eval task configs (YAML) over local JSONL files, checked before any model loads.

A benchmark is one YAML file in evaluation/benchmarks/ (or a folder given with --benchmarks-dir),
an ordinary lm-eval task config with `dataset_path: json`. Two conventions of ours on top:
- `dataset_kwargs.data_files` paths are relative to the YAML file; `null` means "no shipped data",
  and the run must name a local copy (`--data NAME=FILE`).
- `metadata.fields` maps each field the prompt reads to its JSON type (str, int, list, dict, ...);
  every line of the data is checked against it, so a bad file is refused with file:line.

For a run, the configs are written with absolute data paths into a scratch folder that lm-eval's
TaskManager scans (include_path); lm-eval then loads the JSONL with `datasets`' json builder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evaluation.errors import Refusal

SHIPPED_DIR = Path(__file__).resolve().parent / "benchmarks"
DEFAULT_BENCHMARKS = ("arithmetic", "facts", "heldout_text")
JSON_TYPES = {"str": str, "int": int, "float": (int, float), "list": list, "dict": dict, "bool": bool}


@dataclass
class Benchmark:
    name: str
    config_file: Path
    config: dict            # the YAML with its `include` merged in, data paths not yet resolved
    data_files: dict[str, Path | None] = field(default_factory=dict)

    @property
    def fields(self) -> dict[str, str]:
        return (self.config.get("metadata") or {}).get("fields") or {}


# ---------------------------------------------------------------- reading the configs


def read_yaml(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise Refusal(f"{path} is not valid YAML: {error}") from error
    if not isinstance(config, dict):
        raise Refusal(f"{path} is not an lm-eval task config (a YAML mapping)")
    return config


def read_task_config(path: Path) -> dict:
    """The config with its `include` merged in, shallowly and local keys winning, as lm-eval merges."""
    config = read_yaml(path)
    included = config.pop("include", None)
    if included is None:
        return config
    merged: dict = {}
    for name in included if isinstance(included, list) else [included]:
        merged.update(read_task_config((path.parent / name).resolve()))
    merged.update(config)
    return merged


def data_files_of(config: dict, config_file: Path) -> dict[str, Path | None]:
    data_files = (config.get("dataset_kwargs") or {}).get("data_files")
    if config.get("dataset_path") != "json" or not isinstance(data_files, dict):
        raise Refusal(
            f"{config_file}: a benchmark here reads local JSONL: needs `dataset_path: json` and "
            "`dataset_kwargs: {data_files: {test: FILE}}`"
        )
    return {split: None if name is None else (config_file.parent / name).resolve() for split, name in data_files.items()}


def available_benchmarks(extra_dirs: list[Path] = ()) -> dict[str, Path]:
    """Benchmark name -> YAML file; a later folder's file replaces a shipped one of the same name."""
    found: dict[str, Path] = {}
    for folder in [SHIPPED_DIR, *extra_dirs]:
        if not folder.is_dir():
            raise Refusal(f"benchmarks folder {folder} does not exist")
        for config_file in sorted(folder.glob("*.yaml")):
            task = read_yaml(config_file).get("task")
            if isinstance(task, str):
                found[task] = config_file.resolve()
    return found


def load_benchmark(name: str, config_file: Path) -> Benchmark:
    config = read_task_config(config_file)
    return Benchmark(name, config_file, config, data_files_of(config, config_file))


# ---------------------------------------------------------------- choosing and checking


def parse_data_overrides(pairs: list[str]) -> dict[str, Path]:
    """`--data NAME=FILE` pairs: a local file for a benchmark's test split."""
    overrides = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise Refusal(f"--data takes NAME=FILE (e.g. gsm8k=/data/gsm8k/test.jsonl), got {pair!r}")
        overrides[name] = Path(path).expanduser().resolve()
    return overrides


def select_benchmarks(names: list[str], data: dict[str, Path] | None = None,
                      extra_dirs: list[Path] = ()) -> list[Benchmark]:
    """The named benchmarks with their data files resolved and checked line by line."""
    data = data or {}
    if not names:
        raise Refusal("no benchmark named (--benchmarks a,b,...; --list shows them)")
    available = available_benchmarks(list(extra_dirs))
    unknown = [name for name in [*names, *data] if name not in available]
    if unknown:
        raise Refusal(f"unknown benchmark {unknown[0]!r}; available: {', '.join(sorted(available))}")
    not_run = sorted(set(data) - set(names))
    if not_run:
        raise Refusal(f"--data names {not_run[0]!r}, which is not among the benchmarks run ({', '.join(names)})")
    benchmarks = []
    for name in names:
        benchmark = load_benchmark(name, available[name])
        if name in data:
            benchmark.data_files["test"] = data[name]
        require_data(benchmark)
        benchmarks.append(benchmark)
    return benchmarks


def require_data(benchmark: Benchmark) -> None:
    for split, path in benchmark.data_files.items():
        if path is None:
            raise Refusal(
                f"benchmark {benchmark.name} ships no data: pass a local copy with --data {benchmark.name}=FILE.jsonl "
                "(evaluation/README.md says how to make one)"
            )
        check_jsonl(path, benchmark.fields)


def check_jsonl(path: Path, fields: dict[str, str]) -> int:
    """Every line a JSON object with the fields the prompt reads; returns the number of records."""
    if not path.is_file():
        raise Refusal(f"data file {path} does not exist")
    records = 0
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            check_record(line, fields, f"{path}:{number}")
            records += 1
    if records == 0:
        raise Refusal(f"data file {path} has no records")
    return records


def check_record(line: str, fields: dict[str, str], where: str) -> None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise Refusal(f"{where}: not JSON Lines ({error.msg})") from error
    if not isinstance(record, dict):
        raise Refusal(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name, type_name in fields.items():
        if name not in record:
            raise Refusal(f"{where}: missing field {name!r} (this benchmark reads {', '.join(fields)})")
        expected = JSON_TYPES.get(type_name)
        if expected is not None and not isinstance(record[name], expected):
            raise Refusal(f"{where}: field {name!r} should be {type_name}, got {type(record[name]).__name__}")


# ---------------------------------------------------------------- handing them to lm-eval


def write_task_configs(benchmarks: list[Benchmark], into: Path) -> Path:
    """One YAML per benchmark with absolute data paths: the include_path for lm-eval's TaskManager."""
    into.mkdir(parents=True, exist_ok=True)
    for benchmark in benchmarks:
        config = dict(benchmark.config)
        config["dataset_kwargs"] = {
            **(config.get("dataset_kwargs") or {}),
            "data_files": {split: str(path) for split, path in benchmark.data_files.items()},
        }
        (into / f"{benchmark.name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return into
