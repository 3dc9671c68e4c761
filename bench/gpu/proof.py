"""One-shot GPU proof of the plan: Llama 3.2 1B (random weights, synthetic tokens) trained on one GPU for SFT, LoRA
and DPO with megatron-core's GPT model, DDP and optimizer (the layout the recipes use: bf16 weights, fp32 gradient
buffer, fp32 main weights and Adam moments), then NeMo's stock `llm.llama32_1b.finetune_recipe` on the same sizes.
Each run reports measured tokens/s/GPU, TFLOP/s, MFU and peak memory (torch.cuda.max_memory_allocated) next to what
planning/ predicts for it, as JSON and a table.

On the lent GPU machine (torch, transformers, lightning preinstalled; the rest carried in .whl/, see fetch_wheels.sh):

    pip install -q --no-deps .whl/*.whl && python bench/gpu/proof.py --out $OUT/proof.json

On CPU, with tiny sizes, to check the script itself: python bench/gpu/proof.py --dry-run
"""

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from planning.flops import step_flops  # noqa: E402
from planning.hardware import GIB, GPUS  # noqa: E402
from planning.layout import Layout, ModelShape  # noqa: E402
from planning.memory import most_loaded_stage  # noqa: E402

# NeMo's Llama32Config1B (tests/planning/test_gpu_proof.py checks these against the class).
LLAMA32_1B = ModelShape(layers=16, hidden=2048, ffn_hidden=8192, heads=32, query_groups=8, kv_channels=64,
                        vocab=128256, tied_embeddings=True)
TINY = ModelShape(layers=2, hidden=64, ffn_hidden=256, heads=4, query_groups=2, kv_channels=16, vocab=512,
                  tied_embeddings=True)
LORA_RANK, LORA_ALPHA = 16, 32
DPO_BETA = 0.1


@dataclass
class Result:
    run: str
    steps: int
    tokens_per_step: int
    seconds_per_step: float
    tokens_per_second_per_gpu: float
    tflops_per_second: float
    mfu: float | None
    peak_allocated_gib: float
    planned_allocated_gib: float
    planned_tokens_per_second_per_gpu: float | None
    note: str = ""


class LoRALinear(torch.nn.Module):
    """A frozen megatron linear plus NeMo's adapter shapes (rank x in, out x rank; TP 1), output scaled alpha/rank."""

    def __init__(self, base, inputs: int, outputs: int, dtype):
        super().__init__()
        self.base = base
        self.linear_in = torch.nn.Linear(inputs, LORA_RANK, bias=False, dtype=dtype)
        self.linear_out = torch.nn.Linear(LORA_RANK, outputs, bias=False, dtype=dtype)
        torch.nn.init.zeros_(self.linear_out.weight)

    def forward(self, x, *args, **kwargs):
        output, bias = self.base(x, *args, **kwargs)
        return output + self.linear_out(self.linear_in(x)) * (LORA_ALPHA / LORA_RANK), bias


def add_lora(model, dtype):
    for parameter in model.parameters():
        parameter.requires_grad = False
    for layer in model.decoder.layers:
        attention, mlp = layer.self_attention, layer.mlp
        for owner, name in ((attention, "linear_qkv"), (attention, "linear_proj"), (mlp, "linear_fc1"), (mlp, "linear_fc2")):
            base = getattr(owner, name)
            setattr(owner, name, LoRALinear(base, base.input_size, base.output_size, dtype))


def build(model: ModelShape, seq: int, dtype, lora: bool):
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.transformer import TransformerConfig

    bf16 = dtype == torch.bfloat16
    config = TransformerConfig(
        num_layers=model.layers, hidden_size=model.hidden, ffn_hidden_size=model.ffn_hidden,
        num_attention_heads=model.heads, num_query_groups=model.query_groups, kv_channels=model.kv_channels,
        normalization="RMSNorm", gated_linear_unit=True, activation_func=torch.nn.functional.silu,
        add_bias_linear=False, hidden_dropout=0.0, attention_dropout=0.0, params_dtype=dtype, bf16=bf16,
        pipeline_dtype=dtype, use_cpu_initialization=not torch.cuda.is_available(),
        apply_rope_fusion=False, bias_activation_fusion=False, bias_dropout_fusion=False, masked_softmax_fusion=False,
        persist_layer_norm=False, gradient_accumulation_fusion=False, cross_entropy_loss_fusion=False,
    )
    gpt = GPTModel(config, get_gpt_layer_local_spec(normalization="RMSNorm"), vocab_size=model.padded_vocab(1),
                   max_sequence_length=seq, position_embedding_type="rope", rotary_base=500000,
                   share_embeddings_and_output_weights=model.tied_embeddings)
    if lora:
        add_lora(gpt, dtype)
    if torch.cuda.is_available():
        gpt.cuda()
    # As the recipes: LoRA turns the distributed optimizer off. The CPU dry run uses megatron's FP32Optimizer, the one
    # runtime/cpu.py redirects (the distributed one allocates on CUDA).
    distributed = not lora and bf16
    ddp = DistributedDataParallel(config, DistributedDataParallelConfig(
        grad_reduce_in_fp32=bf16, use_distributed_optimizer=distributed), gpt)
    optimizer = get_megatron_optimizer(OptimizerConfig(
        optimizer="adam", lr=1e-5, bf16=bf16, params_dtype=torch.float32, use_distributed_optimizer=distributed,
        clip_grad=1.0), [ddp])
    return ddp, optimizer


def sequence_logps(ddp, tokens, positions, mask):
    """Sum of per-token log-probabilities of each sequence (megatron's loss is -log p per token)."""
    return -ddp(tokens, positions, mask, labels=tokens).float().sum(dim=1)


def train(kind: str, model: ModelShape, seq: int, micro_batch: int, global_batch: int, steps: int, warmup: int,
          dtype, device) -> tuple[float, float]:
    """Seconds per step (after warmup) and peak allocated bytes."""
    ddp, optimizer = build(model, seq, dtype, lora=kind == "lora")
    tokens = torch.randint(0, model.vocab, (micro_batch, seq), device=device)
    positions = torch.arange(seq, device=device).unsqueeze(0).expand(micro_batch, -1)
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool, device=device), 1).view(1, 1, seq, seq)
    reference = torch.zeros(micro_batch, device=device)  # DPO: precomputed reference log-probs (random weights anyway)
    micro_batches = global_batch // micro_batch
    step_optimizer = optimizer.step
    if not torch.cuda.is_available():  # the grad norm allocates on 'cuda': runtime/cpu.py's redirect, as its strategy
        from runtime.cpu import _on_cpu

        step_optimizer = _on_cpu(optimizer.step)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    timed_from = None
    for step in range(warmup + steps):
        if step == warmup:
            _sync()
            timed_from = time.perf_counter()
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        for _ in range(micro_batches):
            if kind == "dpo":  # a micro batch is pairs: chosen rows then rejected rows
                logps = sequence_logps(ddp, tokens, positions, mask) - reference
                chosen, rejected = logps[: micro_batch // 2], logps[micro_batch // 2:]
                loss = -torch.nn.functional.logsigmoid(DPO_BETA * (chosen - rejected)).mean()
            else:
                loss = ddp(tokens, positions, mask, labels=tokens).float().mean()
            (loss / micro_batches).backward()
        ddp.finish_grad_sync()
        step_optimizer()
    _sync()
    seconds = (time.perf_counter() - timed_from) / steps
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    del ddp, optimizer
    return seconds, peak


def init_single_process():
    """A one-rank process group and megatron's parallel state (NCCL on the GPU; gloo and runtime/cpu.py on CPU)."""
    import os

    import torch.distributed as dist
    from megatron.core import parallel_state, tensor_parallel

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    if not torch.cuda.is_available():
        from runtime import cpu

        cpu.enable()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1)
    parallel_state.initialize_model_parallel()
    tensor_parallel.model_parallel_cuda_manual_seed(1234)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def planned(model: ModelShape, kind: str, seq: int, micro_batch: int, global_batch: int, dtype) -> tuple[Layout, int]:
    layout = Layout(devices=1, micro_batch=micro_batch, global_batch=global_batch, seq_length=seq,
                    bytes_per_value=2 if dtype == torch.bfloat16 else 4,
                    distributed_optimizer=kind != "lora" and dtype == torch.bfloat16,
                    grad_reduce_in_fp32=dtype == torch.bfloat16, fused_attention=False,
                    lora_rank=LORA_RANK if kind == "lora" else None,
                    lora_targets=("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2") if kind == "lora" else (),
                    preference=kind == "dpo", accelerator="gpu")
    return layout, most_loaded_stage(model, layout).allocated


def measure(kind, model, seq, micro_batch, global_batch, steps, warmup, dtype, device, gpu) -> Result:
    seconds, peak = train(kind, model, seq, micro_batch, global_batch, steps, warmup, dtype, device)
    layout, allocated = planned(model, kind, seq, micro_batch, global_batch, dtype)
    flops = step_flops(model, layout)
    tokens = global_batch * seq
    peak_flops = GPUS[gpu].peak_bf16_flops if gpu else None
    planned_rate = None
    if gpu and model is LLAMA32_1B:
        from planning.plan import assumed_mfu

        mfu, _ = assumed_mfu("llama32_1b", kind == "lora", gpu)
        planned_rate = mfu * peak_flops / (flops.model_flops / tokens)
    return Result(kind, steps, tokens, seconds, tokens / seconds, flops.model_flops / seconds / 1e12,
                  flops.model_flops / seconds / peak_flops if peak_flops else None, peak / GIB, allocated / GIB,
                  planned_rate)


def stock_recipe(seq: int, micro_batch: int, global_batch: int, steps: int, gpu) -> Result:
    """NeMo's own llm.llama32_1b.finetune_recipe (full SFT, random weights) on mock data of the same sizes, timed by
    a callback between the warmup and the last step."""
    import lightning.pytorch as pl
    import nemo_run as run
    from nemo.collections import llm

    class StepTimer(pl.Callback):
        def __init__(self):
            self.starts = []

        def on_train_batch_start(self, trainer, *args):
            _sync()
            self.starts.append(time.perf_counter())

    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

    from models.catalog import TOKENIZERS
    from runtime import machine, no_te

    no_te.enable()
    timer = StepTimer()
    recipe = llm.llama32_1b.finetune_recipe(name="stock", dir="/tmp/stock", num_nodes=1, num_gpus_per_node=1, peft_scheme=None)
    # No hub here: the repository's tiny tokenizer feeds random token ids; the model keeps Llama 3's 128,256-row
    # embedding (vocab_size preset), so its size and FLOPs are the 1B model's.
    recipe.data = run.Config(llm.MockDataModule, seq_length=seq, micro_batch_size=micro_batch,
                             global_batch_size=global_batch, create_attention_mask=True,
                             tokenizer=run.Config(AutoTokenizer, pretrained_model_name=str(TOKENIZERS / "tiny")))
    recipe.model.config.vocab_size = LLAMA32_1B.vocab
    machine.adapt(recipe)  # without Transformer Engine: local spec, fusions off
    recipe.resume = None
    recipe.trainer.max_steps = steps + 3
    recipe.trainer.val_check_interval = steps + 10
    recipe.trainer.limit_val_batches = 0
    recipe.log.ckpt = None
    recipe.trainer.callbacks = [timer]
    recipe.model.config.seq_length = seq
    torch.cuda.reset_peak_memory_stats()
    run.run(recipe, direct=True)
    seconds = (timer.starts[-1] - timer.starts[3]) / (len(timer.starts) - 4)
    layout, allocated = planned(LLAMA32_1B, "sft", seq, micro_batch, global_batch, torch.bfloat16)
    flops = step_flops(LLAMA32_1B, layout)
    tokens = global_batch * seq
    return Result("nemo_stock_finetune_recipe", len(timer.starts) - 4, tokens, seconds, tokens / seconds,
                  flops.model_flops / seconds / 1e12, flops.model_flops / seconds / GPUS[gpu].peak_bf16_flops,
                  torch.cuda.max_memory_allocated() / GIB, allocated / GIB, None,
                  "NeMo's recipe with its own (TE-less here: local) layer spec")


def table(results: list[Result]) -> str:
    rows = [f"{'run':<28}{'s/step':>8}{'tok/s/GPU':>11}{'planned':>10}{'TFLOP/s':>9}{'MFU':>7}{'peak GiB':>10}{'planned':>9}"]
    for r in results:
        mfu = f"{r.mfu:.1%}" if r.mfu is not None else "-"
        plan_rate = f"{r.planned_tokens_per_second_per_gpu:,.0f}" if r.planned_tokens_per_second_per_gpu else "-"
        rows.append(f"{r.run:<28}{r.seconds_per_step:>8.3f}{r.tokens_per_second_per_gpu:>11,.0f}{plan_rate:>10}"
                    f"{r.tflops_per_second:>9.1f}{mfu:>7}{r.peak_allocated_gib:>10.2f}{r.planned_allocated_gib:>9.2f}")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: checks the script, measures nothing real")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq", type=int, default=2048)  # local attention keeps 6 B per score: DPO at 4096 plans 122 GiB
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--gpu", default="h200-141gb", help="planning.hardware name of the GPU (its peak sets MFU)")
    parser.add_argument("--no-stock", action="store_true", help="skip NeMo's stock finetune_recipe")
    parser.add_argument("--out", default="bench/gpu/proof.json")
    args = parser.parse_args(argv)

    dry = args.dry_run or not torch.cuda.is_available()
    model, seq, steps, warmup = (TINY, 32, 2, 1) if dry else (LLAMA32_1B, args.seq, args.steps, 3)
    dtype, device = (torch.float32, "cpu") if dry else (torch.bfloat16, "cuda")
    gpu = None if dry else args.gpu
    init_single_process()
    results = []
    for kind, micro_batch in (("sft", 1), ("lora", 1), ("dpo", 2)):
        results.append(measure(kind, model, seq, micro_batch, args.global_batch, steps, warmup, dtype, device, gpu))
        print(table(results[-1:]), flush=True)
    if not args.no_stock:
        if dry:
            print("nemo_stock_finetune_recipe: skipped in the dry run (needs CUDA)")
        else:
            try:
                results.append(stock_recipe(seq, 1, args.global_batch, steps, gpu))
            except Exception as error:  # noqa: BLE001 - reported, the other runs stand
                print(f"nemo_stock_finetune_recipe failed: {type(error).__name__}: {error}")
    print(table(results))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"dry_run": dry, "gpu": gpu, "results": [asdict(r) for r in results]}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
