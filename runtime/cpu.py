"""Lets NeMo 2's real MegatronStrategy training loop run on a machine without CUDA.

NeMo 2 and megatron-core assume a GPU in a handful of places (NeMo's maintainers say there is no CPU
path). `enable()` redirects exactly those places to the CPU, over gloo, and does nothing at all when
CUDA is available: the GPU path is never touched. Each redirect below names what it replaces.
"""

import contextlib
import functools
import importlib

import torch
from torch.overrides import TorchFunctionMode

_enabled = False


def enable() -> bool:
    """Applies the CPU redirects once per process; returns whether they are active."""
    global _enabled
    if torch.cuda.is_available():
        return False
    if not _enabled:
        _redirect_cuda_runtime()
        _redirect_rng_tracker()
        _redirect_cuda_literals()
        _redirect_moe_host_copies()
        _enabled = True
    return True


class _CudaAsCpu(TorchFunctionMode):
    """Within it, tensors requested on 'cuda' (or pinned for a copy to it) are made on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to and args[1:] and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
            kwargs.pop("non_blocking", None)
        return func(*args, **kwargs)


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and device.startswith("cuda")


def _on_cpu(function):
    """Runs `function` with its hard-coded `device='cuda'` tensors made on the CPU."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _CudaAsCpu():
            return function(*args, **kwargs)

    return wrapper


class _NoEvent:
    """Stands in for a recorded torch.cuda.Event: there is nothing to wait for on the CPU."""

    def synchronize(self):
        pass

    def wait(self, stream=None):
        pass

    def query(self):
        return True


class _NoStream:
    """Stands in for torch.cuda.Stream: CPU work is ordered already."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, stream):
        pass

    def synchronize(self):
        pass

    def record_event(self, event=None):
        # MoE's all-to-all dispatcher records an event after its device-to-host copies and waits on it.
        return _NoEvent()


def _redirect_cuda_runtime():
    # megatron-core allocates its DDP buffers on torch.cuda.current_device(); NeMo moves batches there.
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.set_device = lambda device: None
    torch.cuda.synchronize = lambda device=None: None
    # NeMo initialises DDP on a side stream (megatron_parallel.init_model_parallel).
    torch.cuda.Stream = _NoStream
    torch.cuda.stream = lambda stream=None: contextlib.nullcontext()
    torch.cuda.current_stream = lambda device=None: _NoStream()
    torch.cuda.default_stream = lambda device=None: _NoStream()
    # NeMo's SFT sample mapping counts ranks with the legacy torch.cuda.LongTensor constructor.
    torch.cuda.LongTensor = torch.LongTensor


def _redirect_rng_tracker():
    # The model-parallel RNG tracker keeps CUDA generator states; the CPU generator plays that role.
    random = importlib.import_module("megatron.core.tensor_parallel.random")
    random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)
    torch.cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    torch.cuda.manual_seed_all = lambda seed: None  # torch.manual_seed calls it after seeding the CPU
    # NeMo seeds the tracker only `if torch.cuda.device_count() > 0`.
    megatron_init = importlib.import_module("nemo.lightning.megatron_init")
    megatron_init._set_random_seed = _seed_with_rng_tracker(megatron_init._set_random_seed)


def _seed_with_rng_tracker(set_random_seed):
    @functools.wraps(set_random_seed)
    def wrapper(seed):
        set_random_seed(seed)
        parallel_state = importlib.import_module("megatron.core.parallel_state")
        tensor_parallel = importlib.import_module("megatron.core.tensor_parallel")
        # Same per-pipeline-stage offset as NeMo's own seeding.
        tensor_parallel.model_parallel_cuda_manual_seed(seed + 100 * parallel_state.get_pipeline_model_parallel_rank())

    return wrapper


def _redirect_cuda_literals():
    """Functions that create tensors with a literal device='cuda' or pinned copies to it."""
    optimizer = importlib.import_module("megatron.core.optimizer.optimizer")
    data_sampler = importlib.import_module("nemo.lightning.pytorch.plugins.data_sampler")
    strategies = importlib.import_module("nemo.lightning.pytorch.strategies.megatron_strategy")

    # megatron-core's schedules and grad-norm count on 'cuda'; the strategy logs via pinned copies.
    for step in ("training_step", "optimizer_step", "validation_step", "test_step", "predict_step"):
        setattr(strategies.MegatronStrategy, step, _on_cpu(getattr(strategies.MegatronStrategy, step)))

    # Called outside the strategy's steps too (training.preference_steps' reference pre-pass).
    schedules = importlib.import_module("megatron.core.pipeline_parallel.schedules")
    for schedule in ("forward_backward_no_pipelining", "forward_backward_pipelining_without_interleaving",
                     "forward_backward_pipelining_with_interleaving"):
        setattr(schedules, schedule, _on_cpu(getattr(schedules, schedule)))

    optimizer.FP32Optimizer.__init__ = _on_cpu(optimizer.FP32Optimizer.__init__)
    # Its assert demands torch.cuda.FloatTensor gradients; on the CPU the scaling is one multiply.
    optimizer.clip_grad_by_total_norm_fp32 = _clip_grads_by_total_norm
    checkpoint_io = importlib.import_module("nemo.lightning.io.pl")
    # It asserts CUDA is initialised and moves loaded tensors to the current GPU; they stay put here.
    checkpoint_io._fix_tensors_device = lambda checkpoint: checkpoint
    sampler = data_sampler.MegatronDataSampler
    sampler.on_megatron_step_end = _on_cpu(sampler.on_megatron_step_end)

    # With several processes, a checkpoint is loaded in parts and the parts exchanged over 'cuda' tensors.
    fully_parallel = importlib.import_module("megatron.core.dist_checkpointing.strategies.fully_parallel")
    loader = fully_parallel.FullyParallelLoadStrategyWrapper
    loader.load = _on_cpu(loader.load)

    # NeMo's progress printer runs on rank 0 only and asks megatron's timers for their report, which
    # all-gathers over every rank even when no timer is registered (the default log level registers
    # none). That one-sided collective shifts gloo's matching on the world group, so the next barrier
    # (the checkpoint's) never returns. Nothing registered, nothing to gather.
    timers = importlib.import_module("megatron.core.timers").Timers
    timers.get_all_timers_string = _report_only_registered(timers.get_all_timers_string)


def _redirect_moe_host_copies():
    # MoE's all-to-all dispatcher copies its split sizes "to the CPU" as numpy arrays for the collective, but
    # only from CUDA tensors: on the CPU they stay tensors, which all_to_all_single does not take as sizes.
    token_dispatcher = importlib.import_module("megatron.core.transformer.moe.token_dispatcher")
    token_dispatcher.maybe_move_tensor_to_cpu = _host_copy(token_dispatcher.maybe_move_tensor_to_cpu)


def _host_copy(maybe_move_tensor_to_cpu):
    @functools.wraps(maybe_move_tensor_to_cpu)
    def wrapper(tensor, as_numpy=False, record_stream=False):
        if as_numpy and torch.is_tensor(tensor) and not tensor.is_cuda:
            return tensor.numpy()
        return maybe_move_tensor_to_cpu(tensor, as_numpy=as_numpy, record_stream=record_stream)

    return wrapper


def _report_only_registered(get_all_timers_string):
    @functools.wraps(get_all_timers_string)
    def wrapper(self, names=None, *args, **kwargs):
        if not (self._timers if names is None else names):
            return None
        return get_all_timers_string(self, names, *args, **kwargs)

    return wrapper


def _clip_grads_by_total_norm(parameters, max_norm, total_norm, use_decoupled_grad=False):
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if clip_coeff >= 1.0:
        return
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    attribute = "decoupled_grad" if use_decoupled_grad else "grad"
    for param in parameters:
        grad = getattr(param, attribute, None)
        if grad is not None:
            grad.detach().mul_(clip_coeff)
