"""The accelerators a plan can be made for, as data, and this machine for CPU recipes.

Memory is the total each device reports (nvidia-smi "MiB", what torch.cuda sees as total_memory);
peak is the dense BF16 tensor-core rate from the vendor's datasheet (no 2:4 sparsity).
"""

import os
from dataclasses import dataclass

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class Accelerator:
    name: str
    description: str
    memory_bytes: int
    peak_bf16_flops: float  # dense, per device
    source: str

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


GPUS = {
    gpu.name: gpu
    for gpu in [
        Accelerator("h100-80gb", "H100 SXM 80GB", 81559 * MIB, 989.4e12,
                    "NVIDIA H100 Tensor Core GPU datasheet (SXM: BF16 1,979 TFLOPS with sparsity)"),
        Accelerator("h200-141gb", "H200 SXM 141GB", 143771 * MIB, 989.4e12,
                    "NVIDIA H200 Tensor Core GPU datasheet (SXM: BF16 1,979 TFLOPS with sparsity)"),
        Accelerator("a100-80gb", "A100 SXM 80GB", 81920 * MIB, 312e12,
                    "NVIDIA A100 Tensor Core GPU datasheet (BF16 312 TFLOPS dense)"),
        Accelerator("a100-40gb", "A100 SXM 40GB", 40960 * MIB, 312e12,
                    "NVIDIA A100 Tensor Core GPU datasheet (BF16 312 TFLOPS dense)"),
        Accelerator("b200-180gb", "B200 180GB", 183359 * MIB, 2250e12,
                    "NVIDIA DGX B200 datasheet (B200: BF16 4.5 PFLOPS with sparsity)"),
        Accelerator("l40s-48gb", "L40S 48GB", 46068 * MIB, 181.05e12,
                    "NVIDIA L40S datasheet (BF16 362.05 TFLOPS with sparsity)"),
    ]
}


def this_machine() -> Accelerator:
    """CPU recipes are planned against this machine's physical memory; there is no published peak to speak of."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Accelerator("cpu", f"this machine's memory ({os.cpu_count()} cores)", memory, 0.0, "os.sysconf")


def accelerator(name: str) -> Accelerator:
    if name == "cpu":
        return this_machine()
    if name not in GPUS:
        raise KeyError(f"unknown GPU '{name}'; known: {', '.join(GPUS)}")
    return GPUS[name]
