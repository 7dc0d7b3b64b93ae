"""``PruningPlan``: a frozen, JSON-serialisable record of what goes, in the original model's numbering, and why.

This module needs no torch: a plan can be written, reviewed and edited by hand before it is applied. A plan always
records the model it was made for (its original block count and a fingerprint of its config), and
:meth:`optimum_depth.DepthPruner.apply` refuses to apply it to any other model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .constants import PLAN_NAME
from .errors import ConfigError
from .persistence import JsonRecord

__all__ = ["PLAN_NAME", "PruningPlan"]

_INDEX_FIELDS = ("removed_blocks", "removed_attention", "removed_mlp")


@dataclass(frozen=True)
class PruningPlan(JsonRecord):
    """What a pruning step removes.

    Args:
        granularity: ``"block"`` or ``"sublayer"``.
        removed_blocks: Original indices of whole blocks to remove.
        removed_attention: Original indices of blocks whose attention sublayer goes (sublayer granularity).
        removed_mlp: Original indices of blocks whose MLP sublayer goes (sublayer granularity).
        source_num_hidden_layers: Number of blocks of the original model the indices refer to (required).
        source_fingerprint: Facts of the model the plan was made for (family, hidden size, vocabulary, ...; see
            :func:`optimum_depth.architectures.config_fingerprint`); a model that differs in any of them is refused.
            Required in a saved plan (:meth:`from_dict` / :meth:`from_pretrained` refuse one without it).
        criterion: The importance criterion that chose them.
        reason: Why: the scores of the chosen candidates, protection, target. Free-form, JSON-serialisable.
    """

    granularity: str
    removed_blocks: tuple[int, ...] = ()
    removed_attention: tuple[int, ...] = ()
    removed_mlp: tuple[int, ...] = ()
    source_num_hidden_layers: int | None = None
    source_fingerprint: dict[str, Any] = field(default_factory=dict, compare=False)
    criterion: str | None = None
    reason: dict[str, Any] = field(default_factory=dict, compare=False)

    file_name: ClassVar[str] = PLAN_NAME
    required_keys: ClassVar[tuple[str, ...]] = ("granularity", "source_num_hidden_layers")

    def __post_init__(self) -> None:
        if self.granularity not in ("block", "sublayer"):
            raise ConfigError(f"`granularity` must be 'block' or 'sublayer', got {self.granularity!r}.")
        total = self.source_num_hidden_layers
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ConfigError(
                "A pruning plan must record `source_num_hidden_layers`, the number of blocks of the original model "
                f"its indices refer to (a positive integer), got {total!r}."
            )
        if not isinstance(self.source_fingerprint, dict):
            raise ConfigError(f"`source_fingerprint` must be a dict, got {type(self.source_fingerprint).__name__}.")
        for name in _INDEX_FIELDS:
            values = list(getattr(self, name))
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
                raise ConfigError(f"`{name}` must hold non-negative integers, got {values}.")
            if len(set(values)) != len(values):
                raise ConfigError(f"`{name}` has duplicates: {values}.")
            beyond = [v for v in values if v >= total]
            if beyond:
                raise ConfigError(f"`{name}` {beyond} are not blocks of a model with {total} original blocks.")
            object.__setattr__(self, name, tuple(sorted(values)))
        if self.granularity == "block" and (self.removed_attention or self.removed_mlp):
            raise ConfigError("A block plan cannot remove sublayers; use granularity='sublayer'.")
        if not (self.removed_blocks or self.removed_attention or self.removed_mlp):
            raise ConfigError("A pruning plan must remove something.")
        if len(self.removed_blocks) >= total:
            raise ConfigError(f"A pruning plan cannot remove all {total} blocks.")

    @property
    def num_removed(self) -> int:
        """Number of removed candidates (blocks, or sublayers with a whole block counting as two)."""
        if self.granularity == "block":
            return len(self.removed_blocks)
        return 2 * len(self.removed_blocks) + len(self.removed_attention) + len(self.removed_mlp)

    def _fields_to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in _INDEX_FIELDS:
            data[key] = list(data[key])
        return data

    @classmethod
    def _fields_from_dict(cls, data: dict[str, Any]) -> PruningPlan:
        fingerprint = data.get("source_fingerprint")
        if not isinstance(fingerprint, dict) or "hidden_size" not in fingerprint:  # it must say which model it is for
            raise ConfigError(
                "The plan records no `source_fingerprint` (the family and sizes of the model it was made for), so it "
                "could be applied to a model of another width. Plans written by optimum-depth (`score`, `prune`) "
                'have it; a plan written by hand needs it too, e.g. {"model_type": "llama", "hidden_size": 2048, '
                '"intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256}.'
            )
        for key in _INDEX_FIELDS:
            if key in data:
                if not isinstance(data[key], (list, tuple)):
                    raise ConfigError(f"`{key}` must be a list of block indices, got {data[key]!r}.")
                data[key] = tuple(data[key])
        return cls(**data)
