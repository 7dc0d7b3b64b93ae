"""The sublayer candidates of a model: every attention and every MLP sublayer still present, in forward order.

Sublayer pruning (FinerCut) treats each of them as a candidate. Candidates are numbered by their position in this
list; a protected block protects both of its sublayers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..architectures import ModelFacts, as_facts, get_layer_parts
from ..config import DepthPruningConfig

__all__ = [
    "ATTENTION",
    "MLP",
    "SUBLAYER_KINDS",
    "Sublayer",
    "list_sublayers",
    "protected_sublayers",
    "sublayer_modules",
]

ATTENTION = "attention"
MLP = "mlp"
SUBLAYER_KINDS = (ATTENTION, MLP)


@dataclass(frozen=True)
class Sublayer:
    """One attention or MLP sublayer of a model.

    Args:
        block: Position of its block in the current model.
        kind: ``"attention"`` or ``"mlp"``.
        original_block: Index of its block in the original (unpruned) model.
    """

    block: int
    kind: str
    original_block: int

    @property
    def name(self) -> str:
        """E.g. ``"attention 3"`` (original block numbering)."""
        return f"{self.kind} {self.original_block}"


def list_sublayers(model: nn.Module | ModelFacts) -> list[Sublayer]:
    """Lists the sublayers still present in ``model``, in forward order (attention before MLP in each block).

    Args:
        model: A causal LM of a supported family, possibly wrapped, or its resolved facts.

    Returns:
        The sublayers.
    """
    facts = as_facts(model)
    original = facts.original_indices
    sublayers = []
    for position, block in enumerate(facts.layers):
        parts = get_layer_parts(block, facts.spec)
        if parts.attention is not None:
            sublayers.append(Sublayer(position, ATTENTION, original[position]))
        if parts.mlp is not None:
            sublayers.append(Sublayer(position, MLP, original[position]))
    return sublayers


def sublayer_modules(model: nn.Module | ModelFacts, sublayer: Sublayer) -> tuple[nn.Module, list[nn.Module]]:
    """The module of a sublayer and the norms that belong to it.

    Args:
        model: The model ``sublayer`` was listed from (or its resolved facts).
        sublayer: The sublayer.

    Returns:
        The attention or MLP module, and its norms (pre-norm first, then a post-norm where the family has one).
    """
    facts = as_facts(model)
    parts = get_layer_parts(facts.layers[sublayer.block], facts.spec)
    module = parts.attention if sublayer.kind == ATTENTION else parts.mlp
    if module is None:
        raise ValueError(f"Block {sublayer.block} has no {sublayer.kind} sublayer.")
    return module, parts.attention_norms if sublayer.kind == ATTENTION else parts.mlp_norms


def sublayer_num_params(model: nn.Module | ModelFacts, sublayer: Sublayer) -> int:
    """Parameters a sublayer holds, its norms included (what removing it saves)."""
    module, norms = sublayer_modules(model, sublayer)
    return sum(p.numel() for m in (module, *norms) for p in m.parameters())


def protected_sublayers(
    config: DepthPruningConfig, model: nn.Module | ModelFacts, sublayers: list[Sublayer]
) -> list[int]:
    """Positions (into ``sublayers``) that may not be removed: both sublayers of every protected block.

    Args:
        config: The pruning config (``protect_first``/``protect_last``/``protect_first_fraction``/``protected_layers``).
        model: The model (or its resolved facts).
        sublayers: Its sublayers, from :func:`list_sublayers`.

    Returns:
        Sorted candidate positions.
    """
    facts = as_facts(model)
    blocks = set(config.protected_blocks(facts.num_layers, facts.original_indices))
    return [i for i, sublayer in enumerate(sublayers) if sublayer.block in blocks]
