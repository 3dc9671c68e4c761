"""Megatron's indexed dataset format (``PREFIX.bin`` + ``PREFIX.idx``), written and inspected with numpy alone.

The bytes are those of megatron-core's ``IndexedDatasetBuilder`` (``megatron/core/datasets/indexed_dataset.py``),
which this module spares its callers from importing (it imports torch): the .bin holds every token back to
back; the .idx holds a header, the token count of each sequence, each sequence's byte offset in the .bin,
and for each document the number of sequences before its end. Here a document is one sequence, or none
when it is empty (it still gets its document entry, as in Megatron-LM's preprocess_data.py).
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# megatron.core.datasets.indexed_dataset.DType: the numeric code of each token dtype in the .idx header.
DTYPE_CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6, np.float32: 7,
               np.uint16: 8}
DTYPE_CODE_OFFSET = len(INDEX_HEADER) + 8  # after the header and the version


def token_dtype(vocab_size: int) -> type[np.integer]:
    """megatron-core's DType.optimal_dtype: uint16 below 65500 tokens (added tokens included), else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


class IndexedDatasetWriter:
    """Appends documents to an open .bin stream and writes the matching .idx at the end."""

    def __init__(self, bin_stream: BinaryIO, dtype: type[np.integer]):
        self.bin_stream = bin_stream
        self.dtype = dtype
        self.document_lengths: list[np.ndarray] = []  # tokens per document, one array per add_documents call

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Documents given as their tokens back to back (already of ``dtype``) and each one's length."""
        assert tokens.dtype == self.dtype and int(lengths.sum()) == tokens.size
        tokens.tofile(self.bin_stream)
        self.document_lengths.append(lengths)

    def write_index(self, idx_stream: BinaryIO) -> None:
        lengths = np.concatenate(self.document_lengths) if self.document_lengths else np.zeros(0, np.int64)
        sequence_lengths = lengths[lengths > 0].astype(np.int32)
        pointers = np.zeros(len(sequence_lengths), dtype=np.int64)
        np.cumsum(sequence_lengths[:-1] * np.int64(np.dtype(self.dtype).itemsize), out=pointers[1:])
        document_indices = np.concatenate([[0], np.cumsum(lengths > 0)]).astype(np.int64)
        idx_stream.write(INDEX_HEADER)
        idx_stream.write(struct.pack("<Q", INDEX_VERSION))
        idx_stream.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
        idx_stream.write(struct.pack("<Q", len(sequence_lengths)))
        idx_stream.write(struct.pack("<Q", len(document_indices)))
        for array in (sequence_lengths, pointers, document_indices):
            idx_stream.write(array.tobytes(order="C"))


def read_token_dtype(idx_path: str) -> type[np.integer]:
    """The token dtype recorded in an .idx header."""
    with open(idx_path, "rb") as stream:
        header = stream.read(DTYPE_CODE_OFFSET + 1)
    if len(header) <= DTYPE_CODE_OFFSET or not header.startswith(INDEX_HEADER):
        raise ValueError(f"{idx_path} is not a Megatron indexed dataset index")
    by_code = {code: dtype for dtype, code in DTYPE_CODES.items()}
    return by_code[header[DTYPE_CODE_OFFSET]]


def largest_token_id(prefix: str) -> int | None:
    """The largest token id in ``prefix.bin`` (None when it holds no token): one memory-mapped pass."""
    dtype = read_token_dtype(prefix + ".idx")
    if os.path.getsize(prefix + ".bin") < np.dtype(dtype).itemsize:
        return None  # numpy cannot map an empty file
    return int(np.memmap(prefix + ".bin", dtype=dtype, mode="r").max())
