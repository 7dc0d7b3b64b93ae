"""Turning strings, files, datasets, token tensors or the model's own samples into calibration batches.

The default follows Shortened LLaMA (which reuses LLM-Pruner's sampler): ``num_samples`` random documents at least
``seq_len`` tokens long, and a random window of ``seq_len`` tokens from each, seeded. When too few documents are long
enough, the documents are joined and random windows are drawn from the whole stream (SparseGPT); see
:mod:`optimum_depth.calibration_windows` (held-out windows of a fit never overlap the fitted ones).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicCache
from transformers.utils.logging import is_progress_bar_enabled

from .architectures import unwrap_model
from .calibration_windows import sample_windows
from .data import read_documents
from .errors import ConfigError, DataError
from .modeling.transformers_compat import CACHE_KWARG
from .privacy import data_identity

logger = logging.getLogger(__name__)

__all__ = [
    "CalibrationData",
    "CalibrationSettings",
    "SELF_GENERATED",
    "SharedCalibration",
    "prepare_calibration",
    "resolve_calibration",
]

SELF_GENERATED = "self"


@dataclass
class CalibrationData:
    """Token batches used for scoring, and a record of where they came from.

    Args:
        input_ids: ``LongTensor`` of shape ``(num_samples, seq_len)``.
        spec: Provenance (source, number of samples, length, seed), JSON-serialisable.
    """

    input_ids: torch.Tensor
    spec: dict[str, Any] = field(default_factory=dict)

    def batches(self, batch_size: int) -> list[torch.Tensor]:
        """Splits the samples into batches of at most ``batch_size`` rows."""
        return list(torch.split(self.input_ids, batch_size))

    @property
    def num_samples(self) -> int:
        """Number of calibration sequences."""
        return int(self.input_ids.shape[0])


def _tokenize_documents(documents: list[str], tokenizer) -> list[list[int]]:
    if tokenizer is None:
        raise ConfigError("Calibration from text needs a `tokenizer`.")
    return [tokenizer(doc, add_special_tokens=False)["input_ids"] for doc in documents]


def _is_text(source: Any) -> bool:
    """Whether ``source`` is text to tokenize: a file or folder, a list of strings, or a dataset with ``text``."""
    if isinstance(source, str) and source == SELF_GENERATED:
        return False
    if isinstance(source, (str, os.PathLike)):
        return True
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        return True
    return hasattr(source, "column_names") and "text" in getattr(source, "column_names", [])


class _TokenizedText:
    """A text source, read and tokenized on first use only: its documents' token ids and its provenance."""

    def __init__(self, source: Any, tokenizer: Any):
        self.source, self.tokenizer = source, tokenizer
        self._read: tuple[list[list[int]], dict[str, Any]] | None = None

    def documents(self) -> tuple[list[list[int]], dict[str, Any]]:
        """``(token ids of every document, provenance fields of the spec)``."""
        if self._read is None:
            self._read = self._tokenize()
        return self._read

    def _tokenize(self) -> tuple[list[list[int]], dict[str, Any]]:
        source = self.source
        if isinstance(source, (str, os.PathLike)):
            tokens = _tokenize_documents(read_documents(source), self.tokenizer)
            identity = data_identity(source)  # its name, hash and size: never a path of this machine
            return tokens, {"source": identity.pop("name"), **{f"source_{k}": v for k, v in identity.items()}}
        if isinstance(source, list):
            if not any(s.strip() for s in source):
                what = f"{len(source)} strings, all blank" if source else "it is empty"
                raise DataError(f"The calibration list holds no text ({what}).")
            return _tokenize_documents(source, self.tokenizer), {"source": f"list of {len(source)} strings"}
        docs = [str(t) for t in source["text"] if t and str(t).strip()]
        if not docs:
            raise DataError("The calibration dataset's `text` column holds no text.")
        name = getattr(source, "info", None) and source.info.dataset_name
        return _tokenize_documents(docs, self.tokenizer), {"source": f"datasets.Dataset ({name})"}


class SharedCalibration:
    """One calibration source that several steps of a run draw from: text read and tokenized once, each draw made once.

    Scoring and compensation sample the same source with their own sizes and seeds (``criterion="auto"`` its fit and
    held-out sequences, the compensation a few hundred sequences with held-out windows apart); the compensation-aware
    selection draws exactly what the compensation fit draws. Wrapped in this object, the source's text is read and
    tokenized once for all of them, and a draw asked twice (same model, sizes, seed) is made once. Every draw is what
    :func:`prepare_calibration` gives for the source itself. ``DepthPruner.prune`` wraps its source so; pass one to
    :meth:`~optimum_depth.DepthPruner.score` and :meth:`~optimum_depth.DepthPruner.apply` to share across the calls.

    Args:
        source: Any source :func:`prepare_calibration` accepts, except prepared :class:`CalibrationData`.
        tokenizer: Tokenizer for text sources (used for every draw).
    """

    def __init__(self, source: Any, tokenizer: Any = None):
        if isinstance(source, (CalibrationData, SharedCalibration)):
            raise ConfigError(f"A {type(source).__name__} is drawn already; use it as it is.")
        self.source, self.tokenizer = source, tokenizer
        self._text = _TokenizedText(source, tokenizer) if _is_text(source) else None
        self._draws: dict[tuple, CalibrationData] = {}

    def draw(self, model, num_samples: int, seq_len: int, seed: int, add_bos: bool, heldout: int) -> CalibrationData:
        """The draw of these settings for ``model`` (see :func:`prepare_calibration`), made on the first request."""
        key = (id(model), num_samples, seq_len, seed, add_bos, heldout)
        if key not in self._draws:
            self._draws[key] = prepare_calibration(
                self._text or self.source,
                self.tokenizer,
                model=model,
                num_samples=num_samples,
                seq_len=seq_len,
                seed=seed,
                add_bos=add_bos,
                heldout=heldout,
            )
        return self._draws[key]


def _from_tensor(tensor: torch.Tensor, num_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    if tensor.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
        raise DataError(f"Calibration token tensors must be integer token ids, got dtype {tensor.dtype}.")
    if tensor.dim() == 1:
        return sample_windows([tensor.tolist()], num_samples, seq_len, seed, bos=None)
    if tensor.dim() != 2:
        raise DataError(f"Calibration token tensors must be 1-D or 2-D, got shape {tuple(tensor.shape)}.")
    return tensor.long()


def _from_batches(batches: Iterable, num_samples: int) -> torch.Tensor:
    rows: list[torch.Tensor] = []
    for batch in batches:
        ids = batch["input_ids"] if isinstance(batch, dict) else batch
        ids = torch.as_tensor(ids)
        rows.extend(ids if ids.dim() == 2 else ids.unsqueeze(0))
        if len(rows) >= num_samples:
            break
    if not rows:
        raise DataError("The calibration dataloader yielded no batch.")
    lengths = {int(r.shape[-1]) for r in rows}
    if len(lengths) != 1:
        raise DataError(f"Calibration batches must share one sequence length, got {sorted(lengths)}.")
    return torch.stack(rows[:num_samples]).long()


@torch.no_grad()
def _self_generated(model, tokenizer, num_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    if model is None:
        raise ConfigError("Self-generated calibration needs the `model`.")
    config = model.config
    start = getattr(config, "bos_token_id", None)
    if start is None and tokenizer is not None:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        start = 0
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    rows = torch.full((num_samples, seq_len), int(start), dtype=torch.long)
    # Plain ancestral sampling with a KV cache, seeded through our own generator (generate() is not seedable
    # without touching the global RNG).
    cache = DynamicCache(config=config)  # updated in place by every call
    tokens = rows[:, :1].to(device)
    steps = tqdm(
        range(1, seq_len), desc="self-generated calibration", unit="token", disable=not is_progress_bar_enabled()
    )
    for position in steps:
        out = model(input_ids=tokens, use_cache=True, **{CACHE_KWARG: cache})
        probs = torch.softmax(out.logits[:, -1, :].float(), dim=-1).cpu()
        tokens_cpu = torch.multinomial(probs, 1, generator=generator)
        rows[:, position] = tokens_cpu[:, 0]
        tokens = tokens_cpu.to(device)
    return rows


def prepare_calibration(
    source,
    tokenizer=None,
    *,
    model=None,
    num_samples: int = 10,
    seq_len: int = 128,
    seed: int = 0,
    add_bos: bool = True,
    heldout: int = 0,
) -> CalibrationData:
    """Builds calibration batches from any supported source.

    Args:
        source: One of: a list of strings; a path to a ``.txt``/``.jsonl``/``.json`` file or a directory of them; a
            ``datasets.Dataset`` with a ``text`` column; a token-id tensor (2-D used as is, 1-D cut into windows); an
            iterable of batches (``input_ids`` tensors or dicts, e.g. a ``DataLoader``); ``"self"`` for samples
            generated by ``model`` itself; an existing :class:`CalibrationData` (returned unchanged); or a
            :class:`SharedCalibration` (its draw of these settings, made once).
        tokenizer: Tokenizer for text sources (a :class:`SharedCalibration` uses its own).
        model: The model, for ``"self"``.
        num_samples: Number of sequences.
        seq_len: Tokens per sequence.
        seed: Seed of the sampling; same seed, same batches.
        add_bos: Start each text window with the tokenizer's BOS token (when it has one).
        heldout: For text sources: the last ``heldout`` windows share no text with the others (a fit's held-out
            sequences); text too short for that is refused.

    Returns:
        The calibration data with its provenance.
    """
    if isinstance(source, CalibrationData):
        check_token_ids(source.input_ids, model)
        check_sequence_length(int(source.input_ids.shape[-1]), model)
        return source
    if isinstance(source, SharedCalibration):
        return source.draw(model, num_samples, seq_len, seed, add_bos, heldout)
    if num_samples < 1 or seq_len < 2:
        raise ConfigError(f"Need num_samples >= 1 and seq_len >= 2, got {num_samples} and {seq_len}.")
    check_sequence_length(seq_len, model)
    spec: dict[str, Any] = {"num_samples": num_samples, "seq_len": seq_len, "seed": seed}
    bos = getattr(tokenizer, "bos_token_id", None) if add_bos else None
    if isinstance(source, str) and source == SELF_GENERATED:
        ids = _self_generated(model, tokenizer, num_samples, seq_len, seed)
        spec["source"] = "self-generated"
    elif isinstance(source, _TokenizedText) or _is_text(source):
        text = source if isinstance(source, _TokenizedText) else _TokenizedText(source, tokenizer)
        documents, provenance = text.documents()
        ids = sample_windows(documents, num_samples, seq_len, seed, bos, heldout)
        spec.update(provenance)
    elif isinstance(source, torch.Tensor):
        ids = _from_tensor(source, num_samples, seq_len, seed)
        spec.update(source="tensor", num_samples=int(ids.shape[0]), seq_len=int(ids.shape[1]))
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, dict)):
        ids = _from_batches(source, num_samples)
        spec.update(source="batches", num_samples=int(ids.shape[0]), seq_len=int(ids.shape[1]))
    else:
        raise ConfigError(
            f"Unsupported calibration source of type {type(source).__name__}: give strings, a file path, a "
            "datasets.Dataset with a `text` column, token ids, batches, or 'self'."
        )
    check_token_ids(ids, model)
    check_sequence_length(int(ids.shape[1]), model)
    logger.info("Calibration: %s", spec)
    return CalibrationData(input_ids=ids, spec=spec)


def check_token_ids(ids: torch.Tensor, model=None) -> None:
    """Refuses token ids a model cannot embed: negative ones, and ones beyond its vocabulary.

    Args:
        ids: Token ids.
        model: The model whose ``config.vocab_size`` bounds them (optional).

    Raises:
        DataError: Naming the offending id.
    """
    if ids.numel() == 0:
        raise DataError("The calibration data holds no token.")
    smallest, largest = int(ids.min()), int(ids.max())
    if smallest < 0:
        raise DataError(f"Calibration token id {smallest} is negative; token ids start at 0.")
    vocab = getattr(getattr(unwrap_model(model), "config", None), "vocab_size", None) if model is not None else None
    if vocab is not None and largest >= vocab:
        raise DataError(f"Calibration token id {largest} is outside the model's vocabulary ({vocab}).")


def check_sequence_length(seq_len: int, model=None) -> None:
    """Refuses calibration sequences longer than the model's ``max_position_embeddings``.

    Raises:
        ConfigError: Naming both lengths.
    """
    config = getattr(unwrap_model(model), "config", None) if model is not None else None
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and seq_len > limit:
        raise ConfigError(
            f"Calibration sequences of {seq_len} tokens are longer than the model's max_position_embeddings "
            f"({limit}); lower `seq_len`."
        )


class CalibrationSettings(Protocol):
    """The sampling fields shared by :class:`~optimum_depth.DepthPruningConfig` and ``SparsityConfig``."""

    calibration_dataset: str | None
    num_samples: int
    seq_len: int
    seed: int


def resolve_calibration(
    config: CalibrationSettings, model, calibration=None, tokenizer=None
) -> CalibrationData | None:
    """Builds the calibration data a criterion (or a sparsity method) needs from the config's sampling settings.

    Args:
        config: Sampling settings (``calibration_dataset``, ``num_samples``, ``seq_len``, ``seed``).
        model: The model (for self-generated calibration and vocabulary / length checks).
        calibration: Any source accepted by :func:`prepare_calibration`; ``None`` uses ``config.calibration_dataset``.
        tokenizer: Tokenizer for text sources.

    Returns:
        The calibration data, or ``None`` when no source was given.
    """
    source = calibration if calibration is not None else config.calibration_dataset
    if source is None:
        return None
    return prepare_calibration(
        source,
        tokenizer,
        model=unwrap_model(model),
        num_samples=config.num_samples,
        seq_len=config.seq_len,
        seed=config.seed,
    )
