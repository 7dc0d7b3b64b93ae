"""Recovery training data: Alpaca-style instructions or raw text, tokenized, and packed into fixed-length blocks.

Instruction records use Stanford Alpaca's prompt template (as Shortened LLaMA's LoRA retraining, which follows
alpaca-lora). By default only the response tokens are supervised (``train_on_inputs=False``, their default); the
prompt tokens get label ``-100``. Packing concatenates the examples (each ending with EOS) and cuts the stream into
``block_size`` blocks, carrying the labels along, so no compute is spent on padding.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..calibration import SELF_GENERATED
from ..data import iter_jsonl, read_documents
from ..errors import ConfigError, DataError, DataNotFoundError

logger = logging.getLogger(__name__)

__all__ = [
    "ALPACA_PROMPT",
    "ALPACA_PROMPT_WITH_INPUT",
    "IGNORE_INDEX",
    "TokenizedExample",
    "PackedDataset",
    "ExampleDataset",
    "PadCollator",
    "format_alpaca",
    "load_instruction_records",
    "tokenize_instructions",
    "tokenize_texts",
    "pack_examples",
    "build_recovery_dataset",
]

DEFAULT_SELF_SEQUENCES = 256
"""Sequences generated for ``build_recovery_dataset("self", ...)`` when ``max_examples`` is not given."""
IGNORE_INDEX = -100
"""Label of tokens that do not count in the loss."""

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
"""Stanford Alpaca's prompt for records without an ``input``."""

ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    "response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
"""Stanford Alpaca's prompt for records with an ``input``."""


@dataclass
class TokenizedExample:
    """One tokenized example.

    Args:
        input_ids: Token ids.
        labels: Same length; ``-100`` where the token is not supervised.
    """

    input_ids: list[int]
    labels: list[int]


def format_alpaca(record: dict[str, Any]) -> tuple[str, str]:
    """Splits an Alpaca record into its prompt and its response.

    Args:
        record: ``{"instruction": ..., "input": ... (optional), "output": ...}``.

    Returns:
        ``(prompt, response)``.

    Raises:
        ValueError: If ``instruction`` or ``output`` is missing or not a string.
    """
    instruction, output = record.get("instruction"), record.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str):
        raise DataError(f"An Alpaca record needs string `instruction` and `output` fields, got keys {sorted(record)}.")
    extra = record.get("input") or ""
    if extra:
        return ALPACA_PROMPT_WITH_INPUT.format(instruction=instruction, input=extra), output
    return ALPACA_PROMPT.format(instruction=instruction), output


def load_instruction_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads Alpaca-format records from a ``.json`` list or a ``.jsonl`` file.

    Args:
        path: The file.

    Returns:
        The records (each validated by :func:`format_alpaca`).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not valid JSON, not a list of records, or a record lacks the Alpaca fields.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Instruction data {str(path)!r} does not exist.")
    if path.suffix == ".jsonl":
        records = [record for _, record in iter_jsonl(path)]
    else:
        with open(path, encoding="utf-8") as handle:
            try:
                records = json.load(handle)
            except json.JSONDecodeError as err:
                raise DataError(f"{str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{str(path)!r} must hold a list of {{instruction, input, output}} records.")
    for number, record in enumerate(records):
        try:
            format_alpaca(record)
        except ValueError as err:
            raise DataError(f"{str(path)!r} record {number}: {err}") from err
    return records


def _eos_id(tokenizer) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise DataError("The tokenizer has no EOS token; recovery data needs one to separate examples.")
    return int(eos)


def tokenize_instructions(
    records: Sequence[dict[str, Any]], tokenizer, train_on_inputs: bool = False
) -> list[TokenizedExample]:
    """Tokenizes Alpaca records: prompt (with the tokenizer's special prefix, e.g. BOS) + response + EOS.

    Prompt and response are tokenized separately so the label boundary is exact.

    Args:
        records: Alpaca records.
        tokenizer: The model's tokenizer.
        train_on_inputs: Supervise the prompt tokens too (Shortened LLaMA's default: ``False``).

    Returns:
        One example per record.
    """
    eos = _eos_id(tokenizer)
    examples = []
    for record in records:
        prompt, response = format_alpaca(record)
        prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        response_ids = [*tokenizer(response, add_special_tokens=False)["input_ids"], eos]
        prompt_labels = prompt_ids if train_on_inputs else [IGNORE_INDEX] * len(prompt_ids)
        examples.append(TokenizedExample(prompt_ids + response_ids, prompt_labels + response_ids))
    return examples


def tokenize_texts(texts: Sequence[str], tokenizer) -> list[TokenizedExample]:
    """Tokenizes raw documents (continued pretraining): every token supervised, EOS after each document.

    Args:
        texts: The documents.
        tokenizer: The model's tokenizer.

    Returns:
        One example per non-empty document.
    """
    eos = _eos_id(tokenizer)
    examples = []
    for text in texts:
        if not text.strip():
            continue
        ids = [*tokenizer(text, add_special_tokens=True)["input_ids"], eos]
        examples.append(TokenizedExample(ids, list(ids)))
    return examples


class PackedDataset(Dataset):
    """Fixed-length blocks of packed examples (``input_ids`` and ``labels``, both ``LongTensor[block_size]``).

    Args:
        input_ids: ``LongTensor[num_blocks, block_size]``.
        labels: Same shape, ``-100`` where not supervised.
    """

    def __init__(self, input_ids: torch.Tensor, labels: torch.Tensor):
        if input_ids.shape != labels.shape or input_ids.dim() != 2:
            raise DataError(f"Packed ids {tuple(input_ids.shape)} and labels {tuple(labels.shape)} must match, 2-D.")
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}

    @property
    def num_supervised_tokens(self) -> int:
        """Tokens that count in the loss."""
        return int((self.labels != IGNORE_INDEX).sum())


class ExampleDataset(Dataset):
    """Unpacked examples (one per record, truncated to ``max_length``); batch them with :class:`PadCollator`."""

    def __init__(self, examples: Sequence[TokenizedExample], max_length: int):
        self.examples = [TokenizedExample(e.input_ids[:max_length], e.labels[:max_length]) for e in examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels}


class PadCollator:
    """Right-pads variable-length examples: ``pad_token_id`` for ids, ``-100`` for labels, and an attention mask.

    Args:
        pad_token_id: Id used for padding (the tokenizer's pad token, else its EOS).
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            ids[row, :n] = torch.as_tensor(feature["input_ids"])
            labels[row, :n] = torch.as_tensor(feature["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack_examples(examples: Sequence[TokenizedExample], block_size: int) -> PackedDataset:
    """Concatenates examples and cuts the stream into ``block_size`` blocks (the incomplete tail is dropped).

    Blocks without any supervised token are dropped too (they would give a 0/0 loss).

    Args:
        examples: Tokenized examples, in order.
        block_size: Tokens per block.

    Returns:
        The packed blocks.

    Raises:
        ValueError: If ``block_size`` < 2 or the data is shorter than one block.
    """
    if block_size < 2:
        raise ConfigError(f"`block_size` must be at least 2, got {block_size}.")
    ids = [t for e in examples for t in e.input_ids]
    labels = [t for e in examples for t in e.labels]
    num_blocks = len(ids) // block_size
    if num_blocks == 0:
        raise DataError(f"The recovery data has {len(ids)} tokens, fewer than one block of {block_size}.")
    ids_tensor = torch.tensor(ids[: num_blocks * block_size], dtype=torch.long).view(num_blocks, block_size)
    labels_tensor = torch.tensor(labels[: num_blocks * block_size], dtype=torch.long).view(num_blocks, block_size)
    supervised = (labels_tensor != IGNORE_INDEX).any(dim=1)
    if not bool(supervised.all()):
        logger.info("Dropping %d packed blocks without supervised tokens.", int((~supervised).sum()))
    logger.info("Packed %d tokens into %d blocks of %d.", len(ids), int(supervised.sum()), block_size)
    return PackedDataset(ids_tensor[supervised], labels_tensor[supervised])


def _looks_like_instructions(path: Path) -> bool:
    if path.suffix not in (".json", ".jsonl"):
        return False
    with open(path, encoding="utf-8") as handle:
        head = handle.read(4096)
    return '"instruction"' in head


def self_generated_dataset(teacher, tokenizer, num_sequences: int, block_size: int, seed: int = 0) -> PackedDataset:
    """Data-free recovery data: ``num_sequences`` sequences of ``block_size`` tokens sampled from the dense model.

    The same seeded ancestral sampler as ``"self"`` calibration (:func:`optimum_depth.prepare_calibration`): each
    sequence starts from BOS and is sampled at temperature 1 with a KV cache.

    Args:
        teacher: The dense model (the text it generates is what the pruned model is trained on).
        tokenizer: Its tokenizer (for the BOS token).
        num_sequences: Sequences to generate.
        block_size: Tokens per sequence.
        seed: Sampling seed.

    Returns:
        The packed dataset (every token supervised).
    """
    from ..calibration import prepare_calibration

    if num_sequences < 1 or block_size < 2:
        raise ConfigError(f"Need num_sequences >= 1 and block_size >= 2, got {num_sequences} and {block_size}.")
    data = prepare_calibration(
        "self", tokenizer, model=teacher, num_samples=num_sequences, seq_len=block_size, seed=seed
    )
    return PackedDataset(data.input_ids, data.input_ids.clone())


def build_recovery_dataset(
    source: str | os.PathLike | Sequence[str] | Sequence[dict[str, Any]],
    tokenizer,
    block_size: int = 256,
    packing: bool = True,
    data_format: str = "auto",
    train_on_inputs: bool = False,
    max_examples: int | None = None,
    teacher: Any = None,
) -> PackedDataset | ExampleDataset:
    """Builds a training dataset for recovery from instructions, raw text, or the dense model's own text.

    Args:
        source: A ``.json``/``.jsonl`` file of Alpaca records, a text file or directory (``read_documents``), a list
            of Alpaca records, a list of documents, or ``"self"``: ``max_examples`` (default 256) sequences of
            ``block_size`` tokens generated by ``teacher`` (data-free recovery, see :func:`self_generated_dataset`).
        tokenizer: The model's tokenizer.
        block_size: Packed block length, or the truncation length without packing (Shortened LLaMA: 256).
        packing: Pack into fixed blocks (``True``) or keep one padded example per record (as alpaca-lora does).
        data_format: ``"alpaca"``, ``"text"`` or ``"auto"`` (Alpaca when records have an ``instruction`` field).
        train_on_inputs: Instructions only: also supervise the prompt tokens.
        max_examples: Use only the first this many records/documents (``"self"``: sequences to generate).
        teacher: The dense model, for ``source="self"``.

    Returns:
        A :class:`PackedDataset` or an :class:`ExampleDataset` (batch it with :class:`PadCollator`).

    Raises:
        ValueError: On an unknown format or unusable data.
    """
    if data_format not in ("auto", "alpaca", "text"):
        raise ConfigError(f"`data_format` must be 'auto', 'alpaca' or 'text', got {data_format!r}.")
    if isinstance(source, str) and source == SELF_GENERATED:
        if teacher is None:
            raise ConfigError("Recovery data 'self' is generated by the dense model: pass `teacher=`.")
        return self_generated_dataset(teacher, tokenizer, max_examples or DEFAULT_SELF_SEQUENCES, block_size)
    records: list[dict[str, Any]] | None = None
    texts: list[str] | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        is_alpaca = data_format == "alpaca" or (
            data_format == "auto" and path.is_file() and _looks_like_instructions(path)
        )
        if is_alpaca:
            records = load_instruction_records(path)
        else:
            texts = read_documents(path)
    elif source and all(isinstance(item, dict) for item in source):
        if data_format == "text":
            raise DataError("`data_format='text'` needs documents (strings), got records.")
        records = [dict(item) for item in source]  # type: ignore[arg-type]
    elif source and all(isinstance(item, str) for item in source):
        if data_format == "alpaca":
            raise DataError("`data_format='alpaca'` needs records, got strings.")
        texts = [str(item) for item in source]
    else:
        raise DataError("Recovery data must be a file path, a non-empty list of Alpaca records, or of strings.")
    if max_examples is not None:
        records = records[:max_examples] if records is not None else None
        texts = texts[:max_examples] if texts is not None else None
    if records is not None:
        examples = tokenize_instructions(records, tokenizer, train_on_inputs=train_on_inputs)
    else:
        examples = tokenize_texts(texts or [], tokenizer)
    if not examples:
        raise DataError("The recovery data holds no usable example.")
    if packing:
        return pack_examples(examples, block_size)
    return ExampleDataset(examples, max_length=block_size)
