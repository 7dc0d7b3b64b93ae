"""Precomputed teacher logits for distillation: the dense model's top-k next-token logits, stored and streamed.

:func:`precompute_teacher_logits` runs the teacher once over a recovery dataset and writes safetensors shards holding,
per sequence and position, the ``k`` largest teacher logits, their token ids, and the log-partition function of the
full vocabulary at the chosen temperature (so the top-k probabilities are exact; the rest of the mass is one extra
bin, see :func:`~.distillation_losses.topk_kd_loss`). :class:`TeacherLogitsDataset` streams them back as training
batches, so training needs no teacher in memory and repeated epochs never pay the teacher forward again.

Layout of the folder: ``teacher_logits.json`` (the index: ``k``, temperature, sequence length, shards, the teacher's
config fingerprint) and ``shard-00000.safetensors``, ... Each shard is written atomically; an interrupted run resumes
at the first missing shard.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers.utils.logging import is_progress_bar_enabled

from ..architectures import config_fingerprint, unwrap_model
from ..errors import ConfigError, DataError, DataNotFoundError
from ..persistence import read_json_object, write_text_atomically
from .distillation_losses import topk_teacher_targets

logger = logging.getLogger(__name__)

__all__ = ["INDEX_NAME", "TeacherLogitsDataset", "precompute_teacher_logits"]

INDEX_NAME = "teacher_logits.json"
FORMAT = "optimum-depth-teacher-logits/1"


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


@torch.no_grad()
def precompute_teacher_logits(
    teacher: nn.Module,
    dataset: Dataset,
    output_dir: str | os.PathLike,
    *,
    k: int = 64,
    temperature: float = 1.0,
    batch_size: int = 4,
    shard_size: int = 256,
) -> Path:
    """Runs the teacher over ``dataset`` once and stores its top-k logits in safetensors shards.

    Args:
        teacher: The frozen dense model.
        dataset: Fixed-length training sequences (items with ``input_ids`` and ``labels``, e.g. a packed
            :func:`~optimum_depth.training.build_recovery_dataset`).
        output_dir: The folder (created; an existing complete run is reused, an interrupted one resumed).
        k: Logits kept per position.
        temperature: The KD temperature the log-partition function is computed for (training must use it).
        batch_size: Sequences per teacher forward.
        shard_size: Sequences per shard.

    Returns:
        The folder.

    Raises:
        ConfigError: On a non-positive ``k``/``temperature``/sizes, or a folder holding another run's logits.
    """
    if k < 1 or temperature <= 0 or batch_size < 1 or shard_size < 1:
        raise ConfigError("`k`, `temperature`, `batch_size` and `shard_size` must be positive.")
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    num = len(dataset)  # type: ignore[arg-type]
    seq_len = int(dataset[0]["input_ids"].shape[-1])
    shard_names = [_shard_name(i) for i in range((num + shard_size - 1) // shard_size)]
    index: dict[str, Any] = {
        "format": FORMAT,
        "k": k,
        "temperature": float(temperature),
        "num_sequences": num,
        "seq_len": seq_len,
        "shard_size": shard_size,
        "shards": shard_names,
        "teacher": config_fingerprint(unwrap_model(teacher).config),
    }
    if (folder / INDEX_NAME).is_file():
        existing = read_json_object(folder / INDEX_NAME, "teacher-logits index")
        if existing != index:
            raise ConfigError(f"{str(folder)!r} holds teacher logits of another run; use an empty folder.")
    write_text_atomically(folder / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    teacher.eval()
    device = next(teacher.parameters()).device
    shards = tqdm(list(enumerate(shard_names)), desc="teacher logits", disable=not is_progress_bar_enabled())
    for number, name in shards:
        if (folder / name).is_file():
            continue  # done by an earlier, interrupted run
        rows = range(number * shard_size, min(num, (number + 1) * shard_size))
        items = [dataset[i] for i in rows]
        input_ids = torch.stack([item["input_ids"] for item in items])
        parts: dict[str, list[torch.Tensor]] = {"values": [], "indices": [], "lse": []}
        for start in range(0, len(items), batch_size):
            logits = teacher(input_ids=input_ids[start : start + batch_size].to(device)).logits
            values, indices, lse = topk_teacher_targets(logits, k, (temperature,))
            parts["values"].append(values.cpu())
            parts["indices"].append(indices.to(torch.int32).cpu())
            parts["lse"].append(lse[float(temperature)].cpu())
        tensors = {
            "input_ids": input_ids,
            "labels": torch.stack([item["labels"] for item in items]),
            "teacher_topk_values": torch.cat(parts["values"]),
            "teacher_topk_indices": torch.cat(parts["indices"]),
            "teacher_logsumexp": torch.cat(parts["lse"]),
        }
        partial = folder / f".{name}.partial"
        save_file(tensors, str(partial), metadata={"format": FORMAT})
        os.replace(partial, folder / name)
    logger.info("Teacher logits of %d sequences (top-%d, T=%s) in %s", num, k, temperature, folder)
    return folder


class TeacherLogitsDataset(Dataset):
    """Streams the sequences and teacher logits written by :func:`precompute_teacher_logits`.

    Each item holds ``input_ids``, ``labels``, ``teacher_topk_values``, ``teacher_topk_indices`` and
    ``teacher_logsumexp``; shards are read lazily, one sequence at a time (the files are memory-mapped).

    Args:
        folder: The folder of a complete run.

    Raises:
        DataNotFoundError: If the index or a shard is missing (an interrupted run: rerun the precomputation).
        DataError: If the index is not a teacher-logits index.
    """

    has_teacher_logits = True

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.index: dict[str, Any] = read_json_object(self.folder / INDEX_NAME, "teacher-logits index")
        if self.index.get("format") != FORMAT:
            raise DataError(f"{str(self.folder / INDEX_NAME)!r} is not a teacher-logits index ({FORMAT}).")
        missing = [name for name in self.index["shards"] if not (self.folder / name).is_file()]
        if missing:
            raise DataNotFoundError(
                f"Teacher-logit shards {missing} are missing in {str(self.folder)!r}; rerun precompute_teacher_logits "
                "to complete them."
            )
        self.temperature = float(self.index["temperature"])
        self.k = int(self.index["k"])
        self._handles: dict[str, Any] = {}

    def __len__(self) -> int:
        return int(self.index["num_sequences"])

    def _shard(self, name: str):
        if name not in self._handles:
            self._handles[name] = safe_open(str(self.folder / name), framework="pt")
        return self._handles[name]

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        if not 0 <= position < len(self):
            raise IndexError(position)
        size = int(self.index["shard_size"])
        shard = self._shard(self.index["shards"][position // size])
        row = position % size
        keys = ("input_ids", "labels", "teacher_topk_values", "teacher_topk_indices", "teacher_logsumexp")
        return {key: shard.get_slice(key)[row] for key in keys}

    def __getstate__(self) -> dict[str, Any]:  # dataloader workers reopen the files
        return {**self.__dict__, "_handles": {}}
