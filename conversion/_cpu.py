"""The minimum needed to run NeMo 2's HF importers/exporters on a machine without CUDA.

The redirects shared with training come from runtime/cpu.py; the rest is conversion-specific.
Everything here is a no-op when CUDA is available.

What breaks without CUDA / Transformer Engine, and what we do about it:

* NeMo's model configs (LlamaConfig, MistralConfig7B, Qwen2Config, ...) default
  `apply_rope_fusion=True`; megatron-core's TransformerConfig.__post_init__ raises
  "apply_rope_fusion is not available. Please install TE >= 1.4." when TE is absent, so even
  *building* the config inside HFLlamaImporter.config / io.load_context fails. The other fused
  kernels (bias-activation, masked softmax, persistent layer norm, cross-entropy, gradient
  accumulation) are CUDA-only at run time. `fusions_off()` forces these flags to False on every
  TransformerConfig built inside it, in the object *and* in its `__io__` record, so checkpoints
  written there carry `apply_rope_fusion: false` etc. in their context and load again on CPU.
  Mixture-of-experts configs (Qwen3MoEConfig) also default to TE-only kernels: fused token
  permutation and grouped GEMM; both are switched off the same way (CUDA_ONLY_MOE_FUSIONS).

* Without TE, GPTConfig.transformer_layer_spec (default_layer_spec) picks megatron's *local*
  spec, whose layer norms are separate modules (`decoder.layers.N.input_layernorm.weight`,
  `...pre_mlp_layernorm.weight`) instead of TE's fused `linear_qkv.layer_norm_weight` /
  `linear_fc1.layer_norm_weight`. Every NeMo HF importer/exporter maps the TE names only, so
  layer norms are silently skipped ("No matches found for source key") and stay on the meta
  device. Experts without grouped GEMM are one module each (`experts.local_experts.<i>.linear_fc1`)
  where Qwen3-MoE's mapping addresses grouped-GEMM names (`experts.linear_fc1.weight<i>`).
  `local_spec_state_names()` renames the TE names in the mapping handed to
  nemo.lightning.io.apply_transforms, using megatron's own table
  (get_gpt_layer_local_spec().submodules.sharded_state_dict_keys_map). On disk nothing changes:
  the local spec saves dist checkpoints under the TE names, so files stay TE-compatible.

* ModelConnector.nemo_setup builds MegatronStrategy with the default ckpt_async_save=True,
  whose preload step calls torch.cuda.synchronize() ("Torch not compiled with CUDA enabled").
  `synchronous_checkpoint_save()` passes NeMo's own `ckpt_async_save=False` to nemo_setup.

* Even the synchronous torch_dist save path of megatron-core assumes CUDA:
  FileSystemWriterAsync.preload_tensors calls torch.cuda.synchronize() and
  state_dict_saver.save_state_dict_async_finalize builds a tensor on
  torch.cuda.current_device(); ModelConnector.nemo_load (the exporters' loader) reaches
  MegatronParallel.init_model_parallel, which opens `torch.cuda.stream(torch.cuda.Stream())`
  around init_ddp (a no-op for its ddp="pytorch"). MegatronCheckpointIO.load_checkpoint ends in
  nemo.lightning.io.pl._fix_tensors_device, which asserts torch.cuda.is_initialized() and moves
  loaded tensors to the current GPU. runtime.cpu.enable() (the training path's redirects) answers
  all of these for the CPU; `runtime_cpu_redirects()` applies it (permanently for the process).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from common.transformer_engine import CUDA_ONLY_FUSIONS, CUDA_ONLY_MOE_FUSIONS



def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _switch_off_fusions(config) -> None:
    io_record = getattr(config, "__io__", None)
    for flag, value in {**CUDA_ONLY_FUSIONS, **CUDA_ONLY_MOE_FUSIONS}.items():
        if hasattr(config, flag):
            setattr(config, flag, value)
            if io_record is not None:
                setattr(io_record, flag, value)


@contextlib.contextmanager
def fusions_off() -> Iterator[None]:
    """Within this block, every megatron TransformerConfig is built with CUDA-only fusions off."""
    if cuda_available():
        yield
        return

    from megatron.core.transformer.transformer_config import TransformerConfig

    original_post_init = TransformerConfig.__post_init__

    def post_init_without_fusions(self):
        _switch_off_fusions(self)
        original_post_init(self)

    TransformerConfig.__post_init__ = post_init_without_fusions
    try:
        yield
    finally:
        TransformerConfig.__post_init__ = original_post_init


# Experts: NeMo's Qwen3-MoE mappings address grouped-GEMM experts (one module, `weight<i>` per expert); without
# Transformer Engine grouped GEMM is off and megatron builds a SequentialMLP, one module per local expert.
GROUPED_TO_SEQUENTIAL_EXPERTS = {
    "mlp.experts.linear_fc1.weight*": "mlp.experts.local_experts.*.linear_fc1.weight",
    "mlp.experts.linear_fc2.weight*": "mlp.experts.local_experts.*.linear_fc2.weight",
}


def _te_to_local_spec_renames() -> dict[str, str]:
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    local_to_te = get_gpt_layer_local_spec().submodules.sharded_state_dict_keys_map
    return {**{te: local for local, te in local_to_te.items()}, **GROUPED_TO_SEQUENTIAL_EXPERTS}


def _rename_keys(key, renames: dict[str, str]):
    if isinstance(key, (tuple, list)):
        return type(key)(_rename_keys(k, renames) for k in key)
    if isinstance(key, dict):
        return {name: _rename_keys(k, renames) for name, k in key.items()}
    for te_name, local_name in renames.items():
        key = key.replace(te_name, local_name)
    return key


def _uses_local_spec() -> bool:
    from nemo.collections.llm.gpt.model import base

    return not base.HAVE_TE


@contextlib.contextmanager
def local_spec_state_names() -> Iterator[None]:
    """Within this block, NeMo's HF state mappings address local-spec layer-norm modules."""
    if not _uses_local_spec():
        yield
        return

    from nemo.lightning import io

    renames = _te_to_local_spec_renames()
    original_apply_transforms = io.apply_transforms

    def apply_transforms_on_local_spec(source, target, mapping, transforms=(), **kwargs):
        mapping = {_rename_keys(src, renames): _rename_keys(dst, renames) for src, dst in mapping.items()}
        for transform in transforms:
            transform.source_key = _rename_keys(transform.source_key, renames)
            transform.target_key = _rename_keys(transform.target_key, renames)
        return original_apply_transforms(source, target, mapping=mapping, transforms=list(transforms), **kwargs)

    io.apply_transforms = apply_transforms_on_local_spec
    try:
        yield
    finally:
        io.apply_transforms = original_apply_transforms


@contextlib.contextmanager
def synchronous_checkpoint_save() -> Iterator[None]:
    if cuda_available():
        yield
        return

    from nemo.lightning.io.connector import ModelConnector

    original_nemo_setup = ModelConnector.nemo_setup

    def nemo_setup_saving_synchronously(self, model, trainer=None, *args, **kwargs):
        kwargs.setdefault("ckpt_async_save", False)
        return original_nemo_setup(self, model, trainer, *args, **kwargs)

    ModelConnector.nemo_setup = nemo_setup_saving_synchronously
    try:
        yield
    finally:
        ModelConnector.nemo_setup = original_nemo_setup


@contextlib.contextmanager
def runtime_cpu_redirects() -> Iterator[None]:
    """runtime.cpu.enable(): the training path's CPU redirects, applied once and for the rest of the
    process (torch.cuda.synchronize/current_device/Stream/stream answer for the CPU; loaded checkpoints
    stay where they are; ...). A no-op when CUDA is available."""
    from runtime import cpu

    cpu.enable()
    yield


# The names the conversions used before the redirects were shared with runtime/cpu.py.
cuda_queries_answered_by_cpu = runtime_cpu_redirects
loaded_tensors_stay_on_cpu = runtime_cpu_redirects


@contextlib.contextmanager
def cpu_conversion() -> Iterator[None]:
    """Everything NeMo's HF importers/exporters need to run on a CPU-only machine, in a process that
    lives on afterwards (a test session, a pipeline script): its process group is taken down at the end."""
    from runtime.process_group import left_as_found

    with (
        left_as_found(),
        fusions_off(),
        local_spec_state_names(),
        synchronous_checkpoint_save(),
        runtime_cpu_redirects(),
    ):
        yield
