"""``LayerScores``: the importance of each candidate block (or sublayer), with provenance and timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .constants import SCORES_NAME
from .errors import ConfigError
from .persistence import JsonRecord

__all__ = ["LayerScores"]


@dataclass
class LayerScores(JsonRecord):
    """Importance scores of the pruning candidates of one model.

    Higher values mean *more important* (kept longer) for every criterion; a criterion whose natural quantity runs
    the other way (e.g. a distance where small means redundant) stores it so that this holds, and says so in
    ``extra``. Greedy criteria (SLEB, angular, FinerCut) also give the order in which they remove candidates.

    Args:
        criterion: Criterion name.
        layer_indices: Original block index of each candidate.
        values: Importance of each candidate (parallel to ``layer_indices``).
        sublayers: For sublayer granularity, ``"attention"`` or ``"mlp"`` per candidate; ``None`` for blocks.
        num_params: Parameters each candidate holds (for parameter-count targets).
        total_params: Parameters of the whole model when scored.
        protected: Candidate positions (into ``values``) that may not be removed.
        removal_order: Candidate positions in the order a greedy criterion removes them, if it has one.
        calibration: Provenance of the calibration data.
        elapsed_seconds: Wall time of the scoring.
        extra: Criterion-specific details (forward counts, raw quantities, ...).
        source_num_hidden_layers: Number of blocks of the original model ``layer_indices`` refer to.
        source_fingerprint: Facts of the scored model's config (see
            :func:`optimum_depth.architectures.config_fingerprint`), carried into the plan.
    """

    criterion: str
    layer_indices: list[int]
    values: list[float]
    sublayers: list[str] | None = None
    num_params: list[int] = field(default_factory=list)
    total_params: int = 0
    protected: list[int] = field(default_factory=list)
    removal_order: list[int] | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    source_num_hidden_layers: int | None = None
    source_fingerprint: dict[str, Any] = field(default_factory=dict)

    file_name: ClassVar[str] = SCORES_NAME
    required_keys: ClassVar[tuple[str, ...]] = ("criterion", "layer_indices", "values")

    def __post_init__(self) -> None:
        if len(self.values) != len(self.layer_indices):
            raise ConfigError(f"{len(self.values)} values for {len(self.layer_indices)} candidates.")
        if self.sublayers is not None and len(self.sublayers) != len(self.values):
            raise ConfigError("`sublayers` must have one entry per candidate.")
        if self.num_params and len(self.num_params) != len(self.values):
            raise ConfigError("`num_params` must have one entry per candidate.")

    @property
    def granularity(self) -> str:
        """``"sublayer"`` when candidates are sublayers, else ``"block"``."""
        return "block" if self.sublayers is None else "sublayer"

    def candidate_name(self, position: int) -> str:
        """Human-readable name of candidate ``position``, e.g. ``"block 7"`` or ``"mlp 7"``."""
        kind = "block" if self.sublayers is None else self.sublayers[position]
        return f"{kind} {self.layer_indices[position]}"

    def _fields_to_dict(self) -> dict[str, Any]:
        data = super()._fields_to_dict()
        data["values"] = [float(v) for v in self.values]
        return data

    def positions_removed_by(self, plan: Any) -> list[int]:
        """Positions of the candidates that ``plan`` removes (marked red on the plot).

        Args:
            plan: A :class:`~optimum_depth.PruningPlan` (original numbering).

        Returns:
            Candidate positions into :attr:`values`.
        """
        removed = {"attention": plan.removed_attention, "mlp": plan.removed_mlp}
        chosen = []
        for position, block in enumerate(self.layer_indices):
            kind = "block" if self.sublayers is None else self.sublayers[position]
            if block in plan.removed_blocks or block in removed.get(kind, ()):
                chosen.append(position)
        return chosen
