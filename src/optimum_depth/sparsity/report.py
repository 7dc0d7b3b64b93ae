"""What a sparsity run did: per-block and per-layer sparsities, reconstruction errors, and the record on the config.

The record written to ``model.config.sparsity`` (and so to ``config.json``) is plain JSON::

    {"method": "besa", "target": 0.5, "allocation": "row", "structure": "unstructured", "achieved": 0.5,
     "blocks": {"<original block index>": 0.5, ...},
     "layers": {"<original block index>": {"self_attn.q_proj": 0.43, ...}, ...},
     "calibration": {...}, "optimum_depth_version": "...", "history": [<earlier records>]}
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from ..architectures import get_decoder_layers, unwrap_model
from ..constants import SPARSITY_RESULT_NAME
from ..errors import DataError
from ..persistence import JsonRecord
from ..privacy import public_record
from ..provenance import original_layer_indices
from ..version import __version__
from .config import SparsityConfig
from .targets import find_prunable_linears

__all__ = ["BlockReport", "SparsityResult", "measure_weight_sparsity", "record_sparsity"]


@dataclass
class BlockReport:
    """One block of a sparsity run.

    Args:
        block: Original index of the block (its index in the unpruned source model).
        layer_sparsity: Achieved fraction of zeros of each sparsified linear, by name.
        layer_params: Number of weights of each sparsified linear.
        reconstruction: Normalised reconstruction error of the block output after pruning (vs the dense block on the
            same input, over the calibration set); ``None`` when run without calibration data (magnitude).
        initial_reconstruction: BESA: the same error at the starting (uniform) allocation.
        expected_sparsity: BESA: the block's parameter-weighted expected sparsity when learning ended.
        tilt: BESA: the tilt applied to meet the target.
        loss_history: BESA: loss of every optimisation step.
    """

    block: int
    layer_sparsity: dict[str, float]
    layer_params: dict[str, int]
    reconstruction: float | None = None
    initial_reconstruction: float | None = None
    expected_sparsity: float | None = None
    tilt: float | None = None
    loss_history: list[float] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Parameter-weighted achieved sparsity of the block's sparsified linears."""
        total = sum(self.layer_params.values())
        return sum(self.layer_sparsity[n] * self.layer_params[n] for n in self.layer_params) / max(total, 1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockReport:
        """Builds a report from :meth:`SparsityResult.to_dict`'s ``blocks`` entries (the derived ``sparsity`` is
        recomputed).

        Raises:
            DataError: If ``data`` is not a dict, or has unknown fields.
        """
        if not isinstance(data, dict):
            raise DataError(f"A sparsity block report must be a dict, got {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"sparsity"})
        if unknown:
            raise DataError(f"Unknown BlockReport fields {unknown}; expected a subset of {sorted(known)}.")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class SparsityResult(JsonRecord):
    """Everything a :func:`optimum_depth.sparsity.sparsify` run measured.

    Saved as ``sparsity_result.json`` with the library's record conventions (``save_pretrained`` /
    ``from_pretrained``, type and version stamps, see :mod:`optimum_depth.persistence`); files written before those
    conventions (no stamps) load too. A loaded result has no ``model``.

    Args:
        model: The sparsified model (the object passed in, pruned and sparsified in place); ``None`` when loaded
            from a file.
        config: The config that was run.
        blocks: One report per sparsified block, in model order.
        calibration: Provenance of the calibration data (empty for magnitude).
        elapsed_seconds: Wall time of the run (including calibration capture; excluding depth pruning).
    """

    model: nn.Module | None = field(repr=False, compare=False)
    config: SparsityConfig
    blocks: list[BlockReport]
    calibration: dict[str, Any]
    elapsed_seconds: float

    file_name: ClassVar[str] = SPARSITY_RESULT_NAME
    required_keys: ClassVar[tuple[str, ...]] = ("config", "blocks")
    derived_keys: ClassVar[tuple[str, ...]] = ("achieved_sparsity",)

    @property
    def achieved_sparsity(self) -> float:
        """Parameter-weighted achieved sparsity over every sparsified linear of the model."""
        total = sum(sum(b.layer_params.values()) for b in self.blocks)
        zeros = sum(b.sparsity * sum(b.layer_params.values()) for b in self.blocks)
        return zeros / max(total, 1)

    def record(self) -> dict[str, Any]:
        """The JSON record stored as ``model.config.sparsity`` (see the module docstring)."""
        config = self.config
        return {
            "method": config.method,
            "target": config.sparsity,
            "allocation": config.allocation if config.method == "besa" else "uniform",
            "structure": config.structure,
            "achieved": round(self.achieved_sparsity, 6),
            "blocks": {str(b.block): round(b.sparsity, 6) for b in self.blocks},
            "layers": {str(b.block): {n: round(s, 6) for n, s in b.layer_sparsity.items()} for b in self.blocks},
            "calibration": dict(self.calibration),
            "optimum_depth_version": __version__,
        }

    def _fields_to_dict(self) -> dict[str, Any]:
        """The result without the model; per-block and overall sparsities are written for readers (derived)."""
        return {
            "config": public_record(self.config.to_dict()),  # a calibration folder by its name, not its path
            "blocks": [asdict(b) | {"sparsity": b.sparsity} for b in self.blocks],
            "calibration": dict(self.calibration),
            "elapsed_seconds": self.elapsed_seconds,
            "achieved_sparsity": self.achieved_sparsity,
        }

    @classmethod
    def _fields_from_dict(cls, data: dict[str, Any]) -> SparsityResult:
        blocks = data["blocks"]
        if not isinstance(blocks, list):
            raise DataError(f"`blocks` must be a list of block reports, got {type(blocks).__name__}.")
        return cls(
            model=None,
            config=SparsityConfig.from_dict(data["config"]),
            blocks=[BlockReport.from_dict(block) for block in blocks],
            calibration=dict(data.get("calibration") or {}),
            elapsed_seconds=float(data.get("elapsed_seconds", 0.0)),
        )

    def plot(self, path: str | os.PathLike, title: str | None = None) -> str:
        """Draws the learned sparsity per layer (see :func:`optimum_depth.sparsity.plot_layer_sparsity`)."""
        from .plot import plot_layer_sparsity

        return plot_layer_sparsity(self.record(), path, title=title)


def record_sparsity(config, record: dict[str, Any]) -> None:
    """Stores ``record`` as ``config.sparsity``, keeping earlier records under ``history``.

    Args:
        config: A model config, modified in place.
        record: From :meth:`SparsityResult.record`.
    """
    previous = getattr(config, "sparsity", None)
    if isinstance(previous, dict):
        history = list(previous.get("history", []))
        history.append({k: v for k, v in previous.items() if k != "history"})
        record = {**record, "history": history}
    config.sparsity = record


@torch.no_grad()
def measure_weight_sparsity(model: nn.Module, target_modules: list[str] | None = None) -> dict[int, dict[str, float]]:
    """Fraction of exact zeros in each attention/MLP linear weight of each block.

    Args:
        model: A causal LM of a supported family.
        target_modules: Optional restriction (as in :class:`SparsityConfig`).

    Returns:
        ``{original block index: {linear name: fraction of zeros}}``.
    """
    inner = unwrap_model(model)
    original = original_layer_indices(inner.config)
    measured: dict[int, dict[str, float]] = {}
    for position, block in enumerate(get_decoder_layers(inner)):
        linears = find_prunable_linears(block, inner, target_modules)
        measured[original[position]] = {
            name: float((linear.weight == 0).sum()) / linear.weight.numel() for name, linear in linears.items()
        }
    return measured
