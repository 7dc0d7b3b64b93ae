"""``SparsityConfig``: which weight-sparsity method to run, at what target, and how to calibrate and learn it.

Everything that can be checked without a model is checked in ``__post_init__``; :func:`optimum_depth.sparsity.check`
checks the rest against a model before anything is changed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ..config import DepthPruningConfig
from ..constants import SPARSITY_CONFIG_NAME
from ..errors import ConfigError
from ..field_checks import is_finite_number
from ..persistence import JsonRecord

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "SparsityConfig"]

METHODS = ("besa", "wanda", "magnitude")
ALLOCATIONS = ("row", "layer")
OPTIMIZERS = ("prodigy", "adam")
UNSTRUCTURED = "unstructured"
DEFAULT_LEARNING_RATES = {"prodigy": 1.0, "adam": 1e-2}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")


def _check_number(name: str, value: Any, low: float, high: float, open_low: bool = True) -> None:
    ok = is_finite_number(value)
    if ok:
        ok = (value > low if open_low else value >= low) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise ConfigError(f"`{name}` must be a number in {bracket}{low}, {high}], got {value!r}.")


def parse_structure(structure: str) -> tuple[int, int] | None:
    """Parses ``"unstructured"`` (``None``) or ``"N:M"`` (``(N, M)``: N weights kept in every M).

    Raises:
        ValueError: On any other value.
    """
    if structure == UNSTRUCTURED:
        return None
    parts = structure.split(":") if isinstance(structure, str) else []
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        kept, group = int(parts[0]), int(parts[1])
        if 0 < kept < group:
            return kept, group
    raise ConfigError(f"`structure` must be 'unstructured' or 'N:M' with 0 < N < M (e.g. '2:4'), got {structure!r}.")


@dataclass
class SparsityConfig(JsonRecord):
    """Configuration of a weight-sparsity run (BESA, or the Wanda / magnitude baselines).

    Args:
        method: ``"besa"`` (learned per-layer or per-row sparsity, Xu et al. 2024), ``"wanda"`` (uniform per-row
            sparsity ranked by ``|W| * ||X||``, Sun et al. 2024) or ``"magnitude"`` (uniform per-matrix, by ``|W|``).
        sparsity: Target fraction of zero weights in the pruned linear layers, in (0, 1). BESA meets it per block
            (parameter-weighted), the baselines in every layer.
        allocation: BESA only: ``"row"`` learns one sparsity per output row (the paper's row-wise setting),
            ``"layer"`` one per linear layer.
        structure: ``"unstructured"``, or ``"N:M"`` semi-structured (N weights kept in every M consecutive inputs,
            e.g. ``"2:4"``) for Wanda and magnitude; the target must then equal ``1 - N/M``.
        target_modules: Names (or dotted suffixes, e.g. ``"mlp.down_proj"``) of the linear layers of each block to
            sparsify; ``None`` sparsifies every linear layer of the attention and MLP sublayers.
        num_samples: Calibration sequences (the paper: 128).
        seq_len: Tokens per calibration sequence (the paper: 2048).
        seed: Seed of calibration sampling.
        calibration_dataset: Calibration source used when none is passed to ``sparsify`` (a path or ``"self"``).
        batch_size: Calibration sequences per block forward (BESA: per optimisation step; the paper uses 1).
        epochs: BESA: passes over the calibration set per block (the paper: 1).
        optimizer: BESA: ``"prodigy"`` (the paper; needs ``pip install 'optimum-depth[besa]'``) or ``"adam"``.
        learning_rate: BESA: optimizer learning rate (``None``: 1.0 for Prodigy, 1e-2 for Adam).
        sparsity_step: BESA: spacing of the candidate sparsities 0, step, 2 step, ..., 1; ``1/step`` must be an
            integer.
        reconstruction_weight: BESA: weight of the normalised block reconstruction error in the loss.
        penalty_weight: BESA: weight of the penalty ``((s - target) / target)^2`` on the block's parameter-weighted
            expected sparsity ``s``.
        sigmoid_smooth: BESA: squash the logits with a sigmoid before the softmax, as the reference code does.
        match_target: BESA: after learning, shift every learned distribution by one shared exponential tilt so that
            the block's achieved sparsity is the closest reachable to the target (the penalty alone only pulls
            towards it). The relative allocation learned is kept.
        depth_pruning: Optional depth-pruning config run first (by :class:`optimum_depth.DepthPruner`) so one config
            asks for both; the sparsity is then learned on the surviving blocks.
    """

    method: str = field(default="besa", metadata={"help": f"One of {METHODS}."})
    sparsity: float = field(default=0.5, metadata={"help": "Target fraction of zero weights."})
    allocation: str = field(default="row", metadata={"help": "BESA: 'row' or 'layer'."})
    structure: str = field(default=UNSTRUCTURED, metadata={"help": "'unstructured' or 'N:M' (Wanda/magnitude)."})
    target_modules: list[str] | None = field(default=None, metadata={"help": "Linear layers to sparsify."})
    num_samples: int = field(default=128, metadata={"help": "Calibration sequences."})
    seq_len: int = field(default=2048, metadata={"help": "Tokens per calibration sequence."})
    seed: int = field(default=0, metadata={"help": "Calibration seed."})
    calibration_dataset: str | None = field(default=None, metadata={"help": "Calibration source."})
    batch_size: int = field(default=1, metadata={"help": "Sequences per block forward / BESA step."})
    epochs: int = field(default=1, metadata={"help": "BESA: epochs per block."})
    optimizer: str = field(default="prodigy", metadata={"help": f"BESA: one of {OPTIMIZERS}."})
    learning_rate: float | None = field(default=None, metadata={"help": "BESA: learning rate."})
    sparsity_step: float = field(default=0.01, metadata={"help": "BESA: candidate sparsity spacing."})
    reconstruction_weight: float = field(default=1.0, metadata={"help": "BESA: reconstruction loss weight."})
    penalty_weight: float = field(default=1.0, metadata={"help": "BESA: sparsity penalty weight."})
    sigmoid_smooth: bool = field(default=True, metadata={"help": "BESA: sigmoid before softmax."})
    match_target: bool = field(default=True, metadata={"help": "BESA: tilt to hit the target exactly."})
    depth_pruning: DepthPruningConfig | None = field(default=None, metadata={"help": "Depth pruning run first."})

    file_name: ClassVar[str] = SPARSITY_CONFIG_NAME
    required_keys: ClassVar[tuple[str, ...]] = ("method", "sparsity")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"`method` must be one of {METHODS}, got {self.method!r}.")
        _check_number("sparsity", self.sparsity, 0.0, 1.0)
        if self.sparsity >= 1.0:
            raise ConfigError("`sparsity` must be below 1 (a target of 1 would zero every weight).")
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(f"`allocation` must be one of {ALLOCATIONS}, got {self.allocation!r}.")
        pattern = parse_structure(self.structure)
        if pattern is not None:
            if self.method == "besa":
                raise ConfigError(
                    "`structure` N:M fixes the sparsity of every group, so there is nothing for BESA to allocate; "
                    "use method='wanda' or 'magnitude' for N:M."
                )
            implied = 1.0 - pattern[0] / pattern[1]
            if abs(self.sparsity - implied) > 1e-9:
                raise ConfigError(f"`structure`={self.structure!r} implies sparsity {implied}, got {self.sparsity}.")
        if self.target_modules is not None:
            names = [] if isinstance(self.target_modules, str) else list(self.target_modules)
            if not names or not all(isinstance(n, str) and n for n in names):
                raise ConfigError(f"`target_modules` must be a non-empty list of names, got {self.target_modules!r}.")
            self.target_modules = names
        for name in ("num_samples", "seq_len", "batch_size", "epochs"):
            _check_int(name, getattr(self, name), 2 if name == "seq_len" else 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"`seed` must be an integer, got {self.seed!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"`optimizer` must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.learning_rate is not None:
            _check_number("learning_rate", self.learning_rate, 0.0, math.inf)
        _check_number("sparsity_step", self.sparsity_step, 0.0, 0.5)
        if abs(1.0 / self.sparsity_step - round(1.0 / self.sparsity_step)) > 1e-6:
            raise ConfigError(f"`1 / sparsity_step` must be an integer, got sparsity_step={self.sparsity_step}.")
        _check_number("reconstruction_weight", self.reconstruction_weight, 0.0, math.inf)
        _check_number("penalty_weight", self.penalty_weight, 0.0, math.inf, open_low=False)
        if isinstance(self.depth_pruning, dict):
            self.depth_pruning = DepthPruningConfig.from_dict(self.depth_pruning)
        if self.depth_pruning is not None and not isinstance(self.depth_pruning, DepthPruningConfig):
            raise ConfigError(
                f"`depth_pruning` must be a DepthPruningConfig (or its dict), got {type(self.depth_pruning).__name__}."
            )

    # ------------------------------------------------------------------------------------------- resolution
    @property
    def num_candidate_steps(self) -> int:
        """``1 / sparsity_step``: the candidates are ``k / num_candidate_steps``."""
        return round(1.0 / self.sparsity_step)

    @property
    def resolved_learning_rate(self) -> float:
        """``learning_rate``, or the optimizer's default (1.0 for Prodigy, 1e-2 for Adam)."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[self.optimizer]

    @property
    def n_m(self) -> tuple[int, int] | None:
        """``(N, M)`` of an N:M structure, or ``None`` when unstructured."""
        return parse_structure(self.structure)

    @property
    def needs_calibration(self) -> bool:
        """Whether the method needs calibration activations (every method but magnitude)."""
        return self.method != "magnitude"

    # ---------------------------------------------------------------------------------------- serialisation
    def _fields_to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["depth_pruning"] = self.depth_pruning.to_dict() if self.depth_pruning is not None else None
        return data
