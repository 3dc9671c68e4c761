"""Measures what autograd keeps for backward during a real forward of megatron's GPT model on CPU.

Every tensor handed to a saved-tensors hook is recorded once per storage (views of one buffer count once);
the model's parameters are not activations and are left out. Used by test_activations.py, in this process
(TP 1) and in two gloo processes (TP 2, sequence parallel).
"""

import contextlib
import os
import socket

import torch
import torch.nn.functional as F

from planning.layout import ModelShape


class SavedTensors:
    """Bytes of the distinct storages autograd saves while the context is open, by the phase that first saved
    them. Only the innermost saved-tensors hook sees a tensor, so one hook records everything and `phase` says
    where the forward is (set by module pre-hooks)."""

    def __init__(self, exclude: list[torch.Tensor]):
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, tuple[str, int]] = {}
        self.phase = "embedding"

    def _pack(self, tensor):
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self._excluded and pointer not in self.storages and storage.device.type != "meta":
            self.storages[pointer] = (self.phase, storage.nbytes())
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    def bytes(self, phase: str | None = None) -> int:
        return sum(size for where, size in self.storages.values() if phase is None or where == phase)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_megatron(rank: int, world: int, port: int, tp: int):
    """A gloo process group and megatron's parallel state, on the CPU path of runtime/cpu.py."""
    import torch.distributed as dist
    from megatron.core import parallel_state, tensor_parallel

    from runtime import cpu

    cpu.enable()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp)
    tensor_parallel.model_parallel_cuda_manual_seed(1234)


def transformer_config(model: ModelShape, tp: int, sequence_parallel: bool, recompute: dict | None = None):
    """megatron's TransformerConfig with a Llama catalog row's numbers (what NeMo's Llama3Config sets)."""
    from megatron.core.transformer import TransformerConfig

    return TransformerConfig(
        num_layers=model.layers, hidden_size=model.hidden, ffn_hidden_size=model.ffn_hidden,
        num_attention_heads=model.heads, num_query_groups=model.query_groups, kv_channels=model.kv_channels,
        normalization="RMSNorm", gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False,
        hidden_dropout=0.0, attention_dropout=0.0, params_dtype=torch.float32,
        tensor_model_parallel_size=tp, sequence_parallel=sequence_parallel,
        apply_rope_fusion=False, bias_activation_fusion=False, bias_dropout_fusion=False,
        masked_softmax_fusion=False, persist_layer_norm=False, gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False, **(recompute or {}),
    )


class SequenceParallelTorchNorm:
    """torch.nn.RMSNorm for megatron's local spec under sequence parallel. megatron's WrappedTorchNorm refuses
    sequence parallel (only the norm weights' gradient reduction differs, which a forward does not touch); apex's
    fused norm, the local spec's other choice, is not installed here."""

    def __new__(cls, config, hidden_size: int, eps: float = 1e-5, **unused):
        return torch.nn.RMSNorm(hidden_size, eps=eps)


def gpt_model(model: ModelShape, seq_length: int, tp: int = 1, sequence_parallel: bool = False, recompute=None):
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import transformer_block

    config = transformer_config(model, tp, sequence_parallel, recompute)
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    if sequence_parallel:
        spec.submodules.input_layernorm = spec.submodules.pre_mlp_layernorm = SequenceParallelTorchNorm
        transformer_block.LayerNormImpl = SequenceParallelTorchNorm
    return GPTModel(config, spec, vocab_size=model.padded_vocab(tp),
                    max_sequence_length=seq_length, position_embedding_type="rope", rotary_base=500000)


def measure(model: ModelShape, seq_length: int, micro_batch: int, tp: int = 1, sequence_parallel: bool = False,
            recompute=None) -> dict:
    """Saved bytes of one transformer layer, of the whole forward with the loss, per micro batch."""
    torch.manual_seed(0)
    gpt = gpt_model(model, seq_length, tp, sequence_parallel, recompute)
    parameters = list(gpt.parameters())
    tokens = torch.randint(0, model.vocab, (micro_batch, seq_length))
    positions = torch.arange(seq_length).unsqueeze(0).expand(micro_batch, -1)
    # megatron's local attention takes a boolean mask, True where attention is not allowed.
    mask = torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool), 1).view(1, 1, seq_length, seq_length)

    saved = SavedTensors(parameters)
    for index, layer in enumerate(gpt.decoder.layers):
        layer.register_forward_pre_hook(lambda *_, name=f"layer{index}": setattr(saved, "phase", name))
    gpt.decoder.final_layernorm.register_forward_pre_hook(lambda *_: setattr(saved, "phase", "output"))
    with saved:
        loss = gpt(tokens, positions, mask, labels=tokens)
    loss.sum().backward()  # what was saved is what backward used
    return {"layer": saved.bytes("layer1"), "first_layer": saved.bytes("layer0"), "output": saved.bytes("output"),
            "embedding": saved.bytes("embedding"), "total": saved.bytes()}


def _worker(rank, world, port, settings, results):
    init_megatron(rank, world, port, tp=world)
    results[rank] = [measure(tp=world, **arguments) for arguments in settings]


def measure_in_processes(processes: int, settings: list[dict]) -> list[list[dict]]:
    """`measure` for each of `settings` on every rank of a `processes`-way tensor-parallel gloo group. The
    processes are spawned, not forked: a fork of a test process that already ran torch, gloo and threads
    (a pytest-xdist worker) hung or crashed in megatron's initialize_model_parallel."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        port = free_port()
        workers = [context.Process(target=_worker, args=(rank, processes, port, settings, results)) for rank in range(processes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
        assert all(worker.exitcode == 0 for worker in workers), [worker.exitcode for worker in workers]
        return [results[rank] for rank in range(processes)]


@contextlib.contextmanager
def one_process_group():
    """A one-rank gloo group and megatron's parallel state for an in-process measurement, taken down after."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    init_megatron(0, 1, free_port(), tp=1)
    try:
        yield
    finally:
        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()
