"""``PruningPlan``: a frozen, JSON-serialisable record of what goes, in the original model's numbering, and why.

This module needs no torch: a plan can be written, reviewed and edited by hand before it is applied.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .version import __version__

PLAN_NAME = "pruning_plan.json"


@dataclass(frozen=True)
class PruningPlan:
    """What a pruning step removes.

    Args:
        granularity: ``"block"`` or ``"sublayer"``.
        removed_blocks: Original indices of whole blocks to remove.
        removed_attention: Original indices of blocks whose attention sublayer goes (sublayer granularity).
        removed_mlp: Original indices of blocks whose MLP sublayer goes (sublayer granularity).
        source_num_hidden_layers: Number of blocks of the original model the indices refer to.
        criterion: The importance criterion that chose them.
        reason: Why: the scores of the chosen candidates, protection, target. Free-form, JSON-serialisable.
    """

    granularity: str
    removed_blocks: tuple[int, ...] = ()
    removed_attention: tuple[int, ...] = ()
    removed_mlp: tuple[int, ...] = ()
    source_num_hidden_layers: int | None = None
    criterion: str | None = None
    reason: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.granularity not in ("block", "sublayer"):
            raise ValueError(f"`granularity` must be 'block' or 'sublayer', got {self.granularity!r}.")
        for name in ("removed_blocks", "removed_attention", "removed_mlp"):
            values = getattr(self, name)
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
                raise ValueError(f"`{name}` must hold non-negative integers, got {list(values)}.")
            if len(set(values)) != len(values):
                raise ValueError(f"`{name}` has duplicates: {list(values)}.")
            object.__setattr__(self, name, tuple(sorted(values)))
        if self.granularity == "block" and (self.removed_attention or self.removed_mlp):
            raise ValueError("A block plan cannot remove sublayers; use granularity='sublayer'.")
        if not (self.removed_blocks or self.removed_attention or self.removed_mlp):
            raise ValueError("A pruning plan must remove something.")

    @property
    def num_removed(self) -> int:
        """Number of removed candidates (blocks, or sublayers with a whole block counting as two)."""
        if self.granularity == "block":
            return len(self.removed_blocks)
        return 2 * len(self.removed_blocks) + len(self.removed_attention) + len(self.removed_mlp)

    def to_dict(self) -> dict[str, Any]:
        """Returns the plan as a JSON-serialisable dict."""
        data = asdict(self)
        for key in ("removed_blocks", "removed_attention", "removed_mlp"):
            data[key] = list(data[key])
        data["optimum_depth_version"] = __version__
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningPlan:
        """Builds a plan from :meth:`to_dict` output."""
        allowed = {"granularity", "removed_blocks", "removed_attention", "removed_mlp"}
        allowed |= {"source_num_hidden_layers", "criterion", "reason"}
        kwargs = {k: v for k, v in data.items() if k in allowed}
        for key in ("removed_blocks", "removed_attention", "removed_mlp"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def to_json(self) -> str:
        """Returns the plan as indented JSON."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        """Parses a plan from JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"Not a valid pruning plan JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError("A pruning plan JSON must be an object.")
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> str:
        """Writes the plan to ``path`` (a file, or a directory receiving ``pruning_plan.json``)."""
        file = os.path.join(path, PLAN_NAME) if os.path.isdir(path) else os.fspath(path)
        tmp = file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(self.to_json())
        os.replace(tmp, file)
        return file

    @classmethod
    def load(cls, path: str | os.PathLike) -> PruningPlan:
        """Reads a plan written by :meth:`save`."""
        file = os.path.join(path, PLAN_NAME) if os.path.isdir(path) else os.fspath(path)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"No pruning plan at {file!r}.")
        with open(file, encoding="utf-8") as handle:
            return cls.from_json(handle.read())
