"""DPO and SimPO losses and the sequence log-prob maths they need: pure torch, no NeMo or megatron.

Losses (per pair; pi = policy, ref = reference, y_w chosen, y_l rejected, sigma the logistic function):

* DPO (Rafailov et al. 2023, eq. 7) with conservative label smoothing eps (Mitchell 2023):
  h = beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))],
  loss = -(1 - eps) log sigma(h) - eps log sigma(-h); rewards beta * (log pi - log ref).
* SimPO (Meng et al. 2024, eq. 6): h = beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma,
  loss = -log sigma(h); rewards beta/|y| log pi(y).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class DPOLoss:
    """Direct Preference Optimization; `label_smoothing` > 0 is conservative DPO."""

    needs_reference = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0):
        if beta <= 0:
            raise ValueError(f"DPO beta must be > 0, got {beta}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"DPO label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta, self.label_smoothing = beta, label_smoothing

    def __call__(self, chosen, rejected, chosen_len, rejected_len, ref_chosen, ref_rejected):
        reward_chosen = self.beta * (chosen - ref_chosen)
        reward_rejected = self.beta * (rejected - ref_rejected)
        h = reward_chosen - reward_rejected
        eps = self.label_smoothing
        losses = -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h)
        return losses, reward_chosen.detach(), reward_rejected.detach()


class SimPOLoss:
    """Simple Preference Optimization: length-normalised log-probs, target margin gamma, no reference."""

    needs_reference = False

    def __init__(self, beta: float = 10.0, gamma: float = 3.0):
        if beta <= 0:
            raise ValueError(f"SimPO beta must be > 0, got {beta}")
        self.beta, self.gamma = beta, gamma

    def __call__(self, chosen, rejected, chosen_len, rejected_len, ref_chosen=None, ref_rejected=None):
        reward_chosen = self.beta * chosen / chosen_len
        reward_rejected = self.beta * rejected / rejected_len
        losses = -F.logsigmoid(reward_chosen - reward_rejected - self.gamma)
        return losses, reward_chosen.detach(), reward_rejected.detach()


def sequence_logps(per_token_loss: torch.Tensor, loss_mask: torch.Tensor, segment_ids: torch.Tensor | None = None,
                   sequences: int = 0):
    """Summed log-probs of the masked label tokens per sequence, and the number of those tokens.

    A padded batch holds a sequence per row; a packed one holds `sequences` sequences, numbered by
    `segment_ids` (-1 on the padding, which the mask leaves out)."""
    keep = loss_mask.bool()
    logps, mask = torch.where(keep, -per_token_loss.float(), 0.0), keep.float()
    if segment_ids is None:
        return logps.sum(-1), mask.sum(-1)
    index = segment_ids.clamp(min=0).reshape(-1)
    totals = torch.zeros(2, sequences, device=logps.device)
    return (totals[0].index_add(0, index, logps.reshape(-1)), totals[1].index_add(0, index, mask.reshape(-1)))


def batch_logps(batch: dict, per_token_loss: torch.Tensor):
    """`sequence_logps` of a collated batch, padded or packed: sequences 2i / 2i + 1 are pair i's."""
    segment_ids = batch.get("segment_ids")
    sequences = 2 * batch["pair_index"].numel() if segment_ids is not None else 0
    return sequence_logps(per_token_loss, batch["loss_mask"], segment_ids, sequences)
