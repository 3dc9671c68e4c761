"""Preference optimisation defaults, written once: `dpo(model_name, lora)` and `simpo(model_name, lora)`.

Both return an `llm.finetune` partial over `data.preference.datamodule.PreferenceDataModule` with the
`training.preference_steps.PreferenceTraining` callback carrying the loss (`trainer.callbacks[0]`).

Reference model (DPO): with `lora=True` the same weights with the adapters switched off
(reference="adapters_off": no copy; scored in the training step, or by the pre-pass under pipeline
parallel); full-parameter DPO precomputes the starting weights' log-probs for every pair before the first
step (reference="precomputed": one forward pass over the data through megatron's schedule, no second
model in memory, saved in checkpoints). SimPO has no reference. See training/preference_steps.py.

SimPO defaults (Meng, Xia, Chen, "SimPO", NeurIPS 2024), checked against the authors' training configs
(github.com/princeton-nlp/SimPO, training_configs/*.yaml; gamma = beta * gamma_beta_ratio where a file
gives the ratio):

    setting                 config file                          beta  gamma   lr
    llama3_instruct         llama-3-8b-instruct-simpo-v2.yaml    10    3.0     1e-6   (the default here)
    llama3_instruct_v0.1    llama-3-8b-instruct-simpo.yaml       2.5   1.375   1e-6
    llama3_base             llama-3-8b-base-simpo.yaml           2.0   1.0     6e-7
    mistral_instruct        mistral-7b-instruct-simpo.yaml       2.5   0.3     5e-7
    mistral_base            mistral-7b-base-simpo.yaml           2.0   1.6     3e-7
    gemma2_instruct         gemma-2-9b-it-simpo.yaml             10    5.0     8e-7

The base-model rows are for a model SFT'd first (the paper's "Base" setup), which is how this
repository's Llama 3.1/3.2, Mistral 7B v0.1 and Qwen2.5 recipes are meant to run. `SIMPO_SETTINGS`
holds (beta, gamma); pass `beta=`/`gamma=` to override.
"""

import nemo_run as run
from nemo.collections import llm

from recipes import blocks
from training.preference_losses import DPOLoss, SimPOLoss
from training.preference_steps import PreferenceTraining


# (beta, gamma) from the SimPO authors' training configs, by model family; see the module docstring.
SIMPO_SETTINGS = {
    "llama3_instruct": (10.0, 3.0),
    "llama3_instruct_v0.1": (2.5, 1.375),
    "llama3_base": (2.0, 1.0),
    "mistral_instruct": (2.5, 0.3),
    "mistral_base": (2.0, 1.6),
    "gemma2_instruct": (10.0, 5.0),
}


def preference_data(model_name: str, paths: list, seq_length: int, global_batch_size: int) -> run.Config:
    """Pairs of `paths`; micro/global batch sizes count sequences (2 per pair) and must be even."""
    from data.preference.datamodule import PreferenceDataModule

    return run.Config(
        PreferenceDataModule,
        paths=paths,
        tokenizer=blocks.tokenizer(model_name),
        template="chatml",
        seq_length=seq_length,
        micro_batch_size=2,
        global_batch_size=global_batch_size,
        validation_pairs=0,
        seed=1234,
        num_workers=0,
    )


def _preference(model_name, loss, reference, lora, *, name, lr, seq_length: int = 4096, global_batch_size: int = 128,
                paths: list | None = None, max_steps: int = 1000, lora_rank: int = 16, lora_alpha: int = 32) -> run.Partial:
    """The shared recipe; dpo()/simpo() pass their loss, reference and lr, and any of the keyword settings."""
    recipe = run.Partial(
        llm.finetune,
        model=blocks.model(model_name),
        data=preference_data(model_name, paths or [blocks.UNSET_PAIRS], seq_length, global_batch_size),
        trainer=blocks.trainer(max_steps=max_steps),
        log=blocks.logger(f"{model_name}_{name}", every_n_train_steps=max(1, max_steps // 10)),
        optim=blocks.optimizer(lr=lr, warmup_steps=max(1, min(100, max_steps // 10)), min_lr_ratio=0.0),
        resume=blocks.resume(),
        peft=None,
        tokenizer="data",
    )
    recipe.trainer.callbacks = [run.Config(PreferenceTraining, loss=loss, reference=reference), *recipe.trainer.callbacks]
    recipe.trainer.limit_val_batches = 0
    recipe.log.ckpt.monitor = "reduced_train_loss"
    recipe.model.config.seq_length = seq_length
    recipe.resume.restore_config = blocks.restore_from(model_name)
    if lora:
        recipe.peft = run.Config(
            llm.peft.LoRA,
            dim=lora_rank,
            alpha=lora_alpha,
            dropout=0.0,
            target_modules=["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"],
        )
        recipe.optim.config.use_distributed_optimizer = False
    return blocks.experts(recipe, model_name)


def dpo(model_name: str, lora: bool = False, *, beta: float = 0.1, label_smoothing: float = 0.0,
        lr: float | None = None, **settings) -> run.Partial:
    """DPO (beta 0.1, as in the DPO paper's experiments); lr 5e-7 full, 5e-6 LoRA, unless given.
    settings: seq_length, global_batch_size, paths, max_steps, lora_rank, lora_alpha (defaults in _preference)."""
    loss = run.Config(DPOLoss, beta=beta, label_smoothing=label_smoothing)
    reference = "adapters_off" if lora else "precomputed"
    default_lr = 5e-6 if lora else 5e-7
    name = "dpo_lora" if lora else "dpo"
    return _preference(model_name, loss, reference, lora, name=name, lr=lr if lr is not None else default_lr, **settings)


def simpo(model_name: str, lora: bool = False, *, beta: float = SIMPO_SETTINGS["llama3_instruct"][0],
          gamma: float = SIMPO_SETTINGS["llama3_instruct"][1], lr: float | None = None, **settings) -> run.Partial:
    """SimPO, reference-free (beta 10, gamma 3.0: the paper's Llama-3-8B-Instruct v0.2); lr 1e-6 full, 1e-5 LoRA.
    settings: as for dpo()."""
    loss = run.Config(SimPOLoss, beta=beta, gamma=gamma)
    default_lr = 1e-5 if lora else 1e-6
    name = "simpo_lora" if lora else "simpo"
    return _preference(model_name, loss, "none", lora, name=name, lr=lr if lr is not None else default_lr, **settings)
