"""DPO and SimPO for any NeMo 2 `llm.GPTModel` (Llama, Mistral, Qwen2, ...): NeMo 2 ships neither.

How it plugs in, without subclassing a model: `PreferenceTraining` is a Lightning callback that, at
`setup`, gives the model (1) a data step that keeps the preference keys of the batch, (2) a forward
step that also scores the reference when the reference is "adapters_off", and (3) a
`PreferenceLossReduction` for training and validation. megatron-core's GPTModel returns the per-token
cross entropy when labels are given; its negative, masked to the answer tokens, is the per-token
log-probability of the labels (with tensor parallel, megatron's vocab-parallel cross entropy already
gathers over the sharded vocabulary, so every rank holds the same full values).

Sequence log-probs sum over answer tokens only. Rows 2i / 2i+1 of a micro batch are chosen / rejected
of pair i (see data/preference_module.py).

The reference model (DPO), one of:

* "precomputed" (full-parameter DPO): before the first step, the starting weights score every pair
  once (no gradients) and the log-probs are kept with the data, keyed by pair index; no second model
  in memory. Needs pipeline parallel 1 (the pre-pass calls the model directly).
* "adapters_off" (LoRA DPO): the same weights with the LoRA adapters switched off, scored without
  gradients in the same forward step; no copy, no pre-pass.
* "none": SimPO (reference-free).

Losses (per pair; pi = policy, ref = reference, y_w chosen, y_l rejected, sigma the logistic function):

* DPO (Rafailov et al. 2023, eq. 7) with conservative label smoothing eps (Mitchell 2023):
  h = beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))],
  loss = -(1 - eps) log sigma(h) - eps log sigma(-h); rewards beta * (log pi - log ref).
* SimPO (Meng et al. 2024, eq. 6): h = beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma,
  loss = -log sigma(h); rewards beta/|y| log pi(y).

Logged each step (in the training log line): reduced_train_loss, reward_chosen, reward_rejected,
reward_margin, reward_accuracy (fraction of pairs with chosen reward > rejected reward).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from nemo.lightning.megatron_parallel import MegatronLossReduction

REFERENCES = ("precomputed", "adapters_off", "none")
METRICS = ("reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy")


# ------------------------------------------------------------------------------------------- losses


class DPOLoss:
    """Direct Preference Optimization; `label_smoothing` > 0 is conservative DPO."""

    needs_reference = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0):
        if beta <= 0:
            raise ValueError(f"DPO beta must be > 0, got {beta}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"DPO label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta, self.label_smoothing = beta, label_smoothing

    def __call__(self, chosen, rejected, chosen_len, rejected_len, ref_chosen, ref_rejected):
        reward_chosen = self.beta * (chosen - ref_chosen)
        reward_rejected = self.beta * (rejected - ref_rejected)
        h = reward_chosen - reward_rejected
        eps = self.label_smoothing
        losses = -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h)
        return losses, reward_chosen.detach(), reward_rejected.detach()


class SimPOLoss:
    """Simple Preference Optimization: length-normalised log-probs, target margin gamma, no reference."""

    needs_reference = False

    def __init__(self, beta: float = 10.0, gamma: float = 3.0):
        if beta <= 0:
            raise ValueError(f"SimPO beta must be > 0, got {beta}")
        self.beta, self.gamma = beta, gamma

    def __call__(self, chosen, rejected, chosen_len, rejected_len, ref_chosen=None, ref_rejected=None):
        reward_chosen = self.beta * chosen / chosen_len
        reward_rejected = self.beta * rejected / rejected_len
        losses = -F.logsigmoid(reward_chosen - reward_rejected - self.gamma)
        return losses, reward_chosen.detach(), reward_rejected.detach()


def sequence_logps(per_token_loss: torch.Tensor, loss_mask: torch.Tensor):
    """Summed log-probs of the masked label tokens per row, and the number of those tokens."""
    mask = loss_mask.float()
    return -(per_token_loss.float() * mask).sum(-1), mask.sum(-1)


# ---------------------------------------------------------------------------------------- reduction


class PreferenceLossReduction(MegatronLossReduction):
    """Turns the per-token losses of a micro batch of pairs into the preference loss and its metrics."""

    def __init__(self, loss, validation_step: bool = False):
        super().__init__()
        self.loss = loss
        self.validation_step = validation_step
        self.last_metrics: dict[str, float] = {}

    def pair_terms(self, batch: dict, per_token_loss: torch.Tensor):
        logps, lengths = sequence_logps(per_token_loss, batch["loss_mask"])
        ref = batch.get("reference_logps")
        if self.loss.needs_reference and ref is None:
            raise RuntimeError("DPO needs reference log-probs but the batch has none (reference='none'?)")
        ref_chosen, ref_rejected = (ref[0::2], ref[1::2]) if ref is not None else (None, None)
        return self.loss(logps[0::2], logps[1::2], lengths[0::2], lengths[1::2], ref_chosen, ref_rejected)

    def forward(self, batch: dict, forward_out: torch.Tensor):
        losses, reward_chosen, reward_rejected = self.pair_terms(batch, forward_out)
        pairs = losses.numel()
        stats = torch.stack(
            [
                losses.detach().sum(),
                reward_chosen.sum(),
                reward_rejected.sum(),
                (reward_chosen > reward_rejected).float().sum(),
                torch.tensor(float(pairs), device=losses.device),
            ]
        )
        # megatron divides the first value by the second (pairs) and by the number of micro batches
        return losses.sum(), torch.tensor(pairs, dtype=torch.int, device=losses.device), {"preference_stats": stats}

    def reduce(self, losses_reduced_per_micro_batch) -> torch.Tensor:
        from megatron.core import parallel_state

        if not losses_reduced_per_micro_batch:
            return torch.tensor(0.0)
        stats = torch.stack([x["preference_stats"] for x in losses_reduced_per_micro_batch]).sum(0)
        if torch.distributed.is_initialized() and parallel_state.model_parallel_is_initialized():
            torch.distributed.all_reduce(stats, group=parallel_state.get_data_parallel_group())
        loss_sum, chosen, rejected, correct, pairs = stats.tolist()
        self.last_metrics = {
            "reward_chosen": chosen / pairs,
            "reward_rejected": rejected / pairs,
            "reward_margin": (chosen - rejected) / pairs,
            "reward_accuracy": correct / pairs,
        }
        return stats[0] / stats[4]


# --------------------------------------------------------------------------------- data and forward


def preference_data_step(dataloader_iter) -> dict:
    """Moves the batch to the device, keeping every key (NeMo's gpt_data_step drops unknown ones)."""
    batch = next(dataloader_iter)
    if isinstance(batch, tuple) and len(batch) == 3:
        batch = batch[0]
    return {k: v.cuda(non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _model_inputs(batch: dict) -> dict:
    return {
        "input_ids": batch["tokens"],
        "position_ids": batch["position_ids"],
        "attention_mask": batch.get("attention_mask"),
        "labels": batch["labels"],
    }


def _base_linear_only(wrapper, x, *args, **kwargs):
    output, bias, _ = wrapper.base_linear_forward(x, *args, **kwargs)
    return output, bias


@contextlib.contextmanager
def adapters_disabled(module: torch.nn.Module):
    """Within it, every LoRA-wrapped linear layer computes its frozen base output only."""
    from nemo.collections.llm.peft.lora import LoRALinear

    wrappers = [m for m in module.modules() if isinstance(m, LoRALinear)]
    if not wrappers:
        raise RuntimeError("reference='adapters_off' needs LoRA adapters on the model (peft=LoRA)")
    for wrapper in wrappers:
        wrapper.forward = functools.partial(_base_linear_only, wrapper)
    try:
        yield
    finally:
        for wrapper in wrappers:
            del wrapper.forward


class PreferenceForwardStep:
    """The forward step: policy per-token losses; puts the reference log-probs into the batch."""

    def __init__(self, reference: str, table: dict | None = None):
        self.reference = reference
        self.table = table if table is not None else {}

    def __call__(self, model, batch: dict) -> torch.Tensor:
        if self.reference == "adapters_off":
            with torch.no_grad(), adapters_disabled(model):
                ref_loss = model(**_model_inputs(batch))
            batch["reference_logps"] = sequence_logps(ref_loss, batch["loss_mask"])[0]
        elif self.reference == "precomputed":
            table = self.table.get(batch["split"])
            if table is None:
                raise RuntimeError(f"no precomputed reference log-probs for split {batch['split']!r}")
            rows = torch.stack([batch["pair_index"] * 2, batch["pair_index"] * 2 + 1], dim=1).reshape(-1)
            batch["reference_logps"] = table[rows.cpu()].to(batch["loss_mask"].device)
        return model(**_model_inputs(batch))


# ----------------------------------------------------------------------------------------- callback


class PreferenceTraining(pl.Callback):
    """Makes any GPTModel train on preference pairs with `loss`, and logs the reward metrics."""

    def __init__(self, loss, reference: Literal["precomputed", "adapters_off", "none"] = "precomputed",
                 reference_pairs_per_batch: int = 8):
        if reference not in REFERENCES:
            raise ValueError(f"reference={reference!r}: choose one of {REFERENCES}")
        if loss.needs_reference and reference == "none":
            raise ValueError(f"{type(loss).__name__} needs a reference: set reference to 'precomputed' or 'adapters_off'")
        self.loss = loss
        self.reference = reference if loss.needs_reference else "none"
        self.reference_pairs_per_batch = reference_pairs_per_batch
        self.forward_step = PreferenceForwardStep(self.reference)

    def setup(self, trainer, pl_module, stage=None):
        pl_module.config.data_step_fn = preference_data_step
        pl_module.config.forward_step_fn = self.forward_step
        pl_module._training_loss_reduction = PreferenceLossReduction(self.loss)
        pl_module._validation_loss_reduction = PreferenceLossReduction(self.loss, validation_step=True)

    def on_fit_start(self, trainer, pl_module):
        # After the strategy built the model and restored any starting checkpoint.
        if self.reference == "precomputed" and not self.forward_step.table:
            datamodule = trainer.datamodule
            for split in ("train", "validation"):
                self.forward_step.table[split] = precompute_reference(
                    pl_module, datamodule.reference_batches(split, self.reference_pairs_per_batch))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._log(pl_module, pl_module._training_loss_reduction.last_metrics, "")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._log(pl_module, pl_module._validation_loss_reduction.last_metrics, "val_")

    @staticmethod
    def _log(pl_module, metrics: dict, prefix: str):
        for name, value in metrics.items():
            pl_module.log(prefix + name, value, prog_bar=True, batch_size=1, rank_zero_only=True)


@torch.no_grad()
def precompute_reference(pl_module, batches) -> torch.Tensor:
    """Log-probs of every row (2 per pair, in pair order) under the current weights."""
    from megatron.core import parallel_state

    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        raise RuntimeError("reference='precomputed' needs pipeline_model_parallel_size=1; use LoRA "
                           "(reference='adapters_off') or pipeline parallel 1")
    device = next(pl_module.parameters()).device
    was_training = pl_module.training
    pl_module.eval()
    values = []
    try:
        for batch in batches:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            per_token = pl_module(**_model_inputs(batch))
            values.append(sequence_logps(per_token, batch["loss_mask"])[0].float().cpu())
    finally:
        pl_module.train(was_training)
    return torch.cat(values) if values else torch.zeros(0)
