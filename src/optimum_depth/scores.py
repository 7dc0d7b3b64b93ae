"""``LayerScores``: the importance of each candidate block (or sublayer), with provenance and timing."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .version import __version__


@dataclass
class LayerScores:
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

    def __post_init__(self) -> None:
        if len(self.values) != len(self.layer_indices):
            raise ValueError(f"{len(self.values)} values for {len(self.layer_indices)} candidates.")
        if self.sublayers is not None and len(self.sublayers) != len(self.values):
            raise ValueError("`sublayers` must have one entry per candidate.")
        if self.num_params and len(self.num_params) != len(self.values):
            raise ValueError("`num_params` must have one entry per candidate.")

    @property
    def granularity(self) -> str:
        """``"sublayer"`` when candidates are sublayers, else ``"block"``."""
        return "block" if self.sublayers is None else "sublayer"

    def candidate_name(self, position: int) -> str:
        """Human-readable name of candidate ``position``, e.g. ``"block 7"`` or ``"mlp 7"``."""
        kind = "block" if self.sublayers is None else self.sublayers[position]
        return f"{kind} {self.layer_indices[position]}"

    def to_dict(self) -> dict[str, Any]:
        """Returns the scores as a JSON-serialisable dict."""
        data = asdict(self)
        data["values"] = [float(v) for v in self.values]
        data["optimum_depth_version"] = __version__
        return data

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialises to JSON, and writes it to ``path`` when given.

        Args:
            path: Optional file to write.

        Returns:
            The JSON text.
        """
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> LayerScores:
        """Parses scores from JSON text or a JSON file written by :meth:`to_json`."""
        text = os.fspath(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text, encoding="utf-8") as handle:
                text = handle.read()
        data = json.loads(text)
        data.pop("optimum_depth_version", None)
        return cls(**data)

    def plot(self, path: str | os.PathLike, selected: list[int] | None = None, title: str | None = None) -> str:
        """Writes a PNG bar chart of the scores, marking protected and selected candidates.

        Args:
            path: Output PNG path.
            selected: Candidate positions chosen for removal (e.g. from a plan).
            title: Plot title (default: the criterion).

        Returns:
            The path written.
        """
        from .plotting import plot_layer_scores

        return plot_layer_scores(self, path, selected=selected, title=title)
