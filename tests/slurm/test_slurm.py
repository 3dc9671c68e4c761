"""executor=slurm against a real single-host Slurm (tests/slurm/cluster.sh): a 2-job training chain that
resumes and is followed by average, export and evaluation jobs (--then), failing chains under afterany
and afterok, GPU sbatch scripts rendered without running, and secrets that reach the job without being
written anywhere.

The chain's two training jobs each import NeMo and train CPU steps until the time limit the test moves
ends them (SIGTERM within 30 s); its three --then jobs each import NeMo or transformers once more.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from launching import child_environment, training_steps

REPO = Path(__file__).resolve().parents[2]
SECRET = "hf_PLANTED_s3cret_value_4711"
OTHER_SECRET = "planted-api-key-0815"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """nemo_run's experiment store for this module, secrets planted in the submitter's environment."""
    home = tmp_path_factory.mktemp("nemorun")
    saved = {k: os.environ.get(k) for k in ("NEMORUN_HOME", "HF_TOKEN", "MY_API_KEY")}
    os.environ.update(NEMORUN_HOME=str(home), HF_TOKEN=SECRET, MY_API_KEY=OTHER_SECRET)
    import nemo_run.config

    nemo_run.config.set_nemorun_home(str(home))
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def job(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", job_id, "-o"], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_done(job_ids, timeout_s=420) -> dict:
    deadline = time.time() + timeout_s
    while True:
        states = {j: job(j) for j in job_ids}
        if all(s["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in states.values()):
            return states
        assert time.time() < deadline, {j: s["JobState"] for j, s in states.items()}
        time.sleep(3)


def submitted(output: str) -> list[str]:
    return re.findall(r"^slurm job (\d+): ", output, re.M)


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def job_log(job_dir: Path) -> str:
    logs = sorted(job_dir.glob("log-*.out"))
    return logs[0].read_text() if logs else f"(no log-*.out in {job_dir})"


def launch_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args], cwd=REPO, capture_output=True, text=True, env=child_environment(), timeout=600
    )


THEN = ("average", "export", "eval")


def logged_steps(log: str) -> list[tuple[int, int]]:
    """(global step, consumed samples) per logged training step."""
    return [(step, consumed) for step, _, consumed in training_steps(log) if consumed is not None]


def wait_for_step(job_dir: Path, job_id: str, step: int, timeout_s=420) -> None:
    deadline = time.time() + timeout_s
    while not any(s >= step for s, _ in logged_steps(job_log(job_dir))):
        state = job(job_id)["JobState"]
        assert state in ("PENDING", "RUNNING") and time.time() < deadline, (state, job_log(job_dir)[-3000:])
        time.sleep(1)


def newest_last(checkpoints: Path) -> Path:
    return max(checkpoints.glob("step=*-last"), key=lambda p: int(p.name.split("-")[0].removeprefix("step=")))


def end_time_limit_soon(job_id: str) -> None:
    """Moves the job's time limit to 1-2 minutes from now. Slurm's periodic time check (every 30 s) then sends
    the executor's SIGTERM, due 120 s before the limit (executor.signal=TERM@120, the default), at its next pass:
    mid-run, with a minute or more left for the checkpoint before the limit."""
    hours, minutes, seconds = (int(part) for part in job(job_id)["RunTime"].split(":"))
    elapsed_s = hours * 3600 + minutes * 60 + seconds
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={elapsed_s // 60 + 2}"], check=True)


@pytest.mark.slow
def test_chain_of_two_jobs_resumes_then_averages_exports_evaluates(cluster, home, tmp_path):
    """launch.py --jobs 2 --then average,export,eval: job 2 waits for job 1 (afterany); each job's time limit
    ends mid-run (the test moves it), Slurm's SIGTERM makes it save and exit, and job 2 resumes from exactly
    job 1's step; then one job per step, each afterok on the one before, the last writing the evaluation JSON."""
    logs = tmp_path / "results"
    result = launch_cli(
        "recipe=tiny_llama_pretrain", "executor=slurm", "executor.time=00:10:00", "executor.partition=debug",
        "trainer.max_steps=2000", "trainer.val_check_interval=2000", "log.ckpt.every_n_train_steps=10",
        f"log.log_dir={logs}", "log.name=chain", "then.eval.limit=2", "then.eval.threads=1",
        "then.executor.time=00:05:00", "--jobs", "2", "--then", "average,export,eval:facts",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = submitted(result.stdout)
    first, second, *then = jobs
    # While job 1 trains (a NeMo import alone takes longer than this), every later job waits on the one before.
    pending = {j: job(j) for j in jobs[1:]}
    assert pending[second]["Dependency"] == f"afterany:{first}(unfulfilled)"
    for before, after in zip(jobs[1:], then):
        assert pending[after]["Dependency"] == f"afterok:{before}(unfulfilled)", (after, pending[after])
        assert pending[after]["NumNodes"] in ("1", "1-1") and pending[after]["NumTasks"] == "1"  # min-max while pending
        assert pending[after]["TimeLimit"] == "00:05:00"
    experiment = re.search(r"^experiment: (\S+)", result.stdout, re.M).group(1)
    exp_dir = home / "experiments" / "tiny_llama_pretrain" / experiment
    job_dirs = [exp_dir / f"tiny_llama_pretrain-{n}" for n in (1, 2)]

    # Neither job can reach its step target (1000, 2000) before its time limit, moved once it trains.
    wait_for_step(job_dirs[0], first, 1)
    end_time_limit_soon(first)
    assert wait_done([first])[first]["JobState"] == "COMPLETED", job_log(job_dirs[0])[-3000:]
    # Job 2 is still importing NeMo: the newest checkpoint is the one job 1 saved on SIGTERM.
    checkpoints = logs / "chain" / "checkpoints"
    saved = newest_last(checkpoints)
    wait_for_step(job_dirs[1], second, 1)
    end_time_limit_soon(second)
    states = wait_done(jobs, timeout_s=600)
    log1, log2 = (job_log(d) for d in job_dirs)
    assert states[second]["JobState"] == "COMPLETED", log2[-3000:]
    for before, after, step in zip(jobs[1:], then, THEN):
        assert states[after]["JobState"] == "COMPLETED", job_log(exp_dir / f"tiny_llama_pretrain-{step}")[-3000:]
        assert when(states[after]["StartTime"]) >= when(states[before]["EndTime"])
    assert when(states[second]["StartTime"]) >= when(states[first]["EndTime"])

    steps1, steps2 = logged_steps(log1), logged_steps(log2)
    for log, steps in ((log1, steps1), (log2, steps2)):
        assert "Preemption detected, saving checkpoint and exiting" in log, log[-3000:]
        assert steps[-1][0] < 1000, "stopped by the time limit's SIGTERM, before the step target"
    assert "resume: no complete checkpoint" in log1
    # Job 2 resumes from exactly the checkpoint job 1 saved (at the step it was in when SIGTERM came, logged
    # or not yet): global step and consumed samples continue from it.
    step, samples = (int(float(n)) for n in re.match(r"step=(\d+)-consumed_samples=([\d.]+)-last", saved.name).groups())
    assert step >= steps1[-1][0]
    assert f"resume: from {saved} (global step {step})" in log2, log2[:3000]
    assert steps2[0] == (step + 1, samples + 8)  # global batch 8

    # average: the run's last 2 checkpoints (the newest the one job 2 saved on SIGTERM); export: that
    # average; eval: the export.
    run_dir = logs / "chain"
    assert f"[average] loading 2/2: {newest_last(checkpoints).name}" in job_log(exp_dir / "tiny_llama_pretrain-average")
    assert f"checkpoint {run_dir / 'averaged'}" in job_log(exp_dir / "tiny_llama_pretrain-export")
    record = json.loads((run_dir / "eval.json").read_text())
    assert Path(record["checkpoint"]) == run_dir / "hf"
    assert {row["benchmark"] for row in record["results"]} == {"facts"} and record["settings"]["limit"] == 2

    # The planted secrets reached nothing nemo_run or NeMo wrote.
    for root in (exp_dir, logs):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                text = path.read_bytes()
                assert SECRET.encode() not in text and OTHER_SECRET.encode() not in text, path


@pytest.fixture(scope="module")
def session_api(home):
    sys.path.insert(0, str(REPO))
    from launcher import session

    return session


def submit(session, overrides, jobs=2, after=None, capsys=None):
    prepared = session.prepare("tiny_llama_pretrain", overrides)
    prepared.jobs, prepared.after = jobs, after
    stdin = sys.stdin
    with open(os.devnull) as devnull:  # nemo_run's invoke tunnel reads stdin, which pytest's capture refuses
        sys.stdin = devnull
        try:
            assert session.launch(prepared) == 0
        finally:
            sys.stdin = stdin
    out = capsys.readouterr().out
    return re.search(r"^experiment: (\S+)", out, re.M).group(1), submitted(out)


# A job that fails at once (exit 3 in the batch script's setup, before training): what a chain does next
# depends only on the failed job's state. (A bad working directory does not fail: Slurm falls back to
# /tmp.) The echo proves the secret reached the job without printing it.
BROKEN = [
    "executor=slurm",
    "executor.setup_lines=echo hf-token-length=${#HF_TOKEN}; exit 3",
]


@pytest.mark.slow
def test_failed_job_afterany_runs_next_afterok_cancels_it(cluster, session_api, home, capsys):
    exp_any, (a1, a2) = submit(session_api, BROKEN, capsys=capsys)
    exp_ok, (b1, b2) = submit(session_api, [*BROKEN, "executor.dependency_type=afterok"], capsys=capsys)
    states = wait_done([a1, a2, b1, b2], timeout_s=120)
    assert states[a1]["JobState"] == "FAILED" and states[a1]["ExitCode"] != "0:0"
    # afterany (the default): the next job still runs, after the failed one ended.
    assert states[a2]["JobState"] == "FAILED" and states[a2]["StartTime"] != "Unknown"
    assert when(states[a2]["StartTime"]) >= when(states[a1]["EndTime"])
    # afterok: Slurm cancels the dependent job; it never starts.
    assert states[b1]["JobState"] == "FAILED"
    assert states[b2]["JobState"] == "CANCELLED" and states[b2]["Reason"] == "DependencyNeverSatisfied"
    assert states[b2]["Dependency"] == f"afterok:{b1}(failed)"  # Slurm's record: exactly the chain's job before

    exp_dir = home / "experiments" / "tiny_llama_pretrain" / exp_any
    batch_out = next((exp_dir / "tiny_llama_pretrain-1").glob("sbatch_*.out")).read_text()
    assert f"hf-token-length={len(SECRET)}" in batch_out  # passed through the environment
    for path in exp_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

    # --after: an existing job id or experiment id resolves; anything else is a clear error.
    from common.errors import UserError
    from runtime import slurm

    assert slurm.resolve_after(a1) == [a1]
    assert slurm.resolve_after(exp_any) == [a1, a2]
    assert slurm.resolve_after("tiny_llama_pretrain") == [b1, b2]  # an experiment title: its newest experiment
    with pytest.raises(UserError, match="Slurm does not know this job"):
        slurm.resolve_after("987654")
    with pytest.raises(UserError, match="neither a Slurm job id nor a nemo_run experiment"):
        slurm.resolve_after("tiny_llama_pretrain_123")
    exp_after, (c1,) = submit(session_api, BROKEN, jobs=1, after=exp_ok, capsys=capsys)
    script = (home / "experiments" / "tiny_llama_pretrain" / exp_after / "tiny_llama_pretrain_sbatch.sh").read_text()
    assert f"#SBATCH --dependency=afterany:{b1}:{b2}\n" in script  # every job of the named experiment
    assert wait_done([c1], timeout_s=60)[c1]["JobState"] == "FAILED"


def complete_checkpoints(folder: Path) -> list[Path]:
    from runtime.resume import is_unfinished, saved_checkpoints

    return [c for c in saved_checkpoints(folder) if not is_unfinished(c) and (c / "weights" / "metadata.json").is_file()]


def kill_processes_of(job_id: str) -> None:
    """SIGKILL to every process of the job, as a crash would end them (scancel would mark the job CANCELLED)."""
    listed = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, check=True).stdout
    for pid in re.findall(r"^(\d+)\s", listed, re.M):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


RESUMED = re.compile(r"resume: from (\S+) \(global step (\d+)\)")


@pytest.mark.slow
def test_a_job_after_a_failed_one_resumes_and_ends_where_its_slot_ends(cluster, session_api, home, capsys, tmp_path):
    """--jobs 2 with trainer.max_steps=40: job 1's slot ends at step 20, job 2's at 40. Job 1 is SIGKILLed (as by the
    OOM killer) right after its first checkpoint, long before its slot ends, and FAILS; job 2 (afterany) resumes from
    that run's newest complete checkpoint and trains to the end of its own slot, global step 39: the target is a
    global step, not a count of steps per job (runtime/SLURM.md)."""
    logs = tmp_path / "results"
    experiment, (first, second) = submit(session_api, [
        "executor=slurm", "executor.partition=debug", "executor.time=00:10:00", "trainer.max_steps=40",
        "trainer.val_check_interval=40", "log.ckpt.every_n_train_steps=2", f"log.log_dir={logs}", "log.name=crash",
    ], capsys=capsys)  # fmt: skip
    checkpoints = logs / "crash" / "checkpoints"
    deadline = time.time() + 300
    while not complete_checkpoints(checkpoints):
        assert time.time() < deadline and job(first)["JobState"] in ("PENDING", "RUNNING"), job(first)["JobState"]
        time.sleep(0.01)
    kill_processes_of(first)
    states = wait_done([first, second])
    exp_dir = home / "experiments" / "tiny_llama_pretrain" / experiment
    log1, log2 = (job_log(exp_dir / f"tiny_llama_pretrain-{n}") for n in (1, 2))
    assert states[first]["JobState"] == "FAILED", (states[first], log1[-3000:])
    assert states[second]["JobState"] == "COMPLETED", log2[-3000:]
    assert when(states[second]["StartTime"]) >= when(states[first]["EndTime"])

    steps1, steps2 = logged_steps(log1), logged_steps(log2)
    assert steps1[-1][0] < 19, "job 1 was to fail before the end of its slot"
    checkpoint, step = RESUMED.search(log2).groups()  # one of job 1's (later ones replace it: save_top_k)
    assert Path(checkpoint).parent == checkpoints and Path(checkpoint).name.startswith(f"step={step}-") and int(step) < 19
    assert steps2[0] == (int(step) + 1, (int(step) + 2) * 8)  # consumed samples continue (global batch 8)
    print(f"\n[slurm] job 1 killed after logging step {steps1[-1][0]}; job 2 resumed from step {step}, trained "
          f"steps {steps2[0][0]}-{steps2[-1][0]}")
    assert steps2[-1][0] == 39, "job 2 ends where its slot ends: global step 39, not its resumed step + 20"


def test_ssh_tunnel_dry_runs_and_refuses_an_unset_or_unreachable_host(session_api):
    """executor.tunnel=ssh: the dry run renders the sbatch scripts (each job's executor copied, the tunnel shared);
    a launch refuses, before anything is packaged or submitted, a host left unset and one it cannot reach."""
    from common.errors import UserError

    ssh = ["executor=slurm", "executor.tunnel=ssh"]
    dryrun = session_api.dryrun(session_api.prepare("tiny_llama_pretrain", ssh))
    assert "host: <set executor.tunnel.host>" in dryrun and "#SBATCH --job-name=" in dryrun
    with pytest.raises(UserError, match=r"^executor.tunnel.host is not set: .* set executor.tunnel.host=HOST"):
        session_api.launch(session_api.prepare("tiny_llama_pretrain", ssh))
    unreachable = [*ssh, "executor.tunnel.host=no-such-host.invalid", "executor.tunnel.job_dir=/scratch/runs"]
    with pytest.raises(UserError, match=r"^executor.tunnel.host=no-such-host.invalid \(user .*\): cannot connect over SSH"):
        session_api.launch(session_api.prepare("tiny_llama_pretrain", unreachable))


def test_secrets_in_executor_env_vars_are_refused(session_api):
    from common.errors import UserError

    with pytest.raises(UserError, match="looks like a secret"):
        session_api.prepare("tiny_llama_pretrain", ["executor=slurm", f"executor.env_vars.HF_TOKEN={SECRET}"])
    with pytest.raises(UserError, match="need executor=slurm"):
        session_api.prepare("tiny_llama_pretrain", ["executor.partition=debug"])


def test_gpu_sbatch_scripts_rendered_not_run(session_api, home, tmp_path):
    """Two 8-GPU nodes in a pyxis container, a chain of 2: the scripts are printed, nothing is submitted.
    Needs no cluster: an `sbatch` first on PATH records any call, so a submission cannot go unseen."""
    tripwire = tmp_path / "bin" / "sbatch"
    tripwire.parent.mkdir()
    tripwire.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'sbatch-called'}\nexit 1\n")
    tripwire.chmod(0o755)
    os.environ["PATH"] = f"{tripwire.parent}{os.pathsep}{os.environ['PATH']}"  # restored after the test
    prepared = session_api.prepare(
        "llama31_8b_pretrain",
        [
            "data.paths=[/lustre/corpora/web_text_document]",
            "trainer.max_steps=1000",
            "trainer.num_nodes=2",
            "executor=slurm",
            "executor.account=llm_team",
            "executor.partition=batch",
            "executor.time=04:00:00",
            "executor.container_image=nvcr.io/nvidia/nemo:25.09",
            "executor.container_mounts=/lustre:/lustre,/home/me/.cache:/root/.cache",
            "executor.packager.symlink_from_remote_dir=/lustre/me/recipes",
            "executor.env_vars.NCCL_DEBUG=WARN",
            "executor.additional_parameters.exclusive=true",
        ],
    )
    prepared.jobs = 2
    text = session_api.dryrun(prepared)
    scripts = text.split("# ---- sbatch script of ")[1:]
    assert len(scripts) == 2
    first, second = scripts
    for script in scripts:
        for line in [
            "#SBATCH --nodes=2",
            "#SBATCH --ntasks-per-node=8",
            "#SBATCH --gpus-per-node=8",
            "#SBATCH --account=llm_team",
            "#SBATCH --partition=batch",
            "#SBATCH --time=04:00:00",
            "#SBATCH --exclusive=true",
            "export NCCL_DEBUG=WARN",
        ]:
            assert line in script, line
        srun = next(l for l in script.splitlines() if l.startswith("srun --output"))
        assert "--container-image nvcr.io/nvidia/nemo:25.09" in srun
        mounts = re.search(r"--container-mounts (\S+)", srun).group(1).split(",")
        assert {"/lustre:/lustre", "/home/me/.cache:/root/.cache", "/lustre/me/recipes:/lustre/me/recipes"} <= set(mounts)
        assert "--container-workdir /nemo_run/code" in srun
        assert re.search(r"--container-env \S*HF_TOKEN", srun) and "MY_API_KEY" in srun  # names only
        assert "python -m nemo_run.core.runners.fdl_runner" in srun
        assert SECRET not in script and OTHER_SECRET not in script
        assert "export PATH=" not in script  # the container's python, not this venv
    assert "--dependency" not in first
    assert "#SBATCH --dependency='afterany:<job id of llama31_8b_pretrain-1>'" in second
    assert not (tmp_path / "sbatch-called").exists(), (tmp_path / "sbatch-called").read_text()


def test_cluster_preset_file_with_command_line_override(session_api, home, tmp_path):
    """executor=FILE.yaml: a cluster file users keep; executor.key=value on the command line wins."""
    from common.errors import UserError

    prepared = session_api.prepare(
        "llama31_8b_pretrain",
        ["data.paths=[/lustre/x_text_document]", "trainer.max_steps=100",
         f"executor={REPO}/clusters/example.yaml", "executor.partition=debug"],
    )  # fmt: skip
    script = session_api.dryrun(prepared)
    assert "#SBATCH --account=llm_team" in script and "#SBATCH --partition=debug" in script
    assert "--container-image nvcr.io/nvidia/nemo:25.09" in script

    # --then: the file's `then:` section and then.executor.* size the jobs after training; afterok each.
    from launcher import chain

    args = ["data.paths=[/lustre/x_text_document]", "trainer.max_steps=100", f"executor={REPO}/clusters/example.yaml",
            "then.executor.partition=short"]
    request, args = chain.split("export,eval:facts", args)
    prepared = session_api.prepare("llama31_8b_pretrain", args)
    prepared.then = chain.plan(request, prepared)
    training, export, evaluation = session_api.dryrun(prepared).split("# ---- sbatch script of ")[1:]
    assert "#SBATCH --gpus-per-node=8" in training and "#SBATCH --time=04:00:00" in training
    # SIGTERM 2 minutes ahead of the limit for training's checkpoint (runtime/SLURM.md); the jobs after it none.
    assert "#SBATCH --signal=TERM@120" in training
    assert "--signal" not in export and "--signal" not in evaluation
    for script in (export, evaluation):
        for line in ["#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=1",
                     "#SBATCH --time=00:30:00", "#SBATCH --partition=short", "#SBATCH --account=llm_team"]:
            assert line in script, line
    assert "#SBATCH --dependency='afterok:<job id of llama31_8b_pretrain>'" in export
    assert "#SBATCH --dependency='afterok:<job id of llama31_8b_pretrain-export>'" in evaluation
    assert "python -m conversion.nemo_to_hf --run results/llama31_8b_pretrain --out results/llama31_8b_pretrain/hf" in export
    assert "python -m evaluation --model results/llama31_8b_pretrain/hf --out results/llama31_8b_pretrain/eval.json" in evaluation
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: batch\n")
    with pytest.raises(UserError, match="must be a mapping with `executor: local | slurm`"):
        session_api.prepare("tiny_llama_pretrain", [f"executor={bad}"])


def test_python_chain_of_different_steps_renders_each_step_after_the_one_before(session_api):
    """runtime/SLURM.md, "Chains of different steps from Python": train, then an export on a smaller allocation,
    afterok, both held back by an earlier job id; rendered as submit would write them (needs no cluster)."""
    import nemo_run as run

    from conversion.nemo_to_hf import export_nemo
    from runtime import slurm

    train = session_api.prepare("tiny_llama_pretrain", ["executor=slurm", "executor.partition=debug"])
    executor = slurm.build(train.executor_config)
    export_executor = executor.clone()
    export_executor.time = "00:20:00"
    export_executor.dependency_type = "afterok"
    steps = [
        ("train", session_api.task(train), None),
        ("export", run.Partial(export_nemo, "results/tiny_llama_pretrain/checkpoints", "results/hf"), export_executor),
    ]
    (train_name, train_script), (export_name, export_script) = slurm.render("tiny_llama_train_export", executor, steps, ["4711"])
    assert (train_name, export_name) == ("train", "export")
    assert "#SBATCH --dependency=afterany:4711\n" in train_script and "#SBATCH --partition=debug" in train_script
    assert "#SBATCH --dependency='afterok:<job id of train>'" in export_script
    assert "#SBATCH --time=00:20:00" in export_script and "#SBATCH --time=00:20:00" not in train_script
