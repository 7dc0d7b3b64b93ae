"""Where a kept block's MLP contribution can take a compensation map *exactly*: the fold site of each family.

A decoder block outputs ``Y + C``, with ``C`` its MLP contribution to the residual stream and ``Y`` the rest (its
input plus its attention contribution). A map ``C -> C T`` must be folded into a weight that already exists:

* **pre-norm families** (Llama, Mistral, Qwen2/3, Phi-3, SmolLM3): ``C = down_proj(a) = a Wᵀ`` is linear in the
  down-projection, so *any* ``T`` folds exactly: ``W <- Tᵀ W`` (structure ``"full"``, hidden x hidden);
* **post-norm families** (Gemma 2, Gemma 3): a norm follows the MLP, ``C = N(M) = M / rms(M) * g`` with ``M`` the
  down-projection's output and ``g = 1 + w`` the norm's gain. ``C T`` is again of that form only when ``T`` is
  diagonal: ``N(M) diag(d) = M / rms(M) * (g * d)``, i.e. the gain becomes ``g * d`` (``w <- (1 + w) d - 1``),
  exact in every token (structure ``"diagonal"``). A full map cannot be moved before the norm: ``N(M Aᵀ)`` divides
  by ``rms(M Aᵀ)``, which equals ``rms(M)`` for every token only when ``A`` is orthogonal. Orthogonal maps in
  ``down_proj`` combined with the diagonal gain would reach the maps ``u Q D`` (``u = M / rms(M)``), but fitting
  them has no closed form; the diagonal part is fitted here in closed form and anything beyond it is left to
  reconstruction (``method="reconstruct"``), which needs no linearity.

The site is the module whose *output* is ``C`` (the walk hooks it to split a block's output into ``Y`` and ``C``):
the down-projection, or the norm after the MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from ..architectures import ARCHITECTURES, ModelFacts, get_layer_parts
from ..errors import UnsupportedArchitectureError
from .linear_maps import fold_output_transform, folded_gain_weight, folded_output_weight
from .offloaded import update_weight

__all__ = ["FoldSite", "MAP_STRUCTURES", "fold_map", "fold_site", "map_structure"]

MLP_OUTPUT_LINEAR = "down_proj"
"""The linear layer whose output is a pre-norm block's MLP contribution to the residual stream."""
MAP_STRUCTURES = ("full", "diagonal")
GAIN_OFFSETS: dict[str, float] = {"gemma2": 1.0, "gemma3_text": 1.0}
"""The constant each post-norm family's RMSNorm adds to its weight to form its gain (``x / rms(x) * (1 + w)``)."""


@dataclass(frozen=True)
class FoldSite:
    """Where one block's MLP contribution is produced, and which maps fold there exactly.

    Args:
        module: The module whose output is the contribution (a peft wrapper of the down-projection, if any).
        name: Its attribute path inside the block (for the record), e.g. ``"mlp.down_proj"``.
        structure: ``"full"`` (any hidden x hidden map) or ``"diagonal"`` (one gain per feature).
        gain_offset: For a norm site, the constant its weight is offset by to form the gain.
    """

    module: nn.Module
    name: str
    structure: str
    gain_offset: float = 0.0


def map_structure(model_type: str | None) -> str:
    """``"diagonal"`` for the families with a norm after the MLP (their maps fold into its gain), else ``"full"``."""
    spec = ARCHITECTURES.get(str(model_type).removeprefix("pruned_"))
    return "diagonal" if spec is not None and spec.norm_after_mlp else "full"


def base_linear(module: nn.Module) -> Any:
    """The ``nn.Linear`` itself (a peft LoRA layer keeps it as ``base_layer``)."""
    return getattr(module, "base_layer", module)


def fold_site(block: nn.Module, facts: ModelFacts) -> FoldSite:
    """The fold site of a kept block (see the module docs).

    Raises:
        UnsupportedArchitectureError: If the block has no MLP (sublayer-pruned) or an unexpected structure.
    """
    spec = facts.spec
    parts = get_layer_parts(block, spec)
    if spec.norm_after_mlp:
        post_norm = parts.mlp_norms[-1] if parts.mlp is not None and len(parts.mlp_norms) == 2 else None
        weight = getattr(post_norm, "weight", None)
        if post_norm is None or not isinstance(weight, torch.Tensor) or weight.dim() != 1:
            raise UnsupportedArchitectureError(
                f"Compensation needs each fold block's MLP and the norm after it (`{spec.mlp_norms[-1]}`); block "
                f"{type(block).__name__} has none (sublayer-pruned or an unexpected structure)."
            )
        offset = GAIN_OFFSETS.get(spec.model_type, 0.0)
        return FoldSite(post_norm, f"{spec.mlp_norms[-1]}.weight", "diagonal", offset)
    module = getattr(parts.mlp, MLP_OUTPUT_LINEAR, None) if parts.mlp is not None else None
    if not isinstance(module, nn.Module) or not isinstance(base_linear(module), nn.Linear):
        raise UnsupportedArchitectureError(
            f"Compensation needs each fold block's MLP `{MLP_OUTPUT_LINEAR}` linear layer; block "
            f"{type(block).__name__} has none (sublayer-pruned or an unexpected structure)."
        )
    return FoldSite(module, f"{spec.mlp_attr}.{MLP_OUTPUT_LINEAR}.weight", "full")


def check_foldable(site: FoldSite) -> None:
    """Refuses, before anything changes, a site the fold cannot write (an offloaded biased down-projection)."""
    if site.structure == "full":
        bias = base_linear(site.module).bias
        if bias is not None and bias.device.type == "meta":
            raise UnsupportedArchitectureError(
                "Compensation cannot fold into an offloaded down-projection with a bias."
            )


@torch.no_grad()
def fold_map(root: nn.Module, site: FoldSite, transform: torch.Tensor) -> None:
    """Folds ``C -> C T`` into the site's weight, in place (offloaded weights and peft adapters included).

    Args:
        root: The model the site belongs to (where accelerate's offload hooks were attached).
        site: From :func:`fold_site`.
        transform: ``[hidden, hidden]`` map (diagonal for a ``"diagonal"`` site).
    """
    if site.structure == "diagonal":
        update_weight(root, site.module, partial(folded_gain_weight, transform=transform, offset=site.gain_offset))
        return
    base, fold = base_linear(site.module), partial(folded_output_weight, transform=transform)
    if base.weight.device.type == "meta":  # accelerate-offloaded: the weight lives in the hook's weights map
        update_weight(root, base, fold)
    else:
        fold_output_transform(base, transform)
    for lora_b in getattr(site.module, "lora_B", {}).values():  # peft: the adapter's output is mapped too (T^T B)
        update_weight(root, lora_b, fold)
