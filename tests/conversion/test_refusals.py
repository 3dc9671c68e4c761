"""Wrong or incomplete inputs are refused with a clear message, and nothing is written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conversion.errors import ConversionError
from conversion.hf_to_nemo import import_hf
from conversion.nemo_to_hf import export_nemo

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def hf_folder_like(source: Path, dest: Path, *, config_changes=None, with_config=True, with_weights=True) -> Path:
    """A cheap variant of an HF folder: symlinked weights, edited config."""
    dest.mkdir()
    if with_config:
        config = json.loads((source / "config.json").read_text())
        config.update(config_changes or {})
        (dest / "config.json").write_text(json.dumps(config))
    if with_weights:
        (dest / "model.safetensors").symlink_to(source / "model.safetensors")
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, dest / name)
    return dest


def nemo_checkpoint_like(source: Path, dest: Path, *, io_json_edits=(), with_context=True) -> Path:
    """A variant of a NeMo 2 checkpoint: symlinked weights, context copied with text edits to io.json."""
    dest.mkdir()
    (dest / "weights").symlink_to(source / "weights", target_is_directory=True)
    if with_context:
        shutil.copytree(source / "context", dest / "context")
        io_json = dest / "context" / "io.json"
        text = io_json.read_text()
        for old, new in io_json_edits:
            assert old in text, old
            text = text.replace(old, new)
        io_json.write_text(text)
    return dest


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    assert not leftovers, leftovers


# ---------------------------------------------------------------- HF -> NeMo


def test_import_refuses_folder_without_config(smollm2_hf, tmp_path):
    source = hf_folder_like(smollm2_hf, tmp_path / "hf", with_config=False)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="no config.json"):
        import_hf(source, out)
    assert_nothing_written(out)


def test_import_refuses_unsupported_architecture(smollm2_hf, tmp_path):
    source = hf_folder_like(smollm2_hf, tmp_path / "hf", config_changes={"architectures": ["GPT2LMHeadModel"]})
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"unsupported architecture.*LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM, Qwen2ForCausalLM, "
                       r"Qwen3ForCausalLM, Qwen3MoeForCausalLM"):
        import_hf(source, out)
    assert_nothing_written(out)


def test_import_refuses_missing_weights(smollm2_hf, tmp_path):
    source = hf_folder_like(smollm2_hf, tmp_path / "hf", with_weights=False)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="no weights"):
        import_hf(source, out)
    assert_nothing_written(out)


def test_import_refuses_shape_mismatch(smollm2_hf, tmp_path):
    source = hf_folder_like(smollm2_hf, tmp_path / "hf", config_changes={"intermediate_size": 1600})
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"shape mismatch.*mlp\.\w+_proj\.weight"):
        import_hf(source, out)
    assert_nothing_written(out)


def test_import_refuses_rope_scaling_nemo_would_drop(smollm2_hf, tmp_path):
    source = hf_folder_like(smollm2_hf, tmp_path / "hf", config_changes={"rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    with pytest.raises(ConversionError, match="rope_scaling"):
        import_hf(source, tmp_path / "out")


@pytest.mark.parametrize("changes, reason", [
    ({"attention_bias": True}, "attention_bias=true (Llama mapping has no biases)"),
    ({"mlp_bias": True}, "mlp_bias=true (Llama mapping has no biases)"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' (only silu/SwiGLU is mapped)"),
], ids=["attention_bias", "mlp_bias", "activation"])
def test_import_refuses_biases_and_activations_nemo_would_drop(smollm2_hf, tmp_path, changes, reason):
    source = hf_folder_like(smollm2_hf, tmp_path / "hf", config_changes=changes)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=re.escape(f"cannot import faithfully: {reason}")):
        import_hf(source, out)
    assert_nothing_written(out)


def test_import_refuses_a_folder_that_is_not_the_named_catalog_model(smollm2_hf, tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_MODELS_CACHE", str(tmp_path / "models"))
    with pytest.raises(ConversionError) as refusal:
        import_hf(smollm2_hf, model_name="mistral_7b")
    assert str(refusal.value) == (
        "the folder's config.json does not describe mistral_7b: num_hidden_layers 30 (the catalog's mistral_7b has 32); "
        "hidden_size 576 (the catalog's mistral_7b has 4096); num_attention_heads 9 (the catalog's mistral_7b has 32); "
        "num_key_value_heads 3 (the catalog's mistral_7b has 8); vocab_size 49152 (the catalog's mistral_7b has 32000); "
        "family llama (the catalog's mistral_7b is a MistralModel)")
    assert not (tmp_path / "models").exists()


def test_import_needs_a_catalog_model_or_an_out(smollm2_hf, tmp_path):
    with pytest.raises(ConversionError, match=r"give --model NAME .*llama31_8b.*, or --out DIR"):
        import_hf(smollm2_hf)
    with pytest.raises(ConversionError, match=r"--model tiny_llama: not a model .* choose from .*smollm2_135m"):
        import_hf(smollm2_hf, model_name="tiny_llama")


def test_import_cli_reports_refusal(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "conversion.hf_to_nemo", "--hf", str(tmp_path / "empty"), "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "no config.json" in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- NeMo -> HF


def test_export_refuses_missing_context(smollm2_nemo, tmp_path):
    source = nemo_checkpoint_like(smollm2_nemo, tmp_path / "ckpt", with_context=False)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="no context/"):
        export_nemo(source, out)
    assert_nothing_written(out)


def test_export_refuses_non_checkpoint_and_names_candidates(smollm2_nemo, tmp_path):
    run_dir = tmp_path / "run"
    nemo_checkpoint_like(smollm2_nemo, run_dir.mkdir() or run_dir / "checkpoints--step=1")
    with pytest.raises(ConversionError, match=r"not a NeMo 2 checkpoint.*checkpoints--step=1"):
        export_nemo(run_dir, tmp_path / "out")


def test_export_refuses_unsupported_architecture(smollm2_nemo, tmp_path):
    source = nemo_checkpoint_like(smollm2_nemo, tmp_path / "ckpt", io_json_edits=[(
        '{"type": "pyref", "module": "nemo.collections.llm.gpt.model.llama", "name": "LlamaModel"}',
        '{"type": "pyref", "module": "nemo.collections.llm.gpt.model.base", "name": "GPTModel"}',
    )])
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"unsupported architecture .*GPTModel; supported: llm.LlamaModel"):
        export_nemo(source, out)
    assert_nothing_written(out)


def test_export_refuses_shape_mismatch(smollm2_nemo, tmp_path):
    source = nemo_checkpoint_like(smollm2_nemo, tmp_path / "ckpt", io_json_edits=[(
        '{"type": "leaf", "value": 1536, "paths": ["<root>.model.config.ffn_hidden_size"]}',
        '{"type": "leaf", "value": 1600, "paths": ["<root>.model.config.ffn_hidden_size"]}',
    )])
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"shape mismatch.*\(30, 3200, 576\).*linear_fc1\.weight"):
        export_nemo(source, out)
    assert_nothing_written(out)


# ---------------------------------------------------------------- LoRA merge


def test_merge_lora_refuses_full_checkpoint(smollm2_nemo, tmp_path):
    from conversion.merge_lora import merge_lora

    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="not a LoRA checkpoint"):
        merge_lora(smollm2_nemo, out)
    assert_nothing_written(out)
