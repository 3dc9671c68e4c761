"""A recipe that starts from weights is checked before anything expensive starts: the restore path must hold a
complete NeMo 2 checkpoint of the recipe's architecture; the error names the key, the resolved path and the
import command. --dryrun and --explain show the resolved path and whether it exists. On Slurm a path the
submitter cannot see is left to the job, whose entry (runtime.entry.train) runs the same check first."""

import shutil

import fiddle as fdl
import pytest

import launch
from common.errors import UserError
from launcher import session, starting_weights
from launching import REPO
from runtime import checkpoints

SHIPPED_SFT = REPO / "data" / "sft_examples" / "tiny_sft"
LLAMA32_1B_ON_CPU = ("recipe=llama32_1b_sft", "trainer.accelerator=cpu", "trainer.devices=1",
                     "trainer.plugins.precision=32", f"data.dataset_root={SHIPPED_SFT}", "trainer.max_steps=1")


@pytest.fixture
def models_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_MODELS_CACHE", str(tmp_path / "models"))
    return tmp_path / "models"


def run_cli(capsys, *argv):
    code = launch.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_and_dryrun_show_the_resolved_path_and_whether_it_exists(nemo, capsys, models_cache):
    code, out, _ = run_cli(capsys, "recipe=llama31_8b_sft", "--explain", "resume.restore_config.path")
    assert code == 0
    resolved = models_cache / "meta-llama" / "Llama-3.1-8B"
    assert out.splitlines()[0] == f"resume.restore_config.path = 'nemo://meta-llama/Llama-3.1-8B'  ({resolved}: missing)"
    code, out, _ = run_cli(capsys, "recipe=llama31_8b_sft", "--dryrun")
    assert code == 0
    assert f"# starting weights: resume.restore_config.path=nemo://meta-llama/Llama-3.1-8B ({resolved}: missing)" in out


def test_a_missing_import_is_refused_before_the_run_starts(nemo, capsys, models_cache):
    code, out, err = run_cli(capsys, *LLAMA32_1B_ON_CPU)
    assert code == 2
    assert err.strip() == (
        f"error: resume.restore_config.path: nemo://meta-llama/Llama-3.2-1B (= {models_cache}/meta-llama/Llama-3.2-1B) "
        "does not exist: import the model there with `python -m conversion.hf_to_nemo --hf <Hugging Face folder of "
        "meta-llama/Llama-3.2-1B> --model llama32_1b`, or point resume.restore_config.path=... at a NeMo 2 checkpoint of it")
    assert "huggingface.co" not in out + err and "global_step" not in out + err


def test_an_incomplete_checkpoint_is_refused(nemo, capsys, models_cache):
    (models_cache / "meta-llama" / "Llama-3.2-1B" / "context").mkdir(parents=True)
    code, _, err = run_cli(capsys, *LLAMA32_1B_ON_CPU)
    assert code == 2
    assert "is not a complete NeMo 2 checkpoint (no weights/metadata.json, weights/common.pt, context/io.json, " \
           "context/model.yaml)" in err


def test_a_checkpoint_of_another_architecture_is_refused(nemo, capsys, smollm2_nemo, models_cache):
    code, _, err = run_cli(capsys, *LLAMA32_1B_ON_CPU, f"resume.restore_config.path={smollm2_nemo}")
    assert code == 2
    assert f"error: resume.restore_config.path: {smollm2_nemo} holds another architecture than the recipe's model " \
           "(num_layers: expected 16, found 30; hidden_size: expected 2048, found 576;" in err
    assert f"--model llama32_1b --out {smollm2_nemo}`" in err


def test_slurm_leaves_an_unseen_path_to_the_job_whose_entry_checks_it_first(nemo, smollm2_nemo, models_cache):
    missing = models_cache / "elsewhere"
    prepared = session.prepare("smollm2_135m_sft", [f"resume.restore_config.path={missing}",
                                                    f"data.tokenizer.source={smollm2_nemo}", "executor=slurm"])
    starting_weights.require(prepared, only_where_visible=True)  # the submitter cannot see it: no refusal
    with pytest.raises(UserError) as on_the_submitter:
        starting_weights.require(prepared)
    job = fdl.build(session.task(prepared))  # what the job's fdl_runner builds, then calls
    with pytest.raises(UserError) as in_the_job:
        job()
    assert str(in_the_job.value) == str(on_the_submitter.value)
    assert f"{missing} does not exist: import the model there with" in str(in_the_job.value)


def test_the_tokenizer_comes_from_the_checkpoint_or_a_named_folder_never_the_hub_unasked(smollm2_nemo, tmp_path):
    assert checkpoints.tokenizer_folder(str(smollm2_nemo)) == str(smollm2_nemo / "context" / "nemo_tokenizer")
    folder = shutil.copytree(smollm2_nemo / "context" / "nemo_tokenizer", tmp_path / "tokenizer")
    assert checkpoints.tokenizer_folder(str(folder)) == str(folder)
    assert checkpoints.tokenizer_folder("hf://meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"
    with pytest.raises(UserError, match=r"data.tokenizer.source: .*/nothing holds no tokenizer"):
        checkpoints.tokenizer_folder(str(tmp_path / "nothing"))


def test_a_job_whose_tokenizer_comes_from_unseen_weights_fails_with_the_same_message(nemo, models_cache):
    """fdl builds the recipe, tokenizer included, before runtime.entry.train's check: the tokenizer carries
    the import command, so the job's log says what the submitter would have said."""
    prepared = session.prepare("smollm2_135m_sft", ["executor=slurm"])  # weights and tokenizer: the empty cache
    with pytest.raises(UserError) as on_the_submitter:
        starting_weights.require(prepared)
    with pytest.raises(UserError) as in_the_job:
        fdl.build(session.task(prepared))
    # fiddle adds a line saying which config it was building; the message itself is the submitter's
    assert str(in_the_job.value).startswith(str(on_the_submitter.value) + "\n")
    assert "--model smollm2_135m`" in str(in_the_job.value)
