"""Lets NeMo 2 features that only assume Transformer Engine work without it (CPU, or a GPU without TE).

megatron-core has a local layer spec for exactly this case; a few NeMo code paths still touch TE
names unconditionally. `enable()` fixes those and does nothing when TE is installed.
"""

import importlib
import types

from common import transformer_engine


class _NeverATransformerEngineModule:
    """Nothing is an instance of it, so `m.__class__ == te.Linear` is simply False."""


def enable() -> bool:
    if transformer_engine.is_installed():
        return False
    lora = importlib.import_module("nemo.collections.llm.peft.lora")
    # LoRA.transform compares module classes with te.Linear; the placeholder raises on attribute access.
    lora.te = types.SimpleNamespace(Linear=_NeverATransformerEngineModule)
    # megatron-core's TE wrappers import without TE, so this module concludes TE is present.
    importlib.import_module("nemo.collections.llm.peft.utils").HAVE_TE = False
    # megatron-core's MoE router asks `te_general_gemm is not None`, a name its TE import never defines
    # without TE (NameError on the first MoE forward); None is what it means to test for.
    importlib.import_module("megatron.core.transformer.moe.moe_utils").te_general_gemm = None
    return True
