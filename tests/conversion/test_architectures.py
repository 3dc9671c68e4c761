"""HF -> NeMo 2 -> HF for every supported architecture but Llama (SmolLM2's tests cover it), each on a tiny random
model made locally (tests/tiny_hf.py): weights bitwise equal after the round trip, the architecture carried over,
and the imported model's logits, run by megatron-core on CPU, equal to transformers'."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from conversion.average import load_model_weights, megatron_model_from_context, single_process_megatron
from conversion.errors import ConversionError
from tiny_hf import ARCHITECTURES, make

pytestmark = pytest.mark.slow  # in-process NeMo conversions

TEXT = "The quick brown fox jumps over the lazy dog, and then def square(x): return x ** 2"
MAX_ABS_LOGIT_DIFF = 1e-3  # as SmolLM2's parity test
ARCHITECTURE_KEYS = ("architectures", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "num_experts",
                     "num_local_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob")


def architecture_of(hf_dir) -> dict:
    config = AutoConfig.from_pretrained(hf_dir).to_dict()
    fields = {key: config.get(key) for key in ARCHITECTURE_KEYS}
    fields["head_dim"] = fields["head_dim"] or config["hidden_size"] // config["num_attention_heads"]  # None: derived
    return fields


def megatron_logits(ckpt_dir, input_ids: torch.Tensor) -> torch.Tensor:
    """The imported checkpoint's own context built as a megatron-core model, its weights loaded, run once."""
    from megatron.core.tensor_parallel.random import initialize_rng_tracker

    from conversion._cpu import cuda_queries_answered_by_cpu
    from runtime import no_te

    no_te.enable()  # the MoE router's gating asks for a Transformer Engine GEMM by a name undefined without TE
    with single_process_megatron():
        # Megatron's inference tracker: attention-dropout forks become no-ops instead of CUDA RNG swaps.
        initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
        try:
            model = megatron_model_from_context(ckpt_dir)
            model.load_state_dict(load_model_weights(model, ckpt_dir), strict=True)
            length = input_ids.shape[1]
            causal_mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)[None, None]
            with torch.no_grad(), cuda_queries_answered_by_cpu():
                return model(input_ids, torch.arange(length).unsqueeze(0), causal_mask)
        finally:
            initialize_rng_tracker(force_reset=True)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_round_trip_bitwise_and_logits_match_transformers(architecture, tiny_imports, tmp_path):
    from conversion.nemo_to_hf import export_nemo

    hf_dir, nemo_dir = tiny_imports(architecture)
    exported = export_nemo(nemo_dir, tmp_path / "hf")

    original, round_trip = load_file(hf_dir / "model.safetensors"), load_file(exported / "model.safetensors")
    assert sorted(round_trip) == sorted(original)
    for name, tensor in original.items():
        assert round_trip[name].dtype == tensor.dtype and torch.equal(round_trip[name], tensor), name
    assert architecture_of(exported) == architecture_of(hf_dir)

    input_ids = AutoTokenizer.from_pretrained(hf_dir)(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()(input_ids).logits
    actual = megatron_logits(nemo_dir, input_ids)
    assert actual.shape == expected.shape
    worst = (actual - expected).abs().max().item()
    print(f"\n[parity] {architecture}: max |logit diff| megatron-core vs transformers {worst:.3e}")
    assert worst < MAX_ABS_LOGIT_DIFF


def test_import_refuses_a_qwen3_moe_router_nemo_would_change(tmp_path):
    """HF's Qwen3-MoE can leave the top-k router weights unnormalised; NeMo's router always renormalises them."""
    from conversion.hf_to_nemo import import_hf

    source = make("Qwen3MoeForCausalLM", tmp_path / "hf", norm_topk_prob=False)
    with pytest.raises(ConversionError, match=r"cannot import faithfully: norm_topk_prob=false"):
        import_hf(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_as_a_catalog_moe_model_checks_its_experts(tmp_path, monkeypatch):
    """`--model mixtral_8x7b` on a folder with 4 experts: refused, naming the expert count beside the shapes."""
    from conversion.hf_to_nemo import import_hf

    monkeypatch.setenv("NEMO_MODELS_CACHE", str(tmp_path / "models"))
    source = make("MixtralForCausalLM", tmp_path / "hf")
    with pytest.raises(ConversionError) as refusal:
        import_hf(source, model_name="mixtral_8x7b")
    assert "experts 4 (the catalog's mixtral_8x7b has 8)" in str(refusal.value)
    assert "num_experts_per_tok" not in str(refusal.value), "top-2 is Mixtral's own"
    assert not (tmp_path / "models").exists()
