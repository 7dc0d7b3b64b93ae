"""Which linear layers of a block get sparsified, and every check of a sparsity request made before any change."""

from __future__ import annotations

import importlib.util

from torch import nn

from ..architectures import get_architecture, get_decoder_layers, get_layer_parts, unwrap_model
from .config import SparsityConfig

__all__ = ["check", "find_prunable_linears"]


def _matches(name: str, patterns: list[str] | None) -> bool:
    if patterns is None:
        return True
    return any(name == p or name.endswith("." + p) for p in patterns)


def find_prunable_linears(block: nn.Module, model: nn.Module, target_modules: list[str] | None = None):
    """The ``nn.Linear`` layers of a block's attention and MLP sublayers, by dotted name relative to the block.

    Args:
        block: A decoder block of ``model``.
        model: The causal LM (gives the family's attribute names).
        target_modules: Optional names or dotted suffixes to restrict to (``SparsityConfig.target_modules``).

    Returns:
        ``dict[str, nn.Linear]`` in module order (empty for a block whose sublayers were all removed).
    """
    spec = get_architecture(model)
    parts = get_layer_parts(block, spec)
    found: dict[str, nn.Linear] = {}
    for prefix, sublayer in ((spec.attention_attr, parts.attention), (spec.mlp_attr, parts.mlp)):
        if sublayer is None:
            continue
        for name, module in sublayer.named_modules():
            full = f"{prefix}.{name}" if name else prefix
            if isinstance(module, nn.Linear) and _matches(full, target_modules):
                found[full] = module
    return found


def check(model: nn.Module, config: SparsityConfig, has_calibration: bool) -> None:
    """Validates a sparsity request against a model without changing anything.

    Args:
        model: The model to sparsify.
        config: The sparsity config.
        has_calibration: Whether a calibration source was given (argument or ``config.calibration_dataset``).

    Raises:
        TypeError: If ``config`` is not a :class:`SparsityConfig`.
        UnsupportedArchitectureError: If the model family is not supported.
        ValueError: For a peft-wrapped model, quantized or non-float weights, unknown ``target_modules``, an N:M
            structure that does not divide a layer's inputs, or missing calibration data.
        ImportError: If the Prodigy optimizer is asked for but ``prodigyopt`` is not installed.
    """
    if not isinstance(config, SparsityConfig):
        raise TypeError(f"`config` must be a SparsityConfig, got {type(config).__name__}.")
    get_architecture(model)
    if hasattr(model, "peft_config"):
        raise ValueError(
            "Sparsify a plain transformers model: merge the peft adapters first (`model = model.merge_and_unload()`)."
        )
    inner = unwrap_model(model)
    layers = get_decoder_layers(inner)
    found = [find_prunable_linears(block, inner, config.target_modules) for block in layers]
    if not any(found):
        wanted = config.target_modules or "attention/MLP linear layers"
        available = sorted({n for block in layers for n in find_prunable_linears(block, inner)})
        raise ValueError(f"No linear layer matches {wanted!r} in any block; available names: {available}.")
    if config.target_modules is not None:
        names = {n for block_found in found for n in block_found}
        unused = [t for t in config.target_modules if not any(_matches(n, [t]) for n in names)]
        if unused:
            raise ValueError(f"`target_modules` {unused} match no linear layer; available names: {sorted(names)}.")
    pattern = config.n_m
    for position, block_found in enumerate(found):
        for name, linear in block_found.items():
            weight = linear.weight
            if not weight.is_floating_point() or weight.is_meta or type(weight) is not nn.Parameter:
                raise ValueError(
                    f"Block {position} `{name}` has a {type(weight).__name__} weight of dtype {weight.dtype} on "
                    f"{weight.device}; sparsify a model with materialised floating-point weights (not quantized)."
                )
            if pattern is not None and linear.in_features % pattern[1] != 0:
                raise ValueError(
                    f"Block {position} `{name}` has {linear.in_features} inputs, not a multiple of {pattern[1]} "
                    f"(structure {config.structure!r})."
                )
    if config.needs_calibration and not has_calibration:
        raise ValueError(
            f"Method {config.method!r} needs calibration data: pass `calibration=` (texts, a file, a dataset, token "
            "ids or 'self') or set `calibration_dataset` in the config."
        )
    if config.method == "besa" and config.optimizer == "prodigy" and importlib.util.find_spec("prodigyopt") is None:
        raise ImportError(
            "BESA's Prodigy optimizer needs `pip install 'optimum-depth[besa]'` (or use optimizer='adam')."
        )
