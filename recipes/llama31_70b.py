"""Llama 3.1 70B: pretraining, full SFT, LoRA, DPO and SimPO. Architecture from models/catalog.py; shared defaults from recipes/algorithms.py."""

import nemo_run as run

from recipes import algorithms, preference_algorithms
from recipes.registry import recipe

# What the recipes below are sized for (their "Sized for" sentences; tests/planning checks both agree
# with the plan); the GPU count is each recipe's trainer.num_nodes x trainer.devices.
TARGET_GPU = "h100-80gb"
MODEL = "llama31_70b"


@recipe
def llama31_70b_pretrain() -> run.Partial:
    """Pretrain Llama 3.1 70B on prepared corpora (seq 8192, global batch 512).

    Sized for 8 nodes x 8 H100 80GB: TP 4 x PP 4 (virtual 5) x CP 2 x DP 2; 70B pretraining does not fit one node.

        python launch.py recipe=llama31_70b_pretrain data.paths=[/data/corpus_text_document]
    """
    recipe = algorithms.pretrain(MODEL)
    recipe.trainer.strategy.tensor_model_parallel_size = 4
    recipe.trainer.strategy.pipeline_model_parallel_size = 4
    recipe.trainer.strategy.virtual_pipeline_model_parallel_size = 5
    recipe.trainer.strategy.context_parallel_size = 2
    recipe.trainer.strategy.sequence_parallel = True
    recipe.trainer.num_nodes = 8
    return recipe


@recipe
def llama31_70b_sft() -> run.Partial:
    """Full-parameter SFT of Llama 3.1 70B (seq 4096, global batch 128, lr 5e-6).

    Sized for 4 nodes x 8 H100 80GB: TP 8 x PP 4; full 70B SFT does not fit one node.

        python launch.py recipe=llama31_70b_sft data.dataset_root=/data/sft
    """
    recipe = algorithms.sft(MODEL, lr=5e-6)
    recipe.trainer.strategy.tensor_model_parallel_size = 8
    recipe.trainer.strategy.pipeline_model_parallel_size = 4
    recipe.trainer.strategy.sequence_parallel = True
    recipe.trainer.num_nodes = 4
    return recipe


@recipe
def llama31_70b_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32) on Llama 3.1 70B (seq 4096, global batch 128, lr 1e-4).

    Sized for 1 node x 8 H100 80GB: TP 8.

        python launch.py recipe=llama31_70b_lora data.dataset_root=/data/sft
    """
    recipe = algorithms.lora(MODEL)
    recipe.trainer.strategy.tensor_model_parallel_size = 8
    recipe.trainer.strategy.sequence_parallel = True
    return recipe


def _on_sft_layout_with_full_recompute(recipe: run.Partial) -> run.Partial:
    """Full-parameter preference training: llama31_70b_sft's TP 8 x PP 4 on 4 nodes, plus full recompute."""
    recipe.trainer.strategy.tensor_model_parallel_size = 8
    recipe.trainer.strategy.pipeline_model_parallel_size = 4
    recipe.trainer.strategy.sequence_parallel = True
    recipe.model.config.recompute_granularity = "full"
    recipe.model.config.recompute_method = "uniform"
    recipe.model.config.recompute_num_layers = 1
    recipe.trainer.num_nodes = 4
    return recipe


@recipe
def llama31_70b_dpo() -> run.Partial:
    """Full-parameter DPO of Llama 3.1 70B (beta 0.1, seq 4096, 64 pairs a step, lr 5e-7).

    The reference is the starting weights, scored once over all pairs before step 1 (no second model).
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized as llama31_70b_sft, 4 nodes x 8 H100 80GB: TP 8 x PP 4, plus full activation recompute (a micro batch
    is a pair: twice SFT's sequences). The loss, and DPO's reference pre-pass, run through the pipeline.

        python launch.py recipe=llama31_70b_dpo data.paths=[/data/pairs.jsonl]
    """
    recipe = preference_algorithms.dpo(MODEL)
    return _on_sft_layout_with_full_recompute(recipe)


@recipe
def llama31_70b_dpo_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32) DPO of Llama 3.1 70B (beta 0.1, seq 4096, 64 pairs a step, lr 5e-6).

    The reference is the same weights with the adapters off: no copy, no pre-pass.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB, as llama31_70b_lora: TP 8.

        python launch.py recipe=llama31_70b_dpo_lora data.paths=[/data/pairs.jsonl]
    """
    recipe = preference_algorithms.dpo(MODEL, lora=True)
    recipe.trainer.strategy.tensor_model_parallel_size = 8
    recipe.trainer.strategy.sequence_parallel = True
    return recipe


@recipe
def llama31_70b_simpo() -> run.Partial:
    """Full-parameter SimPO of Llama 3.1 70B (beta 2.0, gamma 1.0, seq 4096, 64 pairs a step, lr 5e-7).

    Reference-free. beta/gamma/lr: adopted from the SimPO paper's Llama-3-8B-Base setting (beta 2.0, gamma/beta 0.5;
    the paper has no 70B run): same family and tokenizer, base weights preference-tuned after SFT; lr lowered from
    the paper's 6e-7 to 5e-7 for the larger model.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized as llama31_70b_sft, 4 nodes x 8 H100 80GB: TP 8 x PP 4, plus full activation recompute (a micro batch
    is a pair: twice SFT's sequences). The loss, and DPO's reference pre-pass, run through the pipeline.

        python launch.py recipe=llama31_70b_simpo data.paths=[/data/pairs.jsonl]
    """
    beta, gamma = preference_algorithms.SIMPO_SETTINGS["llama3_base"]
    recipe = preference_algorithms.simpo(MODEL, beta=beta, gamma=gamma, lr=5e-7)
    return _on_sft_layout_with_full_recompute(recipe)


@recipe
def llama31_70b_simpo_lora() -> run.Partial:
    """LoRA (rank 16, alpha 32) SimPO of Llama 3.1 70B (beta 2.0, gamma 1.0, 64 pairs a step, lr 5e-6).

    beta/gamma as llama31_70b_simpo (SimPO paper, see there); lr 10x the full-parameter rate, as for LoRA DPO.
    Starts from the imported base weights; from your SFT checkpoint instead: resume.restore_config.path=<folder>.
    Sized for 1 node x 8 H100 80GB, as llama31_70b_lora: TP 8.

        python launch.py recipe=llama31_70b_simpo_lora data.paths=[/data/pairs.jsonl]
    """
    beta, gamma = preference_algorithms.SIMPO_SETTINGS["llama3_base"]
    recipe = preference_algorithms.simpo(MODEL, lora=True, beta=beta, gamma=gamma, lr=5e-6)
    recipe.trainer.strategy.tensor_model_parallel_size = 8
    recipe.trainer.strategy.sequence_parallel = True
    return recipe
