"""Fits a recipe to the machine it launches on, visibly: each change lands in fiddle's history,
so `--explain` and `--dryrun` show it as set here."""

from common import transformer_engine


def adapt(recipe) -> list[str]:
    """Returns a line per change made."""
    if transformer_engine.is_installed():
        return []
    changes = []
    # Without TE, megatron-core uses its local layer spec: it needs explicit attention masks and
    # refuses the TE-only fusions.
    if hasattr(recipe.data, "create_attention_mask") and not recipe.data.create_attention_mask:
        recipe.data.create_attention_mask = True
        changes.append("data.create_attention_mask=True (no Transformer Engine: the local attention needs masks)")
    for flag, off in {**transformer_engine.CUDA_ONLY_FUSIONS, **transformer_engine.CUDA_ONLY_MOE_KERNELS}.items():
        if getattr(recipe.model.config, flag, off) != off:
            setattr(recipe.model.config, flag, off)
            changes.append(f"model.config.{flag}={off} (no Transformer Engine)")
    return changes
