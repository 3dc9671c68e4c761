"""Issue 16, conversions: an import into a disk too small for it, and one SIGKILLed mid-write, leave the previous
output byte for byte and nothing a reader would take for a checkpoint; a re-run writes the same bytes. A tiny
random Mistral (Llama's layout) and its import, shared with tests/conversion (the `tiny_imports` fixture), so each
conversion costs seconds, not the SmolLM2 import.

Import, export and averaging stage their output in a hidden `.<out>.partial-*` folder beside it and move it into
place once complete (conversion.hf_to_nemo.publish, shared by the three), so the import stands for all three."""

import pickle
import shutil
import sys
from pathlib import Path

import pytest

from conversion import hf_to_nemo
from launching import killed_when, small_disk

pytestmark = pytest.mark.slow

WEIGHTS_METADATA = "weights/.metadata"


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_save_identity(metadata: bytes):
    """torch.distributed.checkpoint's .metadata with its StorageMeta (the folder it was written to, here the
    staging folder, and a random save id) left out: what remains must be the same on every run."""
    loaded = pickle.loads(metadata)
    loaded.storage_meta = None
    return loaded


def test_import_out_of_disk_or_killed_keeps_the_previous_output_and_a_rerun_writes_the_same_bytes(tiny_imports, tmp_path, capsys):
    tiny_hf, imported = tiny_imports("MistralForCausalLM")
    before = files(imported)
    disk = tmp_path / "disk"
    with small_disk(disk, megabytes=4) as limit:  # one import (2.8 MB) fits, a second beside it does not
        if limit is not None:
            pytest.fail("this check needs a tmpfs (mount -t tmpfs), which this user may not mount")
        out = disk / "nemo"
        shutil.copytree(imported, out)

        # Out of disk while the new import is staged beside the old one: one error line naming the output.
        capsys.readouterr()
        assert hf_to_nemo.main(["--hf", str(tiny_hf), "--out", str(out), "--overwrite"]) == 1
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith(f"error: NeMo import of {tiny_hf} failed writing {out} (nothing replaced; "), error
        assert files(out) == before and sorted(p.name for p in disk.iterdir()) == ["nemo"]

        # SIGKILL once the new weights are being written: the old output untouched, the partial one hidden.
        staged_weights = lambda: any(disk.glob(".nemo.partial-*/checkpoint/weights/*"))  # noqa: E731
        killed_when([sys.executable, "-m", "conversion.hf_to_nemo", "--hf", str(tiny_hf), "--out", str(out),
                     "--overwrite"], staged_weights, tmp_path / "killed.log")
        assert files(out) == before
        assert all(p.name.startswith(".nemo.partial-") for p in disk.iterdir() if p.name != "nemo")

    # A re-run writes the same bytes, but for the .metadata's record of where and when torch wrote it.
    rerun = files(hf_to_nemo.import_hf(tiny_hf, tmp_path / "again"))
    assert sorted(rerun) == sorted(before)
    assert {k: v for k, v in rerun.items() if k != WEIGHTS_METADATA} == {k: v for k, v in before.items() if k != WEIGHTS_METADATA}
    assert without_save_identity(rerun[WEIGHTS_METADATA]) == without_save_identity(before[WEIGHTS_METADATA])
