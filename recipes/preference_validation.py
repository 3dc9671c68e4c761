"""Validation rule for preference recipes (DPO / SimPO), in recipes.validation's rule style:
`check_preference(get)` yields one message per problem, naming the dotted keys. Does nothing for
recipes without the `training.preference.PreferenceTraining` callback.
"""

import fiddle as fdl

CALLBACKS = "trainer.callbacks"


def _preference_callback(config):
    for index, callback in enumerate(getattr(config.trainer, "callbacks", None) or []):
        if isinstance(callback, fdl.Buildable) and getattr(fdl.get_callable(callback), "__name__", "") == "PreferenceTraining":
            return index, callback
    return None, None


def check_preference(get):
    index, callback = _preference_callback(get.config)
    if callback is None:
        return
    from data.preference.datamodule import batch_size_problems
    from recipes.validation import has_transformer_engine  # that module imports this one

    packed = bool(get("data.pack_pairs", False))
    yield from batch_size_problems(get("data.micro_batch_size", 2), get("data.global_batch_size", 2), packed)
    if packed and not get("data.create_attention_mask", True) and not has_transformer_engine():
        yield ("data.create_attention_mask=False with data.pack_pairs=True needs Transformer Engine (THD attention); "
               "without it the attention mask is what keeps the packed sequences apart: set it True")
    if (get("trainer.strategy.context_parallel_size", 1) or 1) > 1:
        yield ("trainer.strategy.context_parallel_size must be 1 for preference training: sequence log-probs "
               "are summed over whole sequences")
    reference = getattr(callback, "reference", "precomputed")
    loss = getattr(callback, "loss", None)
    needs_reference = loss is None or getattr(fdl.get_callable(loss), "needs_reference", True)
    if needs_reference and reference == "none":
        yield f"{CALLBACKS}.{index}.reference='none' but DPO needs a reference ('precomputed' or 'adapters_off')"
    if needs_reference and reference == "adapters_off" and get("peft") is None:
        yield f"{CALLBACKS}.{index}.reference='adapters_off' needs LoRA adapters (peft), or use reference='precomputed'"
