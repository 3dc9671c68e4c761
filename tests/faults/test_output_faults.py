"""Issue 16, outputs: data preparation killed (SIGKILL) mid-write or out of disk leaves the previous outputs
byte for byte, no partial file under a final name, and a re-run writes the same bytes. Real processes of
`python -m data.prepare_pretraining` and `python -m data.packing`; the small disk is a 2 MB tmpfs where this user may mount one, else a
file size limit (RLIMIT_FSIZE) on the process, which fails writes the same way (EFBIG instead of ENOSPC)."""

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from launching import REPO, child_environment, killed_when, small_disk

CORPUS = REPO / "data" / "corpora" / "pydoc_topics.jsonl"
TOKENIZER = REPO / "models" / "tokenizers" / "tiny"
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


def pack_command(copies_of_chat: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "data.packing", "--train", str(copies_of_chat), "--validation", str(copies_of_chat),
            "--tokenizer", str(TOKENIZER), "--pack-size", "256", "--output-dir", str(out)]


def inodes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in folder.iterdir() if p.is_file()}


def test_packing_killed_while_writing_keeps_every_previous_output_and_a_rerun_writes_the_same_bytes(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text((REPO / "data" / "sft_examples" / "chat.jsonl").read_text() * 3)
    out = tmp_path / "out"
    subprocess.run(pack_command(chat, out), cwd=REPO, env=child_environment(), check=True, capture_output=True)
    before, files_before = snapshot(out), inodes(out)
    assert sorted(before) == ["256_metadata.jsonl", "training_256.npy", "validation_256.npy"]

    # Killed once both splits are packed, as their bins are written: no file of the new run is in place yet (a
    # new training file beside the old validation file would be a mix no reader could tell apart).
    log = tmp_path / "packing.log"
    killed_when(pack_command(chat, out), lambda: "validation: packed" in log.read_text(), log)
    after = snapshot(out)
    assert {name: inodes(out)[name] for name in before} == files_before, "a previous output was replaced"
    assert {name: after[name] for name in before} == before
    assert all(name.startswith(".") and name.endswith(".tmp") for name in set(after) - set(before))

    subprocess.run(pack_command(chat, out), cwd=REPO, env=child_environment(), check=True, capture_output=True)
    assert all(inodes(out)[name] != files_before[name] for name in before), "the re-run replaced every output"
    assert {name: snapshot(out)[name] for name in before} == before, "with the same bytes"
