"""The building blocks every recipe shares, each defined once: trainer and parallelism, optimizer and
schedule, logging and checkpointing, resume. Defaults are sized for one node of 8 x 80 GB GPUs;
recipes change only what differs for their model, and `on_cpu` turns any recipe into a CPU run.
"""

import nemo_run as run
import torch
from megatron.core.distributed import DistributedDataParallelConfig
from megatron.core.optimizer import OptimizerConfig
from nemo import lightning as nl
from nemo.lightning.pytorch.callbacks import PreemptionCallback
from nemo.lightning.pytorch.optim import CosineAnnealingScheduler

from fiddle import history

from models.catalog import MODELS, config_defaults, is_mixture_of_experts
from recipes import factories
from runtime import checkpoints

RESULTS_DIR = "results"
# trainer.max_steps of a run of one epoch over its data: counted at launch (launcher/epoch.py).
ONE_EPOCH = -1
# Placeholders of paths the user must set; the launcher names the key when one is left in place.
UNSET_PATH = "<set data.paths to prepared corpus prefixes>"
UNSET_DATASET = "<set data.dataset_root to a folder from python -m data.sft convert>"
UNSET_PAIRS = "<set data.paths to preference pair files (python -m data.preference formats)>"


def is_unset(path) -> bool:
    """True for a placeholder above, left in place of a path the user must give."""
    return isinstance(path, str) and path.startswith("<set ")

# Attribute each value to the recipe code that set it, not to nemo_run's Config constructor.
history.add_exclude_location("nemo_run/config.py")


def _dotted(path: str):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def tokenizer(model_name: str) -> run.Config:
    """From the same place as the weights (the imported checkpoint's context), never the hub unless asked:
    `data.tokenizer.source=<local folder>` or `data.tokenizer.source=hf://<id>` (runtime/checkpoints.py)."""
    return run.Config(checkpoints.tokenizer, source=MODELS[model_name].tokenizer)


def model(model_name: str) -> run.Config:
    """The NeMo model of a catalog row; architecture numbers come from the row, nowhere else."""
    spec = MODELS[model_name]
    config = run.Config(_dotted(spec.config_class), **spec.config_overrides)
    return run.Config(_dotted(spec.model_class), config=config)


# LoRA on a mixture of experts adapts attention only, as NeMo's own Mixtral and Qwen3-MoE recipes do: adapters on
# every expert's MLP would multiply the adapter count by the experts.
MOE_LORA_TARGETS = ["linear_qkv", "linear_proj"]


def experts(recipe: run.Partial, model_name: str) -> run.Partial:
    """The mixture-of-experts knobs, set on every recipe of an MoE catalog row so that `--explain`, `--diff` and
    the snapshots show each one (a dense row is returned unchanged). Router top-k and the load-balancing loss are
    the model's own (its NeMo config class); the layout is expert parallel 1 until a recipe says otherwise; the
    dispatch is dropless (no capacity factor), with grouped GEMM, Transformer Engine's fast path (a launch without
    Transformer Engine turns it off: runtime/machine.py)."""
    if not is_mixture_of_experts(model_name):
        return recipe
    model_defaults = config_defaults(model_name)
    recipe.trainer.strategy.expert_model_parallel_size = 1
    # Experts are not split over tensor parallel unless asked: each expert's GEMMs are already small.
    recipe.trainer.strategy.expert_tensor_parallel_size = 1
    config = recipe.model.config
    config.moe_token_dispatcher_type = "alltoall"
    config.moe_router_topk = model_defaults["moe_router_topk"]
    config.moe_router_load_balancing_type = model_defaults["moe_router_load_balancing_type"]
    config.moe_aux_loss_coeff = model_defaults["moe_aux_loss_coeff"]
    config.moe_expert_capacity_factor = None  # dropless: every token reaches its top-k experts
    config.moe_token_drop_policy = "probs"  # which tokens go first when a capacity factor is set
    config.moe_pad_expert_input_to_capacity = False
    config.moe_grouped_gemm = True
    if getattr(recipe, "peft", None) is not None:
        recipe.peft.target_modules = list(MOE_LORA_TARGETS)
    return recipe


def strategy() -> run.Config:
    return run.Config(
        nl.MegatronStrategy,
        tensor_model_parallel_size=1,
        pipeline_model_parallel_size=1,
        virtual_pipeline_model_parallel_size=None,
        context_parallel_size=1,
        sequence_parallel=False,
        pipeline_dtype=torch.bfloat16,
        gradient_as_bucket_view=True,
        ckpt_async_save=True,
        ckpt_parallel_load=True,
        ddp=run.Config(
            DistributedDataParallelConfig,
            check_for_nan_in_grad=True,
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=True,
            overlap_param_gather=True,
            average_in_collective=True,
        ),
    )


def precision(name: str = "bf16-mixed") -> run.Config:
    """Mixed precision; fp8 is switched on with `trainer.plugins.fp8=hybrid` (needs Transformer Engine)."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32": torch.float32}[name]
    return run.Config(
        nl.MegatronMixedPrecision,
        precision=name,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        autocast_enabled=False,
        grad_reduce_in_fp32=dtype != torch.float32,
        fp8=None,
        fp8_recipe="delayed",
    )


def trainer(max_steps: int = 1000) -> run.Config:
    return run.Config(
        nl.Trainer,
        accelerator="gpu",
        num_nodes=1,
        devices=8,
        max_steps=max_steps,
        val_check_interval=100,
        # Validate every val_check_interval steps across epochs: Lightning's per-epoch default refuses a
        # resumed or small-data epoch shorter than the interval.
        check_val_every_n_epoch=None,
        limit_val_batches=32,
        limit_test_batches=32,
        log_every_n_steps=10,
        accumulate_grad_batches=1,
        use_distributed_sampler=False,
        strategy=strategy(),
        plugins=precision("bf16-mixed"),
        # SIGTERM (Slurm's time limit or preemption, `executor.signal`): save a -last checkpoint at the end of
        # the current step and exit, so that the next job of a chain resumes from it (runtime/SLURM.md).
        callbacks=[run.Config(PreemptionCallback)],
    )


def optimizer(lr: float = 3e-4, warmup_steps: int = 100, min_lr_ratio: float = 0.1) -> run.Config:
    """Adam with warmup then cosine decay to `min_lr_ratio * lr`."""
    return run.Config(
        nl.MegatronOptimizerModule,
        config=run.Config(
            OptimizerConfig,
            optimizer="adam",
            lr=lr,
            weight_decay=0.1,
            adam_beta1=0.9,
            adam_beta2=0.95,
            adam_eps=1e-5,
            clip_grad=1.0,
            bf16=True,
            fp16=False,
            params_dtype=torch.float32,
            use_distributed_optimizer=True,
            optimizer_cpu_offload=False,
            optimizer_offload_fraction=0.0,
        ),
        lr_scheduler=run.Config(
            CosineAnnealingScheduler,
            warmup_steps=warmup_steps,
            constant_steps=0,
            min_lr=lr * min_lr_ratio,
        ),
    )


def logger(name: str, every_n_train_steps: int = 100, keep: int = 2) -> run.Config:
    """Logs and checkpoints under results/<name>; no datetime folder, so a rerun finds its checkpoints."""
    return run.Config(
        nl.NeMoLogger,
        name=name,
        log_dir=RESULTS_DIR,
        use_datetime_version=False,
        tensorboard=factories.tensorboard(),
        wandb=None,  # log.wandb=wandb(project=...,name=...) switches it on
        ckpt=run.Config(
            nl.ModelCheckpoint,
            every_n_train_steps=every_n_train_steps,
            # Keep the newest `keep` checkpoints: Lightning offers "step" as a monitor.
            save_top_k=keep,
            monitor="step",
            mode="max",
            save_last=True,
            # A checkpoint without optimizer state cannot resume: keep it on the final save too.
            save_optim_on_train_end=True,
            filename="{step}-{consumed_samples}",
            # Lightning's "-last" version counter loops on a broadcast whose count can differ per
            # rank at train end (seen: a 2-process CPU run hung there); resume wants one "-last" anyway.
            enable_version_counter=False,
        ),
    )


def resume() -> run.Config:
    return run.Config(nl.AutoResume, resume_if_exists=True, resume_ignore_no_checkpoint=True)


def restore_from(model_name: str) -> run.Config | None:
    """Fine-tuning starts from the weights `python -m conversion.hf_to_nemo --model NAME` imported for the model;
    the launcher and runtime.entry check them before anything expensive starts (runtime/checkpoints.py)."""
    checkpoint = MODELS[model_name].checkpoint
    if checkpoint is None:
        return None
    return run.Config(nl.RestoreConfig, path=checkpoint, load_optim_state=False)


def on_cpu(recipe: run.Partial, processes: int = 1) -> run.Partial:
    """Turns a recipe into a CPU run over gloo: full precision, no async or fused GPU machinery."""
    recipe.trainer.accelerator = "cpu"
    recipe.trainer.devices = processes
    recipe.trainer.plugins = precision("32")
    strategy = recipe.trainer.strategy
    strategy.pipeline_dtype = torch.float32
    strategy.ckpt_async_save = False
    strategy.ddp.overlap_grad_reduce = False
    strategy.ddp.overlap_param_gather = False
    strategy.ddp.grad_reduce_in_fp32 = False
    recipe.optim.config.bf16 = False
    recipe.optim.config.use_distributed_optimizer = False
    recipe.model.config.params_dtype = torch.float32
    return recipe
