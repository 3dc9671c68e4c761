"""Kill a CPU training run at random moments, N times, and check that the resumed run ends with the weights
of an uninterrupted one (issue 16).

    python bench/kill_soak.py --kills 10 --steps 40 --seed 0

Runs `launch.py recipe=tiny_llama_pretrain` once uninterrupted into WORK/reference, then into WORK/killed
over and over, each launch SIGKILLed (its whole process group) at a random moment of its training: once it
logs a global step drawn at random from the steps ahead of it (spread so that the kills cover the run), plus
a random 0-2 s, so that kills land in steps, validations and checkpoint saves alike, whatever the machine's
speed. After --kills kills, one launch runs to the end. Then it compares every tensor of the final `-last`
checkpoints (weights and optimizer state, read with torch.distributed.checkpoint) and prints the kills
survived, what each resumed launch said it resumed from, and the tensors that differ (none expected: same
data order and seeds).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

REPO = Path(__file__).resolve().parents[1]


STEP = re.compile(r"global_step: (\d+) ")
RESUMED_AT = re.compile(r"^resume: from \S+ \(global step (\d+)\)", re.M)


def launch(work: Path, steps: int, choose_kill=None) -> tuple[int, str]:
    """One launch in `work`. `choose_kill(first step)` -> (global step, delay s): SIGKILL to its process group
    that long after it logs that step (None: let it finish). Returns (exit status, this launch's output)."""
    command = [sys.executable, str(REPO / "launch.py"), "recipe=tiny_llama_pretrain", f"trainer.max_steps={steps}",
               "log.ckpt.every_n_train_steps=3", "trainer.val_check_interval=4"]
    env = dict(os.environ, NEMORUN_HOME=str(work / ".nemo_run"), PYTHONUNBUFFERED="1")
    log_path = work / "launches.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    kill_at = None
    while process.poll() is None:
        with open(log_path) as log:
            log.seek(start)
            output = log.read()
        if choose_kill is not None and kill_at is None and "resume: " in output:
            resumed = RESUMED_AT.search(output)
            kill_at = choose_kill(int(resumed.group(1)) + 1 if resumed else 0)
        if kill_at is not None and any(int(step) >= kill_at[0] for step in STEP.findall(output)):
            time.sleep(kill_at[1])
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    status = process.wait()
    with open(log_path) as log:
        log.seek(start)
        return status, log.read()


def final_tensors(work: Path) -> dict:
    checkpoints = work / "results" / "tiny_llama_pretrain" / "checkpoints"
    last = max(checkpoints.glob("step=*-last"), key=lambda p: int(p.name.split("-")[0].removeprefix("step=")))
    with tempfile.TemporaryDirectory() as scratch:
        dcp_to_torch_save(last / "weights", Path(scratch) / "state.pt")
        return last.name, torch.load(Path(scratch) / "state.pt", weights_only=False)


def differences(reference: dict, resumed: dict) -> list[str]:
    keys = sorted(set(reference) | set(resumed))
    return [key for key in keys if key not in reference or key not in resumed
            or (torch.is_tensor(reference[key]) and not torch.equal(reference[key], resumed[key]))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="enough that a launch trains well past its imports")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="default: a new temporary folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-soak-"))
    rng = random.Random(args.seed)
    (work / "reference").mkdir(parents=True, exist_ok=True)
    (work / "killed").mkdir(exist_ok=True)

    status, _ = launch(work / "reference", args.steps)
    assert status == 0, f"the uninterrupted run failed: {work / 'reference' / 'launches.log'}"
    kills = launches = 0

    def choose_kill(first_step: int) -> tuple[int, float]:
        # Spread the kills left over the steps left: each launch gets about an equal share of the run.
        share = max(1, (args.steps - first_step) // (args.kills - kills + 1))
        return rng.randint(first_step, min(first_step + 2 * share, args.steps - 1)), rng.uniform(0, 2)

    while True:
        status, output = launch(work / "killed", args.steps, choose_kill if kills < args.kills else None)
        launches += 1
        logged = [int(step) for step in STEP.findall(output)]
        if status == -signal.SIGKILL:
            kills += 1
            print(f"kill {kills}: after global step {max(logged, default='none')} was logged", flush=True)
        elif status == 0:  # the launch without a kill, or one that ended before its kill
            break
        else:
            print(f"launch {launches} failed with exit {status}: see {work / 'killed' / 'launches.log'}")
            return 1
    output = (work / "killed" / "launches.log").read_text()
    for line in output.splitlines():
        if line.startswith("resume: "):
            print("  " + line)
    (ref_name, reference), (name, resumed) = final_tensors(work / "reference"), final_tensors(work / "killed")
    lost = differences(reference, resumed)
    print(f"kills survived: {kills} in {launches} launches; final checkpoints {ref_name} vs {name}: "
          f"{len(reference)} entries, {len(lost)} differ" + (f": {lost[:10]}" if lost else ""))
    return 0 if not lost and ref_name == name else 1


if __name__ == "__main__":
    sys.exit(main())
