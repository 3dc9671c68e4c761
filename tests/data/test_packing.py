"""data.packing: bin-packing invariants, context-parallel padding, NeMo's packed dataset reading our .npy."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import fiddle as fdl

from data import chat_templates, packing, sft
from recipes import factories
from data.chat_templates import TokenizedSequence
from data.core.errors import BadLinePolicy, DataError
from common.errors import UserError
from data.core.tokenizer import load_hf_tokenizer

REPO = Path(__file__).resolve().parents[2]
TINY_TOKENIZER = REPO / "models" / "tokenizers" / "tiny"
EXAMPLES = REPO / "data" / "sft_examples" / "prompt_response.jsonl"


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return load_hf_tokenizer(TINY_TOKENIZER)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    """The shipped examples converted to a NeMo dataset_root (messages records)."""
    root = tmp_path_factory.mktemp("sft_root")
    argv = ["convert", "--input", str(EXAMPLES), "--output-dir", str(root), "--output-format", "messages"]
    assert sft.main(argv + ["--val-fraction", "0.1"]) == 0
    return root


def located(lengths, mask_every=3) -> list[packing.LocatedSequence]:
    """Synthetic sequences whose ids encode (sequence number, position) so they can be traced."""
    sequences = []
    for number, length in enumerate(lengths):
        ids = [number * 10_000 + position for position in range(length)]
        mask = [int(position % mask_every == 0) for position in range(length)]
        sequences.append(packing.LocatedSequence(f"x.jsonl:{number + 1}", TokenizedSequence(ids, mask), length - 1))
    return sequences


def unpack(bins: list[dict]) -> list[tuple[list[int], list[int]]]:
    pieces = []
    for packed in bins:
        bounds = packed["seq_start_id"] + [len(packed["input_ids"])]
        for start, end in zip(bounds, bounds[1:]):
            pieces.append((packed["input_ids"][start:end], packed["loss_mask"][start:end]))
    return pieces


# -------------------------------------------------------------------------------------------- packing


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_fit_decreasing_places_every_item_once_within_capacity(seed):
    rng = random.Random(seed)
    capacity = 512
    costs = [rng.choice([rng.randint(0, 60), rng.randint(1, capacity)]) for _ in range(3000)]
    bins = packing.best_fit_decreasing(costs, capacity)
    assert Counter(i for members in bins for i in members) == Counter(range(len(costs)))
    assert all(sum(costs[i] for i in members) <= capacity for members in bins)
    lower_bound = -(-sum(costs) // capacity)
    assert len(bins) <= 1.05 * lower_bound + 1  # tight: BFD is within 11/9 OPT, random data far better


def test_best_fit_decreasing_scales_to_200k_items():
    rng = random.Random(42)
    costs = [rng.randint(1, 2048) for _ in range(200_000)]
    started = time.perf_counter()
    bins = packing.best_fit_decreasing(costs, 4096)
    print(f"best_fit_decreasing: 200k items in {time.perf_counter() - started:.2f}s, {len(bins)} bins")
    assert sum(len(members) for members in bins) == len(costs)
    assert all(sum(costs[i] for i in members) <= 4096 for members in bins)
    assert len(bins) <= 1.01 * sum(costs) / 4096 + 1


def test_best_fit_decreasing_rejects_oversized_item():
    with pytest.raises(ValueError, match="cost 9 > capacity 8"):
        packing.best_fit_decreasing([3, 9], 8)


def test_pack_keeps_sequences_whole_and_reports_fill():
    rng = random.Random(7)
    sequences = located([rng.randint(2, 200) for _ in range(500)])
    result = packing.pack(sequences, 256)
    pieces = unpack(result.bins)
    originals = {tuple(s.sequence.input_ids): s.sequence.loss_mask for s in sequences}
    assert sorted(tuple(ids) for ids, _ in pieces) == sorted(originals)  # each exactly once, none split
    for ids, mask in pieces:
        assert mask == originals[tuple(ids)][1:] + [0]  # label-aligned, as NeMo's fill_packing_strategy
    inputs_per_bin = [len(b["input_ids"]) - len(b["seq_start_id"]) for b in result.bins]
    assert max(inputs_per_bin) <= 256
    real = sum(len(s.sequence.input_ids) - 1 for s in sequences)
    assert result.summary == (
        f"packed 500 sequences into {len(result.bins)} bins, {100 * real / (len(result.bins) * 256):.1f}% of tokens are real"
    )
    assert result.metadata == {
        "dataset_max_seqlen": max(len(s.sequence.input_ids) - 1 for s in sequences),
        "max_samples_per_bin": max(len(b["seq_start_id"]) for b in result.bins),
        "packing_factor": round(500 / len(result.bins), 2),
        "packing_efficiency": round(sum(inputs_per_bin) / len(result.bins) / 256 * 100, 2),
        "pack_size": 256,
        "min_packed_seqlen": min(inputs_per_bin),
    }


@pytest.mark.parametrize("context_parallel_size", [2, 4])
def test_context_parallel_padding_makes_every_segment_a_multiple(context_parallel_size):
    multiple = 2 * context_parallel_size
    rng = random.Random(context_parallel_size)
    sequences = []
    for item in located([rng.randint(2, 90) for _ in range(200)]):
        padded = packing.pad_for_context_parallel(item.sequence, multiple, pad_id=-1)
        sequences.append(packing.LocatedSequence(item.where, padded, item.real_tokens))
    result = packing.pack(sequences, 128)
    for ids, mask in unpack(result.bins):
        assert (len(ids) - 1) % multiple == 0
        padding = ids.count(-1)
        assert padding < multiple and all(m == 0 for m in mask[len(ids) - padding - 1 :])
    real = sum(s.real_tokens for s in sequences)
    assert f"{100 * real / (len(result.bins) * 128):.1f}% of tokens are real" in result.summary


def test_too_long_sequence_errors_with_line_or_is_truncated():
    long = TokenizedSequence(list(range(40)), [1] * 40)
    with pytest.raises(DataError, match=r"data.jsonl:7: sequence has 40 tokens .* --truncate"):
        packing.fit_to_pack_size(long, 32, 1, truncate=False, where="data.jsonl:7")
    cut = packing.fit_to_pack_size(long, 30, 4, truncate=True, where="data.jsonl:7")
    assert len(cut.input_ids) == 29 and cut.input_ids == list(range(29))  # 28 inputs: a multiple of 4 <= 30


# ------------------------------------------------------------------------------------ CLI and NeMo


def run_cli(dataset_root: Path, out: Path, *extra: str) -> int:
    return packing.main(
        ["--train", str(dataset_root / "training.jsonl"), "--validation", str(dataset_root / "validation.jsonl"),
         "--tokenizer", str(TINY_TOKENIZER), "--template", "chatml", "--pack-size", "256",
         "--output-dir", str(out), *extra]
    )  # fmt: skip


def test_cli_writes_npy_and_metadata_reproducibly(dataset_root, tmp_path, capsys, tiny_tokenizer):
    out = tmp_path / "packed"
    assert run_cli(dataset_root, out, "--context-parallel-size", "2") == 0
    report = capsys.readouterr().out
    assert "training: packed" in report and "% of tokens are real" in report
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(files) == {"training_256.npy", "validation_256.npy", "256_metadata.jsonl"}
    assert run_cli(dataset_root, out, "--context-parallel-size", "2") == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files

    metadata = json.loads(files["256_metadata.jsonl"])
    assert [m["pack_size"] for m in metadata] == [256, 256]
    bins = np.load(out / "training_256.npy", allow_pickle=True)
    assert sum(len(b["seq_start_id"]) for b in bins) == sum(1 for _ in open(dataset_root / "training.jsonl"))
    template = chat_templates.load_template("chatml")
    first = json.loads(open(dataset_root / "training.jsonl").readline())
    expected = chat_templates.tokenize_conversation(first["messages"], tiny_tokenizer, template).input_ids
    pieces = [ids for ids, _ in unpack(list(bins))]
    assert any(ids[: len(expected)] == expected and (len(ids) - 1) % 4 == 0 for ids in pieces)


def test_cli_long_sequence_error_names_line(dataset_root, tmp_path, capsys):
    assert run_cli(dataset_root, tmp_path, "--pack-size", "16") == 2
    assert f"{dataset_root / 'training.jsonl'}:1: sequence has" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.npy"))
    assert run_cli(dataset_root, tmp_path / "cut", "--pack-size", "16", "--truncate") == 0
    assert "truncated" in capsys.readouterr().out


def test_tokenize_file_bad_lines(tmp_path, tiny_tokenizer):
    path = tmp_path / "t.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"input": "a", "output": "b"}\n')
    template = chat_templates.load_template("chatml")
    with pytest.raises(DataError, match=r"t.jsonl:1: .*last message must be from the assistant"):
        packing.tokenize_file(str(path), tiny_tokenizer, template, 64, 1, False, BadLinePolicy())
    policy = BadLinePolicy(skip=True)
    sequences, _ = packing.tokenize_file(str(path), tiny_tokenizer, template, 64, 1, False, policy)
    assert len(sequences) == 1 and len(policy.skipped) == 1
    path.write_text("\n")
    with pytest.raises(DataError, match="no records to pack"):
        packing.tokenize_file(str(path), tiny_tokenizer, template, 64, 1, False, BadLinePolicy())


@pytest.mark.parametrize("pad_cu_seqlens", [False, True])
def test_recipes_datamodule_reads_packed_files(dataset_root, tmp_path, tiny_tokenizer, pad_cu_seqlens):
    from nemo.collections.common.tokenizers import AutoTokenizer

    from data.sft_datamodule import TemplatedSFTDataModule

    out = tmp_path / "packed"
    assert run_cli(dataset_root, out) == 0
    datamodule = TemplatedSFTDataModule(
        template="chatml",
        dataset_root=dataset_root,
        seq_length=256,
        tokenizer=AutoTokenizer(str(TINY_TOKENIZER)),
        micro_batch_size=1,
        global_batch_size=2,
        packed_sequence_specs=fdl.build(factories.packed(str(out), 256, pad_cu_seqlens=pad_cu_seqlens)),
        dataset_kwargs={"pad_to_max_length": True} if pad_cu_seqlens else None,
    )
    datamodule.prepare_data()  # our files exist, so NeMo must not re-pack them
    assert datamodule.train_path_packed == out / "training_256.npy"
    dataset = datamodule._create_dataset(
        datamodule.train_path_packed, pack_metadata_path=datamodule.pack_metadata, **datamodule.dataset_kwargs
    )
    batch = dataset.collate_fn([dataset[0]])
    tokens, labels, loss_mask = batch["tokens"][0], batch["labels"][0], batch["loss_mask"][0]
    assert tokens.shape == labels.shape == loss_mask.shape and tokens.shape[0] <= 256
    assert_sequences_kept_apart(batch, dataset[0]["seq_boundaries"])

    # NeMo's mask selects, in the labels, exactly the assistant answers + <|im_end|> of the bin
    bin_ids = dataset[0]["input_ids"]
    starts = dataset[0]["seq_boundaries"]
    answers = []
    for start, end in zip(starts, starts[1:]):
        messages = next(m for m in conversations_by_ids(dataset_root, tiny_tokenizer) if m[0] == tuple(bin_ids[start:end]))[1]
        answers.append(messages[-1]["content"] + "<|im_end|>")
    trained = tiny_tokenizer.decode([int(t) for t, m in zip(labels, loss_mask) if m], skip_special_tokens=False)
    assert trained == "".join(answers)
    assert (out / "validation_256.npy").exists()
    assert len(datamodule._create_dataset(datamodule.validation_path_packed, pack_metadata_path=datamodule.pack_metadata,
                                          is_test=True, **datamodule.dataset_kwargs)) > 0  # fmt: skip


def input_starts(seq_boundaries: list[int]) -> list[int]:
    """Where each sequence of a packed row starts among the model inputs: L stored tokens give L - 1 inputs."""
    return [start - number for number, start in enumerate(seq_boundaries)]


def assert_sequences_kept_apart(batch: dict, seq_boundaries: list[int]) -> None:
    """With Transformer Engine, NeMo's THD boundaries; without it (the CPU), the same boundaries as a
    block-diagonal causal mask, the padding at the end of the row a block of its own."""
    import torch

    from common import transformer_engine
    from data.packed_attention import block_causal_mask

    inputs = input_starts(seq_boundaries)
    length = batch["tokens"].shape[1]
    starts = inputs + ([length] if inputs[-1] < length else [])
    if transformer_engine.is_installed():
        assert batch["cu_seqlens"][0, : len(starts)].tolist() == starts
    else:
        assert "cu_seqlens" not in batch and "cu_seqlens_argmin" not in batch and "max_seqlen" not in batch
        assert torch.equal(batch["attention_mask"], block_causal_mask(starts, length)[None, None])


def conversations_by_ids(dataset_root: Path, tokenizer):
    template = chat_templates.load_template("chatml")
    for line in open(dataset_root / "training.jsonl"):
        messages = json.loads(line)["messages"]
        yield tuple(chat_templates.tokenize_conversation(messages, tokenizer, template).input_ids), messages


def test_packed_chat_data_launch_is_built_and_validated(dataset_root, tmp_path, nemo):
    """A missing packed file is refused before launch, a present one passes (the training itself:
    tests/test_training.py::test_tiny_sft_learns_packed_multi_turn_chat_on_the_cpu)."""
    from launcher import data_files, session

    out = tmp_path / "packed"
    overrides = ["data.template=chatml", f"data.dataset_root={dataset_root}", "data.micro_batch_size=1",
                 "data.seq_length=256", "model.config.seq_length=256",
                 f"data.packed_sequence_specs=packed(directory={out},size=256)"]
    prepared = session.prepare("tiny_llama_sft", overrides)
    with pytest.raises(UserError, match="training_256.npy does not exist .python -m data.packing"):
        data_files.require(prepared.config.data)
    assert run_cli(dataset_root, out) == 0
    data_files.require(prepared.config.data)
    assert prepared.config.data.packed_sequence_specs.packed_train_data_path == str(out / "training_256.npy")


# ------------------------------------------------------------------ packed rows on the CPU (no Transformer Engine)

CHAT_SFT = REPO / "data" / "sft_examples" / "chat_sft"


@pytest.fixture(scope="module")
def packed_chat(tmp_path_factory):
    """The shipped multi-turn chat data (a copy) and its bins of 256 tokens under ChatML."""
    root = tmp_path_factory.mktemp("chat_sft")
    for split in ("training", "validation"):
        (root / f"{split}.jsonl").write_bytes((CHAT_SFT / f"{split}.jsonl").read_bytes())
    assert packing.main(["--train", str(root / "training.jsonl"), "--validation", str(root / "validation.jsonl"),
                         "--tokenizer", str(TINY_TOKENIZER), "--template", "chatml", "--pack-size", "256",
                         "--output-dir", str(root / "packed")]) == 0  # fmt: skip
    return root


def chat_datamodule(root: Path, packed: bool):
    from nemo.collections.common.tokenizers import AutoTokenizer

    from data.sft_datamodule import TemplatedSFTDataModule

    specs = fdl.build(factories.packed(str(root / "packed"), 256)) if packed else None
    return TemplatedSFTDataModule(template="chatml", dataset_root=root, seq_length=256, micro_batch_size=1,
                                  tokenizer=AutoTokenizer(str(TINY_TOKENIZER)), packed_sequence_specs=specs)


def tiny_sft_model():
    """tiny_llama_sft's model, randomly initialised on the CPU (weights 10x the usual spread, so that attention
    is far from uniform and a token that sees the wrong context scores visibly differently)."""
    from megatron.core import tensor_parallel

    from recipes import registry
    from runtime import cpu, machine

    from nemo.collections.common.tokenizers import AutoTokenizer

    cpu.enable()
    recipe = registry.build("tiny_llama_sft")
    machine.adapt(recipe)
    config = fdl.build(recipe.model.config)
    config.use_cpu_initialization, config.init_method_std = True, 0.2
    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    return config.configure_model(AutoTokenizer(str(TINY_TOKENIZER))).eval()


def per_token_losses(model, batch: dict):
    import torch

    with torch.no_grad():
        return model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])


def test_packed_rows_score_as_their_sequences_padded(packed_chat, nemo):
    """Without Transformer Engine a packed row carries a block-diagonal causal mask instead of NeMo's THD
    boundaries: each sequence's per-token losses equal those of the same sequence alone in a padded row."""
    import torch

    from conversion.average import single_process_megatron
    from data.packed_attention import THD_KEYS, causal_mask

    data = chat_datamodule(packed_chat, packed=True)
    packed_dataset = data._create_dataset(data.train_path_packed, pack_metadata_path=data.pack_metadata)
    row = next(i for i in range(len(packed_dataset)) if len(packed_dataset[i]["seq_boundaries"]) >= 4)  # 3 sequences
    packed = packed_dataset.collate_fn([packed_dataset[row]])
    length = packed["tokens"].shape[1]
    assert not set(THD_KEYS) & set(packed) and packed["attention_mask"].shape == (1, 1, length, length)
    bounds = packed_dataset[row]["seq_boundaries"]  # in stored tokens
    starts = input_starts(bounds)
    ids = packed_dataset[row]["input_ids"]
    pieces = [list(ids[a:b]) for a, b in zip(bounds, bounds[1:])]

    plain = chat_datamodule(packed_chat, packed=False)
    dataset = plain._create_dataset(plain.train_path)
    position = {tuple(dataset[i]["input_ids"].tolist()): i for i in range(len(dataset))}
    padded = dataset.collate_fn([dataset[position[tuple(piece)]] for piece in pieces])

    with single_process_megatron():
        model = tiny_sft_model()
        packed_losses, padded_losses = per_token_losses(model, packed), per_token_losses(model, padded)
        leaky = per_token_losses(model, {**packed, "attention_mask": causal_mask(length)[None, None]})
    for number, (start, end) in enumerate(zip(starts, starts[1:])):
        span = slice(start, end)
        assert packed["labels"][0, span].tolist() == padded["labels"][number, : end - start].tolist()
        assert packed["loss_mask"][0, span].tolist() == padded["loss_mask"][number, : end - start].tolist()
        torch.testing.assert_close(packed_losses[0, span], padded_losses[number, : end - start], rtol=1e-5, atol=1e-5)
        if number:  # control: with a plain causal mask, later sequences see the earlier ones and score otherwise
            assert (leaky[0, span] - padded_losses[number, : end - start]).abs().max() > 1e-3
