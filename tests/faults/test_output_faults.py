"""Issue 16, outputs: data preparation killed (SIGKILL) mid-write or out of disk leaves the previous outputs
byte for byte, no partial file under a final name, and a re-run writes the same bytes. Real processes of
`python -m data.prepare_pretraining`; the small disk is a 2 MB tmpfs where this user may mount one, else a
file size limit (RLIMIT_FSIZE) on the process, which fails writes the same way (EFBIG instead of ENOSPC)."""

import contextlib
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launching import REPO, child_environment

CORPUS = REPO / "data" / "corpora" / "pydoc_topics.jsonl"
TOKENIZER = REPO / "models" / "tokenizers" / "tiny"
SMALL_DISK_BYTES = 2 * 1024 * 1024
OUTPUTS = ("corpus_text_document.bin", "corpus_text_document.idx", "corpus_text_document.tokenizer.json")


def prepare_command(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "data.prepare_pretraining", "--input", str(corpus), "--tokenizer", str(TOKENIZER),
            "--output-prefix", str(out / "corpus"), "--workers", "1"]


def bigger_corpus(folder: Path, copies: int) -> Path:
    corpus = folder / f"corpus_x{copies}.jsonl"
    corpus.write_text(CORPUS.read_text() * copies)
    return corpus


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@contextlib.contextmanager
def small_disk(folder: Path):
    """`folder` on a 2 MB tmpfs (yields no limit), or, where mounting is not allowed, a plain folder and the
    file size limit a child process must set on itself (yields it)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_BYTES}", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield None if mounted else SMALL_DISK_BYTES
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def limit_file_size(limit: int | None):
    def preexec():
        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_out_of_disk_names_the_outputs_and_keeps_the_previous_ones(tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk) as limit:
        first = subprocess.run(prepare_command(CORPUS, disk), cwd=REPO, env=child_environment(), capture_output=True,
                               text=True, preexec_fn=limit_file_size(limit))
        assert first.returncode == 0, first.stderr
        before = snapshot(disk)
        assert sorted(before) == sorted(OUTPUTS)
        full = subprocess.run(prepare_command(bigger_corpus(tmp_path, 12), disk), cwd=REPO, env=child_environment(),
                              capture_output=True, text=True, preexec_fn=limit_file_size(limit))
        assert full.returncode == 1, full.stderr
        error = full.stderr.strip().splitlines()[-1]
        assert error.startswith("error: OSError: ") and "nothing replaced" in error, error
        assert f"while writing {disk / OUTPUTS[0]}" in error, error
        assert snapshot(disk) == before, "the previous outputs are untouched and no partial file is left"


def test_killed_mid_write_keeps_the_previous_outputs_and_a_rerun_writes_the_same_bytes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    corpus = bigger_corpus(tmp_path, 8)
    assert subprocess.run(prepare_command(CORPUS, out), cwd=REPO, env=child_environment()).returncode == 0
    before = snapshot(out)

    process = subprocess.Popen(prepare_command(corpus, out), cwd=REPO, env=child_environment(), start_new_session=True)
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".tmp") and p.stat().st_size > 0 for p in out.iterdir() if p.is_file()):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before writing its outputs"
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    after = snapshot(out)
    left = sorted(set(after) - set(before))
    assert all(name.startswith(".") and name.endswith(".tmp") for name in left), left  # hidden, never a final name
    assert {name: after[name] for name in before} == before

    for run in range(2):  # the re-run, then an uninterrupted run into a fresh folder: the same bytes
        target = out if run == 0 else tmp_path / "fresh"
        target.mkdir(exist_ok=True)
        assert subprocess.run(prepare_command(corpus, target), cwd=REPO, env=child_environment()).returncode == 0
    assert {n: b for n, b in snapshot(out).items() if n in OUTPUTS} == snapshot(tmp_path / "fresh")
