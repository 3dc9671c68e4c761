"""Published training throughput, as data with sources, and the MFU a plan assumes from it.

A row keeps what was published: tokens/s/GPU and the MFU the publisher states. The plan recomputes the MFU under
its own FLOPs count (NeMo's formula) for the published configuration, so that planning that very configuration
predicts the published throughput exactly; other configurations borrow the closest row and say so.
"""

from dataclasses import dataclass

DGXC = ("NVIDIA dgxc-benchmarking, ft_llama3 (Llama 3 fine-tuning, NeMo), 8 x H100 SXM, BF16, seq 4096, "
        "GBS 32, MBS 1, TP 1")


@dataclass(frozen=True)
class Measurement:
    model: str  # catalog name
    lora: bool
    gpu: str
    gpus: int
    seq_length: int
    global_batch: int
    micro_batch: int
    tp: int
    pp: int
    tokens_per_second_per_gpu: float
    published_mfu: float
    source: str


MEASUREMENTS = [
    Measurement("llama31_8b", False, "h100-80gb", 8, 4096, 32, 1, 1, 1, 12_412, 0.564, DGXC + ": SFT"),
    Measurement("llama31_8b", True, "h100-80gb", 8, 4096, 32, 1, 1, 1, 17_809, 0.539, DGXC + ": LoRA"),
]


def closest(model: str, lora: bool, gpu: str) -> Measurement:
    """Same model and kind of training if published; else the same kind of training (LoRA or not)."""
    for candidates in (
        [m for m in MEASUREMENTS if (m.model, m.lora, m.gpu) == (model, lora, gpu)],
        [m for m in MEASUREMENTS if (m.model, m.lora) == (model, lora)],
        [m for m in MEASUREMENTS if m.lora == lora],
    ):
        if candidates:
            return candidates[0]
    return MEASUREMENTS[0]
