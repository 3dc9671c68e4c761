"""How a packed row attends without Transformer Engine: a block-diagonal causal mask.

With Transformer Engine, NeMo hands a packed row's sequence boundaries (``cu_seqlens``) to THD attention,
which keeps the sequences apart. megatron-core's local attention (no TE: the CPU) takes no boundaries,
only an attention mask; the mask built here lets each token see the earlier tokens of its own sequence
and nothing else, which is what THD attention computes. Rotary embeddings depend on relative positions
only, so a sequence scores the same at any offset in a row.

The mask is S x S booleans per row (megatron's convention: True = masked), 16 MiB at S = 4096.
"""

from __future__ import annotations

import torch

# NeMo's packed-SFT keys that describe the boundaries for THD attention (see GPTSFTPackedDataset.collate_fn).
THD_KEYS = ("cu_seqlens", "cu_seqlens_argmin", "max_seqlen", "cu_seqlens_unpadded", "cu_seqlens_unpadded_argmin")


def causal_mask(length: int) -> torch.Tensor:
    """[S, S], True = masked: each position sees itself and the positions before it."""
    return ~torch.tril(torch.ones(length, length, dtype=torch.bool))


def block_causal_mask(starts: list[int], length: int) -> torch.Tensor:
    """[S, S], True = masked: causal within each [starts[i], starts[i + 1]) block, nothing across blocks.
    ``starts`` begins with 0 and ends with ``length``; repeated values (empty blocks) are allowed."""
    block = torch.repeat_interleave(torch.arange(len(starts) - 1), torch.tensor(starts).diff())
    return causal_mask(length) | (block.unsqueeze(0) != block.unsqueeze(1))


def row_boundaries(batch: dict) -> list[list[int]]:
    """Each row's ``cu_seqlens`` up to its first -1 (``cu_seqlens_argmin``)."""
    ends = batch["cu_seqlens_argmin"].flatten().tolist()
    return [row[:end].tolist() for row, end in zip(batch["cu_seqlens"], ends)]


def with_block_causal_mask(batch: dict) -> dict:
    """A NeMo packed-SFT batch for megatron's local attention: the THD boundaries become the attention mask.

    Without ``cu_seqlens`` NeMo's data and forward steps pass ``attention_mask`` to the model and no
    ``packed_seq_params``, which the local attention would refuse. ``position_ids`` already restart in
    every sequence."""
    length = batch["tokens"].shape[1]
    mask = torch.stack([block_causal_mask(starts, length) for starts in row_boundaries(batch)]).unsqueeze(1)
    return {**{key: value for key, value in batch.items() if key not in THD_KEYS}, "attention_mask": mask}


class BlockCausalCollate:
    """A packed dataset's collate function, followed by :func:`with_block_causal_mask` (picklable, for
    data loader workers)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, items: list[dict]) -> dict:
        return with_block_causal_mask(self.collate(items))
