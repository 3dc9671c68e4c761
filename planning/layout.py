"""What a recipe config says about the job, read without building anything: the model's shape, the parallel
layout and batch, precision, recompute and offloading. Values the config leaves unset read as the class
defaults the run will use (fiddle reports signature defaults)."""

from dataclasses import dataclass, field

import fiddle as fdl


def read(config, path: str, default=None):
    """The value at a dotted path of a fiddle config; `default` where a node is missing or None."""
    node = config
    for name in path.split("."):
        node = getattr(node, name, None)
        if node is None:
            return default
    return node


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a GPT model that decide its parameters, activations and FLOPs."""

    layers: int
    hidden: int
    ffn_hidden: int
    heads: int
    query_groups: int
    kv_channels: int
    vocab: int  # before megatron pads it for tensor parallel
    make_vocab_divisible_by: int = 128
    gated_mlp: bool = True
    qkv_bias: bool = False
    linear_bias: bool = False
    tied_embeddings: bool = False
    layernorm_has_bias: bool = False
    qk_layernorm: bool = False  # a norm over each head's query and key (Qwen3), kv_channels wide
    # Mixture of experts (every layer's MLP; 0 experts: a dense model): the router picks router_topk of `experts`
    # MLPs of width moe_ffn_hidden for each token.
    experts: int = 0
    router_topk: int = 0
    moe_ffn_hidden: int = 0

    @property
    def moe(self) -> bool:
        return self.experts > 0

    @property
    def query_width(self) -> int:
        return self.heads * self.kv_channels

    @property
    def kv_width(self) -> int:
        return self.query_groups * self.kv_channels

    def padded_vocab(self, tp: int) -> int:
        """megatron/NeMo pad the vocabulary to a multiple of make_vocab_size_divisible_by x TP (nemo.lightning.get_vocab_size)."""
        multiple = self.make_vocab_divisible_by * tp
        return -(-self.vocab // multiple) * multiple


@dataclass(frozen=True)
class Layout:
    """Parallelism, batch and memory-saving settings of one run."""

    nodes: int = 1
    devices: int = 1
    tp: int = 1
    pp: int = 1
    vp: int | None = None
    ep: int = 1  # expert parallel: each rank holds experts / ep of every MoE layer
    etp: int = 1  # expert tensor parallel: each expert's MLP split over etp ranks
    cp: int = 1
    sequence_parallel: bool = False
    micro_batch: int = 1  # sequences (preference data counts both sequences of a pair)
    global_batch: int = 1
    seq_length: int = 2048
    bytes_per_value: int = 2  # activations and weights: bf16 unless the run is fp32
    grad_reduce_in_fp32: bool = True
    distributed_optimizer: bool = True
    optimizer_offload_fraction: float = 0.0
    recompute_granularity: str | None = None
    recompute_method: str | None = None
    recompute_num_layers: int | None = None
    cpu_offloading_layers: int = 0  # layers whose activations go to the host
    fused_attention: bool = True  # Transformer Engine's flash/fused attention; False: megatron's local attention
    lora_rank: int | None = None
    lora_targets: tuple = ()
    preference: bool = False
    accelerator: str = "gpu"
    max_steps: int = -1

    @property
    def world(self) -> int:
        return self.nodes * self.devices

    @property
    def dp(self) -> int:
        return max(1, self.world // (self.tp * self.pp * self.cp))

    @property
    def expert_dp(self) -> int:
        """megatron-core's expert data parallel size: world / (ETP x EP x PP)."""
        return max(1, self.world // (self.etp * self.ep * self.pp))

    @property
    def micro_batches_per_step(self) -> int:
        return max(1, self.global_batch // (self.micro_batch * self.dp))

    @property
    def lora(self) -> bool:
        return self.lora_rank is not None


def model_shape(model_config, vocab: int) -> ModelShape:
    get = lambda name, default=None: read(model_config, name, default)  # noqa: E731
    heads = get("num_attention_heads")
    hidden = get("hidden_size")
    experts = get("num_moe_experts") or 0
    return ModelShape(
        layers=get("num_layers"),
        hidden=hidden,
        ffn_hidden=get("ffn_hidden_size"),
        heads=heads,
        query_groups=get("num_query_groups") or heads,
        kv_channels=get("kv_channels") or hidden // heads,
        vocab=get("vocab_size") or vocab,
        # NeMo pads the tokenizer's vocabulary, never a vocab_size the config class presets (Qwen's): split as is
        make_vocab_divisible_by=1 if get("vocab_size") else get("make_vocab_size_divisible_by", 128),
        gated_mlp=bool(get("gated_linear_unit", False)),
        qkv_bias=bool(get("add_qkv_bias", False)),
        linear_bias=bool(get("add_bias_linear", False)),
        tied_embeddings=bool(get("share_embeddings_and_output_weights", False)),
        layernorm_has_bias=get("normalization", "RMSNorm") == "LayerNorm",
        qk_layernorm=bool(get("qk_layernorm", False)),
        experts=experts,
        router_topk=get("moe_router_topk", 0) if experts else 0,
        # megatron-core sizes the experts like the dense MLP when moe_ffn_hidden_size is unset (Mixtral)
        moe_ffn_hidden=(get("moe_ffn_hidden_size") or get("ffn_hidden_size")) if experts else 0,
    )


def _bytes_per_value(config) -> int:
    precision = str(read(config, "trainer.plugins.precision", "bf16-mixed"))
    return 4 if precision in ("32", "32-true") else 2


def _offloaded_layers(config) -> int:
    if not read(config, "model.config.cpu_offloading", False) or not read(config, "model.config.cpu_offloading_activations", True):
        return 0
    return read(config, "model.config.cpu_offloading_num_layers", 0) or 0


def layout(config, fused_attention: bool | None = None) -> Layout:
    """The layout a recipe config asks for. `fused_attention`: None means the recipe's accelerator decides
    (a GPU run gets Transformer Engine's fused attention, a CPU run megatron's local one)."""
    get = lambda path, default=None: read(config, path, default)  # noqa: E731
    accelerator = get("trainer.accelerator", "gpu")
    peft = get("peft")
    data_class = fdl.get_callable(config.data).__name__ if isinstance(get("data"), fdl.Buildable) else ""
    seq = get("data.seq_length") or get("model.config.seq_length")
    tp = get("trainer.strategy.tensor_model_parallel_size", 1)
    return Layout(
        nodes=get("trainer.num_nodes", 1),
        devices=get("trainer.devices", 1) if isinstance(get("trainer.devices", 1), int) else 1,
        tp=tp,
        pp=get("trainer.strategy.pipeline_model_parallel_size", 1),
        ep=get("trainer.strategy.expert_model_parallel_size", 1),
        etp=get("trainer.strategy.expert_tensor_parallel_size") or tp,  # None: megatron-core uses TP
        vp=get("trainer.strategy.virtual_pipeline_model_parallel_size"),
        cp=get("trainer.strategy.context_parallel_size", 1),
        sequence_parallel=bool(get("trainer.strategy.sequence_parallel", False)),
        micro_batch=get("data.micro_batch_size", 1),
        global_batch=get("data.global_batch_size", 1),
        seq_length=seq,
        bytes_per_value=_bytes_per_value(config),
        grad_reduce_in_fp32=bool(get("trainer.strategy.ddp.grad_reduce_in_fp32", True)),
        distributed_optimizer=bool(get("optim.config.use_distributed_optimizer", False)),
        optimizer_offload_fraction=(get("optim.config.optimizer_offload_fraction", 0.0)
                                    if get("optim.config.optimizer_cpu_offload", False) else 0.0),
        recompute_granularity=get("model.config.recompute_granularity"),
        recompute_method=get("model.config.recompute_method"),
        recompute_num_layers=get("model.config.recompute_num_layers"),
        cpu_offloading_layers=_offloaded_layers(config),
        fused_attention=(accelerator != "cpu") if fused_attention is None else fused_attention,
        lora_rank=get("peft.dim") if peft is not None else None,
        lora_targets=tuple(get("peft.target_modules", ())) if peft is not None else (),
        preference=data_class == "PreferenceDataModule",
        accelerator=accelerator,
        max_steps=get("trainer.max_steps", -1),
    )
