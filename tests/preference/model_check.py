"""Scores a fixed batch of shipped pairs with the tiny Llama and writes the preference numbers as JSON.

Run under torchrun (gloo, CPU): `torchrun --nproc-per-node N tests/preference/model_check.py OUT.json`
scores with tensor parallel 1 (key "tp1"), then with tensor parallel N in the same processes; each
time padded (a sequence per row) and packed (three pairs per row, key suffix "packed").
The tensor-parallel model gets its shards cut from the single-process model's weights, so both hold
the same model. With tensor parallel 1
it also scores the batch from the model's logits (log_softmax + gather), independently of megatron's
cross-entropy path.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from runtime import cpu  # noqa: E402

PAIRS = 6


def main(out: str) -> None:
    cpu.enable()
    dist.init_process_group("gloo")
    from megatron.core import parallel_state

    world = dist.get_world_size()
    full = {}
    single = score(1, full)
    result = single
    if world > 1:
        parallel_state.destroy_model_parallel()
        result = score(world, full)
        result["tp1"] = single
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def shard(name: str, param, full, world: int, rank: int):
    """This rank's slice of a full (tensor parallel 1) tensor; fc1 holds [gate; up], each split."""
    if not getattr(param, "tensor_model_parallel", False) or world == 1:
        return full
    dim = param.partition_dim
    if name.endswith("linear_fc1.weight"):
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(world, dim=0)[rank], up.chunk(world, dim=0)[rank]], dim=0)
    return full.chunk(world, dim=dim)[rank]


def score(world: int, full: dict) -> dict:
    from megatron.core import parallel_state, tensor_parallel
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer
    from nemo.collections.llm.gpt.model.llama import Llama3Config

    from data.preference.datamodule import collate_packs, collate_pairs, load_pairs
    from models.catalog import MODELS
    from recipes.tiny_llama_preference import PAIRS as PAIRS_FILE
    from training.preference_losses import DPOLoss, SimPOLoss, batch_logps, sequence_logps
    from training.preference_steps import table_rows

    parallel_state.initialize_model_parallel(tensor_model_parallel_size=world)
    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    torch.manual_seed(1234)
    spec = MODELS["tiny_llama"]
    tokenizer = AutoTokenizer(spec.tokenizer)
    config = Llama3Config(
        **spec.config_overrides, tensor_model_parallel_size=world, use_cpu_initialization=True,
        params_dtype=torch.float32, init_method_std=0.2,
    )
    model = config.configure_model(tokenizer).eval()
    rank = parallel_state.get_tensor_model_parallel_rank()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if world == 1:
                full[name] = param.detach().clone()
            else:
                param.copy_(shard(name, param, full[name], world, rank))

    records = load_pairs([PAIRS_FILE], tokenizer.tokenizer, "chatml")[:PAIRS]
    pairs = [{"index": i, **r} for i, r in enumerate(records)]
    batch = collate_pairs(pairs, "train")
    with torch.no_grad():
        per_token = model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])
    logps, lengths = sequence_logps(per_token, batch["loss_mask"])
    # the same pairs packed: pairs 0-2 in one row (in an order other than their index), 3-5 in another
    packed = collate_packs([{"pairs": [pairs[2], pairs[0], pairs[1]]}, {"pairs": pairs[3:]}], "train")
    with torch.no_grad():
        packed_per_token = model(packed["tokens"], packed["position_ids"], packed["attention_mask"],
                                 labels=packed["labels"])
    packed_logps, _ = batch_logps(packed, packed_per_token)
    order = table_rows(packed["pair_index"])  # sequence k of the packed batch is row order[k] of the padded one
    generator = torch.Generator().manual_seed(7)
    batch["reference_logps"] = -100 + 10 * torch.randn(logps.shape, generator=generator)
    packed["reference_logps"] = batch["reference_logps"][order]
    result = {"logps": logps.tolist(), "lengths": lengths.tolist(), "reference_logps": batch["reference_logps"].tolist(),
              "packed_logps": torch.zeros_like(logps).index_copy(0, order, packed_logps).tolist(),
              "packed_rows": list(packed["tokens"].shape)}
    for name, loss in {"dpo": DPOLoss(beta=0.1, label_smoothing=0.1), "simpo": SimPOLoss(beta=10.0, gamma=3.0)}.items():
        result[name] = reduced_numbers(loss, batch, per_token)
        result[f"{name}_packed"] = reduced_numbers(loss, packed, packed_per_token)
    if world == 1:
        with torch.no_grad():
            logits = model(batch["tokens"], batch["position_ids"], batch["attention_mask"])
        token_logps = torch.log_softmax(logits.float(), -1).gather(-1, batch["labels"].unsqueeze(-1)).squeeze(-1)
        result["logps_from_logits"] = (token_logps * batch["loss_mask"]).sum(-1).tolist()
    return result


def reduced_numbers(loss, batch: dict, per_token: torch.Tensor) -> dict:
    from training.preference_steps import PreferenceLossReduction

    reduction = PreferenceLossReduction(loss)
    loss_sum, pairs, stats = reduction.forward(batch, per_token)
    reduced = reduction.reduce([stats])
    return {"loss": float(loss_sum / pairs), "reduced": float(reduced), **reduction.last_metrics}


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(sys.argv[1])
