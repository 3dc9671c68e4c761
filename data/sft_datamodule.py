"""The data module of every SFT and LoRA recipe: NeMo's ``FineTuningDataModule`` reading either record
form (prompt/response or chat) through a chat template, so that an instruct model is fine-tuned in its own
chat format and a base model in plain text.

Each record becomes exactly the ids and loss mask of :meth:`data.sft_records.TrainingFormat.sequence`
(i.e. :func:`data.chat_templates.tokenize_conversation`), served by NeMo's own chat dataset and collate
function. Packed files (``data.packed_sequence_specs=packed(...)``, made by ``python -m data.packing`` with
the same template) are read by NeMo's packed dataset unchanged; its batches go to Transformer Engine's THD
attention as NeMo sends them, or, without TE (the CPU), with a block-diagonal causal mask in place of the
sequence boundaries (:mod:`data.packed_attention`).
"""


import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import torch
from nemo.collections.llm.gpt.data.core import GPTSFTChatDataset
from nemo.collections.llm.gpt.data.fine_tuning import FineTuningDataModule

from common import transformer_engine
from data.chat_templates import prepare_template
from data.packed_attention import BlockCausalCollate
from data.sft_records import AUTO, TrainingFormat


class TemplatedChatDataset(GPTSFTChatDataset):
    """NeMo's chat dataset with each record tokenized by a :class:`TrainingFormat` instead of NeMo's own
    preprocessing (which appends a trained EOS after the conversation and reads one record form only)."""

    def __init__(self, *args, training_format: TrainingFormat, **kwargs):
        self.training_format = training_format
        super().__init__(*args, use_hf_tokenizer_chat_template=True, **kwargs)
        self.template = prepare_template(training_format.template, self.tokenizer.tokenizer)

    def _process_example(self, example: dict) -> dict:
        # The launcher checked every record's form before training (data.sft_records.detect_form).
        sequence = self.training_format.sequence(example, self.tokenizer.tokenizer, self.template, str(self.file_path))
        # Cut to length here rather than in NeMo's collate, which gives a sample whose answers all lie past
        # max_seq_length a loss mask of all ones (it would train on the prompt); cut here, it adds no loss.
        keep = self.max_seq_length + 1  # the collate drops one token for the shifted labels
        input_ids, mask = sequence.input_ids[:keep], sequence.loss_mask[:keep]
        if not any(mask[1:]):
            self._warn_nothing_to_train()
        # NeMo's context/answer split: the answer is the last trained span onwards.
        context_end = min(len(mask) - mask[::-1].index(0) if 0 in mask else len(mask), self.max_seq_length)
        return {
            "input_ids": torch.LongTensor(input_ids),
            "loss_mask": torch.BoolTensor(mask),
            "context_ids": torch.LongTensor(input_ids[:context_end]),
            "answer_ids": torch.LongTensor(input_ids[context_end:]),
            "metadata": {},
        }

    def _warn_nothing_to_train(self) -> None:
        if not getattr(self, "_warned_nothing_to_train", False):
            self._warned_nothing_to_train = True
            logging.warning(f"{self.file_path}: a record has no answer tokens within the first {self.max_seq_length} "
                            "tokens and adds no loss; raise data.seq_length (and model.config.seq_length) to train on it")


class TemplatedSFTDataModule(FineTuningDataModule):
    """``FineTuningDataModule`` over prompt/response or chat records with a chat template.

    template: ``plain`` (no markup, for base models), ``chatml``, ``llama3_instruct``, ``hf`` (the
        tokenizer's own, if it marks the assistant with ``{% generation %}``) or a template JSON file.
    system_prompt: a system message put before each prompt/response record (chat records keep theirs).
    last_turn_only: train only the final assistant answer of each conversation (default: every answer).
    record_form: ``auto`` (detected from the files before launch), ``prompt_response`` or ``chat``.
    """

    def __init__(
        self,
        dataset_root: str | Path,
        seq_length: int = 2048,
        tokenizer=None,
        micro_batch_size: int = 4,
        global_batch_size: int = 8,
        rampup_batch_size: Optional[list[int]] = None,
        seed: int = 1234,
        memmap_workers: int = 1,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        packed_sequence_specs=None,
        dataset_kwargs: Optional[dict[str, Any]] = None,
        template: str = "plain",
        system_prompt: Optional[str] = None,
        last_turn_only: bool = False,
        record_form: str = AUTO,
    ):
        super().__init__(
            dataset_root, seq_length, tokenizer, micro_batch_size, global_batch_size, rampup_batch_size, seed,
            memmap_workers, num_workers, pin_memory, persistent_workers, packed_sequence_specs, dataset_kwargs,
        )
        self.training_format = TrainingFormat(template, system_prompt, last_turn_only)
        self.record_form = record_form

    @lru_cache
    def _create_dataset(self, path, pack_metadata_path=None, is_test=False, **kwargs):
        if Path(path).suffix == ".npy":  # packed by python -m data.packing: already tokenized
            dataset = super()._create_dataset(path, pack_metadata_path, is_test, **kwargs)
            if not transformer_engine.is_installed():
                # megatron's local attention refuses THD boundaries (packed_seq_params): it gets them as a mask.
                # NeMo's loader takes `dataset.collate_fn`, so the instance attribute is the one hook it reads.
                dataset.collate_fn = BlockCausalCollate(dataset.collate_fn)
            return dataset
        return TemplatedChatDataset(
            file_path=str(path),
            tokenizer=self.tokenizer,
            max_seq_length=self.seq_length,
            memmap_workers=self.memmap_workers,
            seed=self.seed,
            is_test=is_test,
            training_format=self.training_format,
            **kwargs,
        )
