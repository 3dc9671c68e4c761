"""Kill a CPU training run at random moments, N times, and check that the resumed run ends with the weights
of an uninterrupted one (issue 16).

    python bench/kill_soak.py --kills 10 --steps 12 --seed 0

Runs `launch.py recipe=tiny_llama_pretrain` once uninterrupted into WORK/reference, then into WORK/killed
over and over, each launch SIGKILLed (its whole process group) after a random delay drawn from
[--earliest, --latest] x the reference launch's wall time, until --kills kills have landed; a launch that ends before its kill finishes the
run. Then it compares every tensor of the final `-last` checkpoints (weights and optimizer state, read with
torch.distributed.checkpoint) and prints the kills survived, what each resumed launch said it resumed from,
and the tensors that differ (none expected: same data order and seeds).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

REPO = Path(__file__).resolve().parents[1]


def launch(work: Path, steps: int, kill_after_s: float | None) -> tuple[int, str]:
    """One launch in `work`; SIGKILL to its process group after `kill_after_s` (None: let it finish)."""
    command = [sys.executable, str(REPO / "launch.py"), "recipe=tiny_llama_pretrain", f"trainer.max_steps={steps}",
               "log.ckpt.every_n_train_steps=3", "trainer.val_check_interval=4"]
    env = dict(os.environ, NEMORUN_HOME=str(work / ".nemo_run"), PYTHONUNBUFFERED="1")
    with open(work / "launches.log", "a") as log:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            status = process.wait(timeout=kill_after_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            status = process.wait()
    return status, (work / "launches.log").read_text()


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
    parser.add_argument("--earliest", type=float, default=0.4, help="earliest kill, as a fraction of the reference launch's wall time")
    parser.add_argument("--latest", type=float, default=1.0, help="latest kill, the same way")
    parser.add_argument("--work", type=Path, default=None, help="default: a new temporary folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-soak-"))
    rng = random.Random(args.seed)
    (work / "reference").mkdir(parents=True, exist_ok=True)
    (work / "killed").mkdir(exist_ok=True)

    started = time.monotonic()
    status, _ = launch(work / "reference", args.steps, None)
    reference_s = time.monotonic() - started  # most of it imports: kills spread over what follows
    assert status == 0, f"the uninterrupted run failed: {work / 'reference' / 'launches.log'}"
    kills = launches = 0
    while True:
        delay = rng.uniform(args.earliest * reference_s, args.latest * reference_s) if kills < args.kills else None
        started = time.monotonic()
        status, _ = launch(work / "killed", args.steps, delay)
        launches += 1
        if status == -signal.SIGKILL:
            kills += 1
            print(f"kill {kills}: after {time.monotonic() - started:.1f} s", flush=True)
        elif status == 0:  # finished (before its kill, if one was drawn): the kills so far are the soak
            break
        elif status != 0:
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
