"""Validation rules for preference recipes (DPO, SimPO): those whose trainer has the
PreferenceTraining callback. Batches must keep pairs whole; the reference must exist."""

import fiddle as fdl

from common import transformer_engine
from launcher.validation import View, rule

CALLBACKS = "trainer.callbacks"


def _preference_callback(config):
    from training.preference_steps import PreferenceTraining

    for index, callback in enumerate(config.trainer.callbacks or []):
        if isinstance(callback, fdl.Buildable) and issubclass(fdl.get_callable(callback), PreferenceTraining):
            return index, callback
    return None, None


@rule
def check_preference(get: View):
    index, callback = _preference_callback(get.config)
    if callback is None:
        return
    from data.preference.datamodule import batch_size_problems

    packed = bool(get("data.pack_pairs", False))
    yield from batch_size_problems(get("data.micro_batch_size", 2), get("data.global_batch_size", 2), packed)
    if packed and not get("data.create_attention_mask", True) and not transformer_engine.is_installed():
        yield ("data.create_attention_mask=False with data.pack_pairs=True needs Transformer Engine (THD attention); "
               "without it the attention mask is what keeps the packed sequences apart: set it True")
    if (get("trainer.strategy.context_parallel_size", 1) or 1) > 1:
        yield ("trainer.strategy.context_parallel_size must be 1 for preference training: sequence log-probs "
               "are summed over whole sequences")
    reference = callback.reference
    needs_reference = callback.loss is None or fdl.get_callable(callback.loss).needs_reference
    if needs_reference and reference == "none":
        yield f"{CALLBACKS}.{index}.reference='none' but DPO needs a reference ('precomputed' or 'adapters_off')"
    if needs_reference and reference == "adapters_off" and get("peft") is None:
        yield f"{CALLBACKS}.{index}.reference='adapters_off' needs LoRA adapters (peft), or use reference='precomputed'"


def require_reference_to_resume(config, checkpoint) -> None:
    """Full-parameter DPO keeps the starting weights' log-probs in its checkpoints: resuming from one without
    them (an SFT checkpoint, one saved by another recipe) would score them with the trained weights. The built
    callback's own refusal, the one the job runs too (runtime/entry.py)."""
    _, callback = _preference_callback(config)
    if callback is not None and checkpoint is not None:
        fdl.build(callback).refuse_resume_from(checkpoint)
