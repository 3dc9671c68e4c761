"""Result records: one JSON file per run, a table on screen, two runs side by side."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from evaluation.errors import Refusal

RECORD_KEYS = ("model", "checkpoint", "results", "settings", "lm_eval_version")
DEFAULT_OUT_DIR = Path("results/evaluation")


def default_out_path(record: dict, out_dir: Path = DEFAULT_OUT_DIR) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return out_dir / f"{record['model']}-{stamp}.json"


def write_record(record: dict, out: Path | None) -> Path:
    """`out` ending in .json is the file; any other path (or None) a folder for an auto-named one."""
    path = out if out is not None and out.suffix == ".json" else default_out_path(record, out or DEFAULT_OUT_DIR)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise Refusal(f"{path} is not a result JSON: {error}") from error
    missing = [key for key in RECORD_KEYS if not isinstance(record, dict) or key not in record]
    if missing:
        raise Refusal(f"{path} is not a result JSON of `python -m evaluation` (missing {', '.join(missing)})")
    return record


# ---------------------------------------------------------------- on screen


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def results_table(record: dict):
    from rich.table import Table

    table = Table(title=f"{record['model']}  ({record['checkpoint']})")
    for column in ("benchmark", "metric", "filter", "value", "± stderr", "n"):
        table.add_column(column, justify="right" if column in ("value", "± stderr", "n") else "left")
    for row in record["results"]:
        table.add_row(row["benchmark"], row["metric"], row["filter"], format_value(row["value"]),
                      format_value(row["stderr"]), format_value(row.get("samples")))
    return table


def row_key(row: dict) -> tuple[str, str, str]:
    return row["benchmark"], row["metric"], row["filter"]


def differing_settings(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a["settings"]) | set(b["settings"]))
    return [f"{key}: {a['settings'].get(key)} vs {b['settings'].get(key)}"
            for key in keys if a["settings"].get(key) != b["settings"].get(key)]


def comparison_table(a: dict, b: dict):
    """Every metric either run has; B − A where both have it (base first, trained second)."""
    from rich.table import Table

    table = Table(title=f"A: {a['checkpoint']}\nB: {b['checkpoint']}")
    for column in ("benchmark", "metric", "filter", "A", "B", "B - A"):
        table.add_column(column, justify="left" if column in ("benchmark", "metric", "filter") else "right")
    a_rows = {row_key(row): row for row in a["results"]}
    b_rows = {row_key(row): row for row in b["results"]}
    for key in list(a_rows) + [key for key in b_rows if key not in a_rows]:
        a_value = a_rows.get(key, {}).get("value")
        b_value = b_rows.get(key, {}).get("value")
        both = isinstance(a_value, (int, float)) and isinstance(b_value, (int, float))
        table.add_row(*key, format_value(a_value), format_value(b_value),
                      f"{b_value - a_value:+.4f}" if both else "-")
    return table


def print_table(table) -> None:
    import sys

    from rich.console import Console

    # Piped into a file or a test, rich would assume 80 columns and cut metric names short.
    Console(width=None if sys.stdout.isatty() else 160).print(table)
