"""Preference training throughput, packed pairs against padded ones, side by side.

    python bench/preference_packing.py                                  # tiny Llama, CPU
    python bench/preference_packing.py --model smollm2_135m --seq-length 512 --pairs-per-micro-batch 4
    python bench/preference_packing.py --device cuda                    # THD attention with Transformer Engine

One process scores every shipped pair (data/sft_examples/preference_pairs.jsonl, or --pairs) through
the training forward and backward (megatron's GPTModel, the repository's collation and DPO loss) in
micro batches, padded (--pairs-per-micro-batch pairs, padded to the longest) and packed (one row of up to
--seq-length tokens), --repeats times each, alternating. Random weights: throughput does not depend on
them. It prints, per layout, the median seconds per pass over the pairs, pairs/s, token slots computed
and the share of them that are real, and the ratio packed/padded.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_PAIRS = REPO / "data" / "sft_examples" / "preference_pairs.jsonl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_model(name: str, seq_length: int, device: str):
    import importlib

    import torch
    from megatron.core import parallel_state, tensor_parallel
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

    from models.catalog import MODELS

    spec = MODELS[name]
    torch.distributed.init_process_group("gloo" if device == "cpu" else "nccl",
                                         init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    parallel_state.initialize_model_parallel()
    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    module, _, cls = spec.config_class.rpartition(".")
    config = getattr(importlib.import_module(module), cls)(
        **{**spec.config_overrides, "seq_length": seq_length}, params_dtype=torch.float32 if device == "cpu" else torch.bfloat16,
        bf16=device != "cpu", use_cpu_initialization=device == "cpu")
    tokenizer = AutoTokenizer(spec.tokenizer)
    return config.configure_model(tokenizer).to(device).train(), tokenizer


def micro_batches(records: list[dict], layout: str, pairs_per_micro_batch: int, seq_length: int) -> list[dict]:
    from data.preference.datamodule import indexed_pairs, collate_packs, collate_pairs, pack_pairs

    pairs = indexed_pairs(records)
    if layout == "packed":
        return [collate_packs([pack], "train") for pack in pack_pairs(pairs, seq_length)]
    return [collate_pairs(pairs[i : i + pairs_per_micro_batch], "train")
            for i in range(0, len(pairs), pairs_per_micro_batch)]


def one_pass(model, batches: list[dict], device: str) -> float:
    import torch

    from training.preference_losses import DPOLoss
    from training.preference_steps import HOST_KEYS, PreferenceLossReduction, model_inputs

    reduction = PreferenceLossReduction(DPOLoss())
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches:
        on_device = {k: v.to(device) if torch.is_tensor(v) and k not in HOST_KEYS else v for k, v in batch.items()}
        on_device["reference_logps"] = torch.zeros(2 * batch["pair_index"].numel(), device=device)
        loss, _, _ = reduction.forward(on_device, model(**model_inputs(model, on_device)))
        loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny_llama", help="a models.catalog name")
    parser.add_argument("--pairs", default=str(DEFAULT_PAIRS), help="preference pair file (data.preference formats)")
    parser.add_argument("--seq-length", type=int, default=256, help="packed row length (and the padded limit)")
    parser.add_argument("--pairs-per-micro-batch", type=int, default=4, help="padded layout")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    if args.device == "cpu":
        from runtime import cpu

        cpu.enable()
    from data.preference.datamodule import load_pairs, pair_tokens

    model, tokenizer = build_model(args.model, args.seq_length, args.device)
    records = [r for r in load_pairs([args.pairs], tokenizer.tokenizer, "chatml") if pair_tokens(r)[1] <= args.seq_length]
    layouts = {layout: micro_batches(records, layout, args.pairs_per_micro_batch, args.seq_length)
               for layout in ("padded", "packed")}
    real = sum(pair_tokens(r)[1] for r in records)
    seconds = {layout: [] for layout in layouts}
    one_pass(model, layouts["padded"][:2], args.device)  # warm-up
    for _ in range(args.repeats):
        for layout, batches in layouts.items():
            seconds[layout].append(one_pass(model, batches, args.device))

    print(f"{args.model}, {len(records)} pairs ({real} real tokens), {args.device}, "
          f"median of {args.repeats} passes (forward + backward, DPO loss)")
    print(f"{'layout':8} {'micro batches':>13} {'token slots':>12} {'real':>6} {'s/pass':>8} {'pairs/s':>9}")
    for layout, batches in layouts.items():
        slots = sum(b["tokens"].numel() for b in batches)
        median = statistics.median(seconds[layout])
        print(f"{layout:8} {len(batches):13d} {slots:12d} {real / slots:6.1%} {median:8.3f} {len(records) / median:9.1f}")
    ratio = statistics.median(seconds["padded"]) / statistics.median(seconds["packed"])
    print(f"packed / padded throughput: {ratio:.2f}x  (min-max s/pass: padded {min(seconds['padded']):.3f}-"
          f"{max(seconds['padded']):.3f}, packed {min(seconds['packed']):.3f}-{max(seconds['packed']):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
