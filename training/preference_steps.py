"""The NeMo glue of DPO and SimPO for any NeMo 2 `llm.GPTModel` (Llama, Mistral, Qwen2, ...): steps, the
reference pre-pass and the callback that installs them. NeMo 2 ships neither.

How it plugs in, without subclassing a model: `PreferenceTraining` is a Lightning callback that, at
`setup`, gives the model (1) a data step that keeps the preference keys of the batch, (2) a forward
step that also scores the reference when the reference is "adapters_off", and (3) a
`PreferenceLossReduction` for training and validation. megatron-core's GPTModel returns the per-token
cross entropy when labels are given; its negative, masked to the answer tokens, is the per-token
log-probability of the labels (with tensor parallel, megatron's vocab-parallel cross entropy already
gathers over the sharded vocabulary, so every rank holds the same full values).

Sequence log-probs sum over answer tokens only. Sequences 2i / 2i+1 of a micro batch are chosen /
rejected of pair i: rows of a padded batch, or segments of the rows of a packed one (packed sequences go
in as THD boundaries with Transformer Engine, as a block-diagonal mask to megatron's local attention; see
data/preference/datamodule.py).

The reference model (DPO), one of:

* "precomputed" (full-parameter DPO): before the first step, the starting weights score every pair
  once (no gradients) and the log-probs are kept with the data, keyed by pair index; no second model
  in memory. The scores are saved in every checkpoint (the callback's state), so a resumed run keeps
  the original reference instead of rescoring with the trained weights.
* "adapters_off" (LoRA DPO): the same weights with the LoRA adapters switched off; no copy. Scored in
  the same forward step, or, with pipeline parallel (where a stage cannot run a second forward of its
  own), by the same pre-pass as "precomputed" with the adapters off; the base weights are frozen, so both
  give the same numbers.
* "none": SimPO (reference-free).

The pre-pass runs through megatron's own schedule (NeMo's MegatronParallel, forward only), so it works
with tensor and pipeline parallel; data-parallel ranks split the pairs between them and sum the table.
With pipeline parallel, micro batches are padded to their longest pair, so the model config's
`variable_seq_lengths` is switched on for the stages to exchange shapes.

Losses and log-prob maths (pure torch): training/preference_losses.py.

Logged each step (in the training log line): reduced_train_loss, reward_chosen, reward_rejected,
reward_margin, reward_accuracy (fraction of pairs with chosen reward > rejected reward); by validation,
val_loss (NeMo's strategy) and the rewards with a val_ prefix, averaged over its steps.
"""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch

from nemo.lightning.megatron_parallel import MegatronLossReduction

from common.errors import RunFailed, UserError
from training.preference_losses import batch_logps

REFERENCES = ("precomputed", "adapters_off", "none")
METRICS = ("reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy")


# ---------------------------------------------------------------------------------------- reduction


class PreferenceLossReduction(MegatronLossReduction):
    """Turns the per-token losses of a micro batch of pairs into the preference loss and its metrics."""

    def __init__(self, loss, validation_step: bool = False):
        super().__init__()
        self.loss = loss
        self.validation_step = validation_step
        self.last_metrics: dict[str, float] = {}

    def pair_terms(self, batch: dict, per_token_loss: torch.Tensor):
        logps, lengths = batch_logps(batch, per_token_loss)
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


HOST_KEYS = ("cu_seqlens_argmin", "max_seqlen")  # read on the host when packed (as NeMo's gpt_data_step keeps them)


def preference_data_step(dataloader_iter) -> dict:
    """Moves the batch to the device, keeping every key (NeMo's gpt_data_step drops unknown ones)."""
    batch = next(dataloader_iter)
    if isinstance(batch, tuple) and len(batch) == 3:
        batch = batch[0]
    return {k: v.cuda(non_blocking=True) if torch.is_tensor(v) and k not in HOST_KEYS else v for k, v in batch.items()}


def model_inputs(model: torch.nn.Module, batch: dict) -> dict:
    """GPTModel arguments. A packed batch goes in as THD sequence boundaries (Transformer Engine's
    attention, as NeMo's packed SFT), or, to megatron's local attention, which takes no boundaries,
    with its block-diagonal causal mask: each sequence attends only to itself either way. Rotary
    position embeddings depend on relative positions only, so a sequence scores the same anywhere in a row."""
    inputs = {
        "input_ids": batch["tokens"],
        "position_ids": batch["position_ids"],
        "attention_mask": batch.get("attention_mask"),
        "labels": batch["labels"],
    }
    if "cu_seqlens" not in batch:
        return inputs
    if not _local_attention(model):
        from nemo.collections.llm.gpt.model.base import get_packed_seq_params

        return {**inputs, "attention_mask": None, "packed_seq_params": get_packed_seq_params(batch)}
    if inputs["attention_mask"] is None:
        raise RuntimeError("packed preference batches need data.create_attention_mask=True without Transformer "
                           "Engine: megatron's local attention keeps the packed sequences apart by the mask")
    return inputs


_LOCAL_ATTENTION: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def _local_attention(model: torch.nn.Module) -> bool:
    """Whether the model attends with megatron-core's local DotProductAttention (no THD support)."""
    if model not in _LOCAL_ATTENTION:
        from megatron.core.transformer.dot_product_attention import DotProductAttention

        _LOCAL_ATTENTION[model] = any(isinstance(m, DotProductAttention) for m in model.modules())
    return _LOCAL_ATTENTION[model]


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


def table_rows(pair_index: torch.Tensor) -> torch.Tensor:
    """The reference table's rows of these pairs, in batch order: 2i (chosen), 2i + 1 (rejected)."""
    return torch.stack([pair_index * 2, pair_index * 2 + 1], dim=1).reshape(-1).cpu()


class PreferenceForwardStep:
    """The forward step: policy per-token losses; puts the reference log-probs into the batch, from the
    precomputed table when there is one, else (reference 'adapters_off') from a no-adapter forward."""

    def __init__(self, reference: str, table: dict | None = None):
        self.reference = reference
        self.table = table if table is not None else {}

    def __call__(self, model, batch: dict) -> torch.Tensor:
        if self.reference != "none":
            batch["reference_logps"] = self.reference_logps(model, batch)
        return model(**model_inputs(model, batch))

    def reference_logps(self, model, batch: dict) -> torch.Tensor:
        table = self.table.get(batch["split"])
        if table is not None:
            return table[table_rows(batch["pair_index"])].to(batch["loss_mask"].device)
        if self.reference == "adapters_off":
            with torch.no_grad(), adapters_disabled(model):
                return batch_logps(batch, model(**model_inputs(model, batch)))[0]
        raise RuntimeError(f"no precomputed reference log-probs for split {batch['split']!r}")


# ------------------------------------------------------------------------ the table in a checkpoint

REFERENCE_STATE = "reference_logps"  # PreferenceTraining's state: {split: log-probs, 2 rows per pair}
REFERENCE_DATA = "reference_data"  # and {split: fingerprint of the pairs they were scored on}
# Lightning saves callback states under "callbacks"; NeMo's distributed checkpoint keeps that unsharded
# part of the trainer state in weights/common.pt.
COMMON_STATE = Path("weights") / "common.pt"


def saved_reference_splits(checkpoint) -> set[str]:
    """The splits whose reference log-probs a NeMo 2 checkpoint holds (none for an SFT checkpoint)."""
    state = torch.load(Path(checkpoint) / COMMON_STATE, map_location="cpu", weights_only=False)
    return set(state.get("callbacks", {}).get(PreferenceTraining.__qualname__, {}).get(REFERENCE_STATE, {}))


def missing_reference_table(checkpoint, split: str) -> str:
    """Why a full-parameter DPO run must not resume from `checkpoint`, and what to do instead (one line)."""
    return (f"cannot resume DPO from checkpoint {checkpoint}: it holds no reference log-probs of the {split} pairs "
            f"(callbacks.{PreferenceTraining.__qualname__}.{REFERENCE_STATE} in {COMMON_STATE}, which DPO saves and "
            "an SFT checkpoint lacks), and scoring them now would use its trained weights, not the starting ones: "
            "resume from a checkpoint of this DPO run, or start a new run (log.log_dir) from these weights "
            "(resume.restore_config.path)")


SAME_DATA = ("resume with the same data (data.paths, data.validation_pairs, data.seq_length, data.template, "
             "data.seed), or start a new run (log.log_dir) to score the new data")


def reference_data_mismatch(split: str, restored: torch.Tensor, saved_fingerprint: str | None, pairs: int,
                            fingerprint: str) -> str | None:
    """Why a resumed checkpoint's reference log-probs do not fit the data now (one line), or None. The table is
    keyed by pair index, so other pairs of the same count would each get another pair's reference silently."""
    if restored.numel() != 2 * pairs:
        return (f"the resumed checkpoint's reference log-probs cover {restored.numel() // 2} {split} pairs, "
                f"the data now has {pairs}: {SAME_DATA}")
    if saved_fingerprint is not None and saved_fingerprint != fingerprint:
        return (f"the resumed checkpoint's reference log-probs were scored on other {split} pairs than the data now "
                f"has ({pairs} either way, but other tokens or order: fingerprint {saved_fingerprint}, now "
                f"{fingerprint}): {SAME_DATA}")
    return None


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
        self.restored_table: dict[str, torch.Tensor] = {}
        self.table_data: dict[str, str] = {}  # split: fingerprint of the pairs the table was scored on
        self.restored_data: dict[str, str] = {}

    def setup(self, trainer, pl_module, stage=None):
        pl_module.config.data_step_fn = preference_data_step
        pl_module.config.forward_step_fn = self.forward_step
        pl_module._training_loss_reduction = PreferenceLossReduction(self.loss)
        pl_module._validation_loss_reduction = PreferenceLossReduction(self.loss, validation_step=True)
        if _pipeline_stages(trainer) > 1:
            pl_module.config.variable_seq_lengths = True  # micro batches are as long as their longest pair

    def refuse_resume_from(self, checkpoint) -> None:
        """Full-parameter DPO resumes only from a checkpoint with the train pairs' reference table (UserError
        otherwise): what the launcher checks on the config, checked by the job on its built callbacks (runtime/entry.py)."""
        if self.reference == "precomputed" and "train" not in saved_reference_splits(checkpoint):
            raise UserError(missing_reference_table(checkpoint, "train"))

    def needs_table(self, trainer) -> bool:
        return self.reference == "precomputed" or (self.reference == "adapters_off" and _pipeline_stages(trainer) > 1)

    # At the first batch: by then the starting weights, a resumed checkpoint (with this callback's state)
    # and the LoRA adapters (NeMo's PEFT adds them at epoch start, after other callbacks' hooks) are in.
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ensure_reference(trainer, pl_module)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.ensure_reference(trainer, pl_module)

    def ensure_reference(self, trainer, pl_module) -> None:
        """Fills the reference table once: from the resumed checkpoint, or by the pre-pass."""
        if not self.needs_table(trainer) or self.forward_step.table:
            return
        datamodule = trainer.datamodule
        for split in ("train", "validation"):
            pairs = datamodule.pairs(split)
            self.table_data[split] = datamodule.fingerprint(split)
            restored = self.restored_table.get(split)
            if restored is not None:
                problem = reference_data_mismatch(split, restored, self.restored_data.get(split), pairs,
                                                  self.table_data[split])
                if problem:
                    raise RunFailed(problem)
                self.forward_step.table[split] = restored
                _say(f"reference log-probs of {pairs} {split} pairs: restored from the checkpoint")
                continue
            if self.reference == "precomputed" and trainer.global_step > 0:
                raise RunFailed(missing_reference_table(trainer.ckpt_path, split))
            started = time.perf_counter()
            self.forward_step.table[split], per_rank = precompute_reference(
                trainer, pl_module, datamodule.reference_batches(split, self.reference_pairs_per_batch), pairs,
                adapters_off=self.reference == "adapters_off")
            _say(f"reference log-probs of {pairs} {split} pairs: scored in {time.perf_counter() - started:.1f}s"
                 f"{shares(per_rank)}")

    def state_dict(self) -> dict:
        if not self.forward_step.table:
            return {}
        return {REFERENCE_STATE: dict(self.forward_step.table), REFERENCE_DATA: dict(self.table_data)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored_table = dict(state_dict.get(REFERENCE_STATE, {}))
        self.restored_data = dict(state_dict.get(REFERENCE_DATA, {}))  # none in checkpoints saved before it was

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._log(trainer, pl_module, pl_module._training_loss_reduction, "")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._log(trainer, pl_module, pl_module._validation_loss_reduction, "val_")

    @staticmethod
    def _log(trainer, pl_module, reduction: PreferenceLossReduction, prefix: str):
        metrics = reduction.last_metrics
        if _pipeline_stages(trainer) > 1:
            metrics = _from_last_stage(metrics, device=next(pl_module.parameters()).device)
        for name, value in metrics.items():
            pl_module.log(prefix + name, value, prog_bar=True, batch_size=1, rank_zero_only=True)


def _from_last_stage(metrics: dict, device) -> dict:
    """The loss is reduced on the last pipeline stage only; rank 0 (which logs) may be on the first."""
    from megatron.core import parallel_state

    values = torch.tensor([metrics.get(name, float("nan")) for name in METRICS], device=device)
    torch.distributed.broadcast(values, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                group=parallel_state.get_pipeline_model_parallel_group())
    return {name: value for name, value in zip(METRICS, values.tolist()) if value == value}


def shares(per_rank: list[int]) -> str:
    """How the data-parallel ranks split the pre-pass, for the log (nothing with one rank)."""
    if len(per_rank) < 2:
        return ""
    return f" by {len(per_rank)} data-parallel ranks ({' + '.join(map(str, per_rank))} pairs), every pair once"


def _pipeline_stages(trainer) -> int:
    return getattr(trainer.strategy, "pipeline_model_parallel_size", 1) or 1


def _say(message: str) -> None:
    from lightning.pytorch.utilities import rank_zero_info

    rank_zero_info(f"[preference] {message}")


@torch.no_grad()
def precompute_reference(trainer, pl_module, batches, pairs: int, adapters_off: bool = False) -> tuple[torch.Tensor, list[int]]:
    """Log-probs of every row (2 per pair, in pair order) under the current weights (adapters off if asked),
    and how many pairs each data-parallel rank scored.

    Runs megatron's forward-only schedule itself, on the strategy's model chunks: NeMo's MegatronParallel
    call would take the micro batch size and count from the training data sampler. Data-parallel ranks
    take turns over the batches; the last pipeline stage writes the scores."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    data_rank, data_ranks = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    # One tensor, summed over the ranks at the end: the log-probs, how often each row was scored, and the
    # pairs each data-parallel rank scored (written by the last pipeline stage only, so counted once).
    scores = ReferenceScores(pairs, data_ranks)

    def record(batch: dict, per_token_loss: torch.Tensor):
        scores.record(table_rows(batch["pair_index"]), batch_logps(batch, per_token_loss)[0].float().cpu(), data_rank)
        zero = torch.zeros((), device=per_token_loss.device)
        return zero, torch.ones((), dtype=torch.int, device=per_token_loss.device), {}

    def forward_step(data_iterator, model):
        batch = preference_data_step(data_iterator)
        return model(**model_inputs(model, batch)), functools.partial(record, batch)

    chunks = list(trainer.strategy.megatron_parallel)
    was_training = pl_module.training
    pl_module.eval()
    try:
        with adapters_disabled(pl_module) if adapters_off else contextlib.nullcontext():
            for index, batch in enumerate(batches):
                if index % data_ranks != data_rank:
                    continue
                rows, length = batch["tokens"].shape
                data = [iter([batch]) for _ in chunks] if len(chunks) > 1 else iter([batch])
                get_forward_backward_func()(
                    forward_step_func=forward_step, data_iterator=data, model=chunks, num_microbatches=1,
                    seq_length=length, micro_batch_size=rows, forward_only=True)
    finally:
        pl_module.train(was_training)
    summed = scores.values.to(next(pl_module.parameters()).device)
    for group in (parallel_state.get_data_parallel_group(), parallel_state.get_pipeline_model_parallel_group()):
        torch.distributed.all_reduce(summed, group=group)
    return ReferenceScores.assembled(summed.cpu(), pairs)


class ReferenceScores:
    """One rank's share of the pre-pass, laid out to be summed over ranks: [log-probs (2 per pair), times
    each row was scored, pairs scored per data-parallel rank]."""

    def __init__(self, pairs: int, data_ranks: int):
        self.rows = 2 * pairs
        self.values = torch.zeros(2 * self.rows + data_ranks, dtype=torch.float32)

    def record(self, rows: torch.Tensor, logps: torch.Tensor, data_rank: int) -> None:
        self.values[rows] = logps
        self.values[self.rows + rows] += 1
        self.values[2 * self.rows + data_rank] += rows.numel() // 2

    @staticmethod
    def assembled(summed: torch.Tensor, pairs: int) -> tuple[torch.Tensor, list[int]]:
        """The full table and the pairs per data-parallel rank; a row scored never or twice (the ranks'
        shares overlapping or leaving a gap) would silently train against a wrong reference, so it fails."""
        rows = 2 * pairs
        times = summed[rows : 2 * rows]
        if not bool((times == 1).all()):
            missing, repeated = int((times == 0).sum()), int((times > 1).sum())
            raise RunFailed(f"the reference pre-pass left {missing} of {rows} log-prob rows unscored and scored "
                            f"{repeated} more than once: its data-parallel ranks did not split the pairs exactly")
        return summed[:rows].clone(), [int(n) for n in summed[2 * rows :].tolist()]
