"""`launch.py recipe=NAME ... --then average,export,eval[:benchmark,...]`: the steps after training, on what
training wrote (README.md, "After training"; runtime/SLURM.md for Slurm).

Each step is one of our own commands, built and checked at launch, before training: locally they run one
after the other once training has ended (a subprocess each; the first that fails ends the launch with
exit 1, naming it); on Slurm each is a job, `afterok` on the job before it (the last training job of a
`--jobs N` chain for the first one). RUN is the run folder `<log.log_dir>/<log.name>`:

    average  python -m conversion.average --run RUN --last K --out RUN/averaged --overwrite   (average:K, K=2)
             no command when the recipe averages itself (training.checkpoint_averaging.AverageLastCheckpoints
             writes RUN/averaged when training ends)
    export   python -m conversion.nemo_to_hf --nemo RUN/averaged (after average) | --run RUN (its newest
             checkpoint) --out RUN/hf --overwrite
    eval     python -m evaluation --model RUN/hf --out RUN/eval.json [--benchmarks a,b] [then.eval.OPTION=value]
"""

from __future__ import annotations

import copy
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import fiddle as fdl
import nemo_run as run

from common.errors import RunFailed, UserError
from launcher import executor_args
from runtime import slurm
from runtime.process_group import DISTRIBUTED_VARIABLES
from training.checkpoint_averaging import AVERAGED_DIR, AverageLastCheckpoints

REPO_ROOT = Path(__file__).resolve().parents[1]
STEP_ORDER = ("average", "export", "eval")
DEFAULT_AVERAGED = 2  # checkpoints `average` takes when the recipe does not average itself
EXPORTED_DIR = "hf"
EVAL_FILE = "eval.json"
SET_BY_THE_CHAIN = ("model", "out", "benchmarks", "compare", "list")  # python -m evaluation options
STEPS_HELP = "average[:K], export, eval[:benchmark,...]"


@dataclass
class Request:
    """What the command line asked: the steps (name -> its argument after ':') and their then.* settings."""

    text: str
    steps: dict[str, str]
    executor_settings: list[str] = field(default_factory=list)  # then.executor.KEY=value, prefix removed
    eval_options: list[str] = field(default_factory=list)  # then.eval.OPTION=value, prefix removed


@dataclass(frozen=True)
class Step:
    name: str
    module: str | None  # python -m MODULE ARGS; None: training does it (the recipe's own averaging)
    args: tuple[str, ...] = ()
    note: str = ""

    def command(self, python: str = "python") -> list[str]:
        return [python, "-m", self.module, *self.args]


@dataclass
class Chain:
    recipe: str
    steps: list[Step]
    executor_config: object = None  # executor=slurm: run.Config of the jobs after training


# ---------------------------------------------------------------------------------------------- request


def _parse_steps(text: str) -> dict[str, str]:
    steps: dict[str, str] = {}
    for token in (t.strip() for t in text.split(",")):
        name, colon, argument = token.partition(":")
        if name in STEP_ORDER:
            if name in steps:
                raise UserError(f"--then {text}: {name} is named twice")
            if colon and not argument.strip():
                raise UserError(f"--then {text}: {name}: needs a value after ':'")
            steps[name] = argument.strip()
        elif list(steps)[-1:] == ["eval"] and steps["eval"] and not colon and token:
            steps["eval"] += f",{token}"  # eval:a,b: one more benchmark
        else:
            raise UserError(f"--then {text}: unknown step {token!r}; the steps: {STEPS_HELP}")
    in_order = [name for name in STEP_ORDER if name in steps]
    if list(steps) != in_order:
        raise UserError(f"--then {text}: the steps run in the order {', '.join(STEP_ORDER)}: write --then {','.join(in_order)}")
    if "eval" in steps and "export" not in steps:
        # Evaluating a NeMo checkpoint exports it to a temporary folder anyway; exporting first keeps that
        # folder, and the evaluation record names a model that still exists.
        raise UserError(f"--then {text}: eval scores the exported Hugging Face folder: add export before it (--then ...,export,eval)")
    if steps.get("export"):
        raise UserError(f"--then {text}: export takes no value")
    return steps


def split(then: str | None, args: list[str]) -> tuple[Request | None, list[str]]:
    """The --then request with its then.* settings, and the other command-line overrides."""
    settings = [text for text in args if text.startswith("then.")]
    rest = [text for text in args if not text.startswith("then.")]
    if then is None:
        if settings:
            raise UserError(f"{settings[0]}: then.* settings are for the steps after training: add --then {STEPS_HELP}")
        return None, rest
    request = Request(then, _parse_steps(then), executor_settings=executor_args.then_preset_settings(rest))
    for text in settings:
        kind, _, setting = text.removeprefix("then.").partition(".")
        if kind == "executor" and setting:
            request.executor_settings.append(setting)
        elif kind == "eval" and setting:
            request.eval_options.append(setting)
        else:
            raise UserError(f"{text}: write then.executor.KEY=value (Slurm jobs after training) or then.eval.OPTION=value (python -m evaluation)")
    return request, rest


# ---------------------------------------------------------------------------------------------- plan


def run_folder(log) -> Path:
    """`<log_dir>/<name>[/<version>]`, where NeMoLogger writes checkpoints/ (and averaging `averaged/`)."""
    if log.explicit_log_dir:
        return Path(log.explicit_log_dir)
    if log.use_datetime_version and not log.version:
        raise UserError("--then needs the run folder at launch: log.use_datetime_version=true names it when training starts")
    folder = Path(log.log_dir) / log.name
    return folder / log.version if log.version else folder


def _recipe_averaging(config) -> int | None:
    """K of the recipe's own AverageLastCheckpoints(last=K), if it has one."""
    for callback in config.trainer.callbacks or []:
        if isinstance(callback, fdl.Buildable) and fdl.get_callable(callback) is AverageLastCheckpoints:
            return callback.last
    return None


def _average_step(config, argument: str, run_dir: Path) -> Step:
    averaged_by_recipe = _recipe_averaging(config)
    if averaged_by_recipe is not None:
        if argument and argument != str(averaged_by_recipe):
            raise UserError(
                f"--then average:{argument}: the recipe already averages its last {averaged_by_recipe} checkpoints "
                "when training ends (AverageLastCheckpoints in trainer.callbacks): change its `last` instead"
            )
        return Step("average", None, note=f"done when training ends: the recipe's AverageLastCheckpoints(last={averaged_by_recipe}) writes {run_dir / AVERAGED_DIR}")
    if argument and not (argument.isdigit() and int(argument) >= 1):
        raise UserError(f"--then average:{argument}: the number of checkpoints to average, 1 or more")
    last = int(argument or DEFAULT_AVERAGED)
    kept = config.log.ckpt.save_top_k
    if isinstance(kept, int) and 0 <= kept < last:
        raise UserError(f"--then average:{last}: the run keeps {kept} checkpoints (log.ckpt.save_top_k={kept})")
    return Step("average", "conversion.average", ("--run", str(run_dir), "--last", str(last), "--out", str(run_dir / AVERAGED_DIR), "--overwrite"))


def _export_step(averaged: bool, run_dir: Path) -> Step:
    source = ("--nemo", str(run_dir / AVERAGED_DIR)) if averaged else ("--run", str(run_dir))
    return Step("export", "conversion.nemo_to_hf", (*source, "--out", str(run_dir / EXPORTED_DIR), "--overwrite"))


def _eval_step(benchmarks: str, options: list[str], run_dir: Path) -> Step:
    args = ["--model", str(run_dir / EXPORTED_DIR), "--out", str(run_dir / EVAL_FILE)]
    args += ["--benchmarks", benchmarks] if benchmarks else []
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or name in SET_BY_THE_CHAIN:
            raise UserError(f"then.eval.{option}: write then.eval.OPTION=value, OPTION one of python -m evaluation's options but {', '.join(SET_BY_THE_CHAIN)}")
        args += [f"--{name.replace('_', '-')}", value]
    _check_evaluation_args(args)
    return Step("eval", "evaluation", tuple(args))


def _check_evaluation_args(args: list[str]) -> None:
    """Evaluation's own checks that need no model (options, benchmark names, their data), now, not after training."""
    from evaluation import cli
    from evaluation.errors import Refusal
    from evaluation.tasks import parse_data_overrides, select_benchmarks

    try:
        parsed = cli.evaluate_parser().parse_args(args)
        cli.settings_from(parsed)
        names = [name.strip() for name in parsed.benchmarks.split(",") if name.strip()]
        select_benchmarks(names, parse_data_overrides(parsed.data), parsed.benchmarks_dir)
    except Refusal as refusal:
        raise UserError(f"--then eval: {refusal}") from None


def _executor_config(training_config, settings: list[str]) -> run.Config:
    """The training job's executor (account, partition, container, environment) on one task: one node, one
    GPU when training has GPUs, `afterok` on the job before, no early SIGTERM; then the cluster file's `then:`
    and then.executor.*."""
    config = copy.deepcopy(training_config)
    config.nodes = 1
    config.ntasks_per_node = 1
    config.gpus_per_node = 1 if config.gpus_per_node else None
    config.dependency_type = "afterok"
    config.signal = None  # the training job's early SIGTERM is for its checkpoint: a conversion would only die sooner
    executor_args.apply_overrides(config, settings)
    slurm.check_no_secrets(config)
    return config


def plan(request: Request, prepared) -> Chain:
    """Every step's command, checked before anything runs; refusals are UserErrors (exit 2)."""
    config = prepared.config
    if getattr(config, "peft", None) is not None:
        raise UserError(f"--then {request.text}: a LoRA run's checkpoints hold adapters: merge them first (python -m conversion.merge_lora)")
    if request.executor_settings and prepared.executor != "slurm":
        raise UserError(f"then.executor.{request.executor_settings[0]}: settings of the Slurm jobs after training need executor=slurm")
    run_dir = run_folder(config.log)
    if prepared.executor == "local":
        run_dir = run_dir.resolve()  # the steps run from the repository root
    steps = []
    if "average" in request.steps:
        steps.append(_average_step(config, request.steps["average"], run_dir))
    if "export" in request.steps:
        steps.append(_export_step("average" in request.steps, run_dir))
    if "eval" in request.steps:
        steps.append(_eval_step(request.steps["eval"], request.eval_options, run_dir))
    executor_config = _executor_config(prepared.executor_config, request.executor_settings) if prepared.executor == "slurm" else None
    return Chain(prepared.name, steps, executor_config)


# ---------------------------------------------------------------------------------------------- running


def describe(chain: Chain) -> str:
    lines = ["# then, after training, in order (each must succeed):"]
    for step in chain.steps:
        lines.append(f"#   {step.name}: " + (step.note or shlex.join(step.command())))
    return "\n".join(lines)


def run_local(chain: Chain) -> None:
    """Runs the steps in order from the repository root; the first failure raises RunFailed (exit 1)."""
    # A child must not join the process group in-process training left its variables for.
    environment = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    for step in chain.steps:
        if step.module is None:
            print(f"[then] {step.name}: {step.note}", flush=True)
            continue
        command = step.command(sys.executable)
        print(f"[then] {step.name}: {shlex.join(step.command())}", flush=True)
        status = subprocess.run(command, cwd=REPO_ROOT, env=environment).returncode
        if status != 0:
            raise RunFailed(f"--then {step.name} failed (exit {status}) after training: {shlex.join(step.command())}; its output is above")


def slurm_steps(chain: Chain) -> list:
    """(job name, task, executor) per step with a command: one job each, afterok on the one before."""
    executor = slurm.build(chain.executor_config)
    return [
        (f"{chain.recipe}-{step.name}", run.Script(path=step.module, args=list(step.args), entrypoint="python", m=True), executor)
        for step in chain.steps
        if step.module is not None
    ]


__all__ = ["Request", "Chain", "Step", "split", "plan", "describe", "run_local", "slurm_steps", "run_folder"]
