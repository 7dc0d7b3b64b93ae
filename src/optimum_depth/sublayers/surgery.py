"""Sublayer surgery: remove attention / MLP sublayers (with their norms) and give the model a class that runs it.

A model that loses a sublayer needs the matching ``Pruned<Family>ForCausalLM`` of
:mod:`optimum_depth.modeling.modeling_pruned`, whose config records ``skipped_attention`` / ``skipped_mlp`` and lists
``layer_types`` attention-first (:mod:`optimum_depth.modeling.pruned_layout`: the k-th block with attention uses KV-cache
slot k). There is one way to get there, and it copies no weight:
:func:`convert_to_pruned_class` converts a stock model *in place*: the model object, its decoder and its blocks keep
their identity and only change class (each block becomes a ``PrunedDecoderLayer`` that keeps the family's attention,
MLP and norm modules, registered in their original order, so ``parameters()`` keeps its order), the model gets the
pruned config and every submodule's ``config`` reference is rebound to it. An optimizer, a peft wrapper or a DDP
wrapper built on the model stays valid: this is how :class:`~optimum_depth.training.callback.DepthPruningCallback` removes
sublayers inside a running ``Trainer``, and how :func:`remove_sublayers` prunes every model, so the object a caller
holds is always the pruned model.

A block that ends up with neither sublayer is removed as a block with :func:`optimum_depth.blocks.surgery.remove_layers`; a
model left with no partial block goes back to its native class, in place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from ..architectures import (
    PRUNED_MODEL_TYPE_PREFIX,
    ArchitectureSpec,
    ModelFacts,
    as_facts,
    base_model_type,
    get_architecture,
    get_decoder_layers,
    get_layer_parts,
    unwrap_model,
)
from ..blocks.surgery import remove_layers, renumber_layer_indices
from ..errors import SublayerIndexError, UnsupportedArchitectureError
from ..modeling.pruned_layout import NO_ATTENTION_LAYER_TYPE, SUBLAYER_KEYS, block_layer_types, cache_layer_types
from ..plan import PruningPlan
from ..provenance import record_block_removal
from .candidates import ATTENTION, MLP, list_sublayers

logger = logging.getLogger(__name__)


__all__ = [
    "SublayerIndexError",
    "apply_sublayer_plan",
    "check_conversion_to_pruned_class",
    "convert_to_pruned_class",
    "is_sublayer_pruned",
    "pruned_model_class",
    "remove_sublayers",
    "supports_sublayer_pruning",
]


def _pruned_causal_lm_classes() -> dict[str, type]:
    from ..modeling.modeling_pruned import PRUNED_CAUSAL_LM_CLASSES  # the families' modeling code, on first use

    return PRUNED_CAUSAL_LM_CLASSES


def supports_sublayer_pruning(model: nn.Module) -> bool:
    """Whether ``model``'s family has a pruned model class (every supported family: Llama, Mistral, Qwen2, Qwen3,
    Gemma 2, Gemma 3, Phi-3, SmolLM3)."""
    inner: Any = unwrap_model(model)
    model_type = base_model_type(inner.config.model_type)
    return PRUNED_MODEL_TYPE_PREFIX + model_type in _pruned_causal_lm_classes()


def is_sublayer_pruned(model: nn.Module) -> bool:
    """Whether ``model`` is an instance of a sublayer-pruned class (``model_type`` ``pruned_<family>``)."""
    inner: Any = unwrap_model(model)
    return inner.config.model_type.startswith(PRUNED_MODEL_TYPE_PREFIX)


def _validate_positions(values: Iterable[int], kind: str, num_blocks: int) -> list[int]:
    values = list(values)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < num_blocks]
    if bad:
        raise SublayerIndexError(f"{kind} block positions {bad} are not integers in [0, {num_blocks}).")
    if len(set(values)) != len(values):
        raise SublayerIndexError(f"{kind} block positions {sorted(values)} contain duplicates.")
    return sorted(values)


_MODEL_PLAN_ATTRIBUTES = (
    "_no_split_modules",
    "_fsdp_plan",
    "_tp_plan",
    "_ep_plan",
    "_pp_plan",
    "all_tied_weights_keys",
    "_keep_in_fp32_modules",
    "_keep_in_fp32_modules_strict",
    "_skip_keys_device_placement",
    "_keys_to_ignore_on_load_unexpected",
    "_keys_to_ignore_on_load_missing",
    "_keys_to_ignore_on_save",
)
"""Per-instance attributes ``PreTrainedModel.post_init`` derives from the class; taken from the new class's template."""


def _rebind_config(modules: Iterable[nn.Module], old_config, new_config) -> None:
    """Points every ``config`` attribute that is ``old_config`` (set on the module itself) to ``new_config``."""
    for module in modules:
        if vars(module).get("config") is old_config:
            module.config = new_config


def _holds_tensors(module: nn.Module | None) -> bool:
    return module is not None and any(True for _ in [*module.parameters(), *module.buffers()])


def _morph_problems(obj: nn.Module, template: nn.Module, dropped: Iterable[str] = ()) -> list[str]:
    """Submodules holding tensors that :func:`_morph` would have to adopt from ``template`` or drop from ``obj``."""
    dropped = set(dropped)
    problems = [
        f"{type(obj).__name__}.{name} (absent from {type(template).__name__})"
        for name, child in obj._modules.items()
        if name not in dropped and name not in template._modules and _holds_tensors(child)
    ]
    problems += [
        f"{type(template).__name__}.{name} (absent from {type(obj).__name__})"
        for name, child in template._modules.items()
        if name not in obj._modules and _holds_tensors(child)
    ]
    return problems


def _morph(obj: nn.Module, template: nn.Module, overwrite: Iterable[str] = ()) -> None:
    """Turns ``obj`` into an instance of ``type(template)`` in place, keeping its identity and its submodules.

    Submodules ``obj`` already has stay (same objects, same registration order, so ``parameters()`` keeps its order).
    Tensor-free submodules only ``template`` has (dropouts, ``nn.Identity``) are adopted, tensor-free ones only
    ``obj`` has are dropped (checked beforehand with :func:`_morph_problems`); plain attributes ``obj`` lacks are
    copied, and those named in ``overwrite`` replaced.
    """
    for name in [n for n in obj._modules if n not in template._modules]:
        del obj._modules[name]
    for name, child in template._modules.items():
        if name not in obj._modules:
            if child is not None:
                child.train(obj.training)
            obj._modules[name] = child
    overwrite = set(overwrite)
    own = vars(obj)
    registered = {*obj._modules, *obj._parameters, *obj._buffers}
    for name, value in vars(template).items():
        if name not in registered and (name not in own or name in overwrite):
            own[name] = value
    obj.__class__ = type(template)


def _convert_in_place(
    inner: Any, model_class: Any, config: Any, spec: ArchitectureSpec, dry_run: bool = False
) -> nn.Module:
    """Gives ``inner`` the class ``model_class`` and the config ``config`` in place (nothing is copied).

    The top-level model, its decoder and every block keep their identity (only ``__class__`` changes), and so do
    every surviving module and parameter; sublayers that ``model_class(config)`` does not have (``skipped_*``) are
    set to ``None``. A template built on the meta device supplies the class, its tensor-free modules and attributes.
    Every ``config`` reference to the old config is rebound to ``config``. So a running ``Trainer``, its optimizer,
    a DDP or peft wrapper around ``inner`` keep working with the converted model.

    With ``dry_run=True`` only the checks run (nothing changes).

    Raises:
        RuntimeError: If the model holds modules the class does not know (checked before anything changes).
    """
    with torch.device("meta"):
        template = model_class(config)  # also registers the class's output-capturing spec with transformers
    old_config = inner.config
    sublayer_names = (spec.attention_attr, spec.mlp_attr, *spec.attention_norms, *spec.mlp_norms)
    layers, template_layers = get_decoder_layers(inner), get_decoder_layers(template)
    if len(layers) != len(template_layers):
        raise RuntimeError(f"Internal error: {len(layers)} blocks but the config has {len(template_layers)}.")
    decoder, template_decoder = inner.get_decoder(), template.get_decoder()
    dropped = [
        [n for n in sublayer_names if n in block._modules and getattr(template_block, n, None) is None]
        for block, template_block in zip(layers, template_layers, strict=True)
    ]
    problems = [p for b, t, d in zip(layers, template_layers, dropped, strict=True) for p in _morph_problems(b, t, d)]
    problems += _morph_problems(decoder, template_decoder) + _morph_problems(inner, template)
    if problems:
        raise RuntimeError(
            f"Cannot convert {type(inner).__name__} to {model_class.__name__} in place: modules holding weights "
            f"would be lost or missing: {problems[:5]}."
        )
    if dry_run:
        return inner
    # Everything below changes the model.
    for block, template_block, names in zip(layers, template_layers, dropped, strict=True):
        for name in names:
            setattr(block, name, None)  # a removed sublayer (and its norm)
        _morph(block, template_block, overwrite=("attention_type",))
    _morph(decoder, template_decoder, overwrite=_MODEL_PLAN_ATTRIBUTES)
    _morph(inner, template, overwrite=_MODEL_PLAN_ATTRIBUTES)
    _rebind_config(inner.modules(), old_config, config)
    inner.config = config
    left = [n for n, t in [*inner.named_parameters(), *inner.named_buffers()] if t.device.type == "meta"]
    if left:
        raise RuntimeError(f"Internal error: {type(inner).__name__} has meta tensors {left[:5]} after conversion.")
    return inner


def pruned_model_class(inner: Any) -> Any:
    """The ``Pruned<Family>ForCausalLM`` class of a (plain or already pruned) model.

    Raises:
        UnsupportedArchitectureError: If the family has none.
    """
    model_type = PRUNED_MODEL_TYPE_PREFIX + base_model_type(inner.config.model_type)
    classes = _pruned_causal_lm_classes()
    model_class = classes.get(model_type)
    if model_class is None:
        supported = sorted(t[len(PRUNED_MODEL_TYPE_PREFIX) :] for t in classes)
        raise UnsupportedArchitectureError(
            f"Sublayer removal is not available for {inner.config.model_type!r} models (no pruned model class); "
            f"supported families: {supported}. Block pruning works for every family."
        )
    return model_class


def _to_pruned(inner: Any, spec: ArchitectureSpec, dry_run: bool = False) -> nn.Module:
    model_class = pruned_model_class(inner)
    data = inner.config.to_dict()
    for key in ("model_type", "architectures", "auto_map"):
        data.pop(key, None)
    data.update(skipped_attention=[], skipped_mlp=[])
    config = model_class.config_class.from_dict(data)
    config.layer_types = cache_layer_types(block_layer_types(config))
    config._attn_implementation = inner.config._attn_implementation
    config._name_or_path = inner.config._name_or_path
    if getattr(config, "surviving_layers", None) is None:
        record_block_removal(config, list(range(config.num_hidden_layers)))
    return _convert_in_place(inner, model_class, config, spec, dry_run=dry_run)


def _to_native(inner: Any, spec: ArchitectureSpec) -> nn.Module:
    data = inner.config.to_dict()
    base_type = base_model_type(data.pop("model_type"))
    for key in ("architectures", "auto_map", *SUBLAYER_KEYS):
        data.pop(key, None)
    if "layer_types" not in AutoConfig.for_model(base_type).to_dict():
        data.pop("layer_types", None)
    config = AutoConfig.for_model(base_type, **data)
    config._attn_implementation = inner.config._attn_implementation
    config._name_or_path = inner.config._name_or_path
    return _convert_in_place(inner, MODEL_FOR_CAUSAL_LM_MAPPING[type(config)], config, spec)


def _drop_in_place(model: nn.Module, spec: ArchitectureSpec, attention: list[int], mlp: list[int]) -> None:
    layers = get_decoder_layers(model)
    inner: Any = unwrap_model(model)
    config = inner.config
    block_types = block_layer_types(config)
    for position in attention:
        for name in (spec.attention_attr, *spec.attention_norms):
            setattr(layers[position], name, None)
        block_types[position] = NO_ATTENTION_LAYER_TYPE
        setattr(layers[position], "attention_type", NO_ATTENTION_LAYER_TYPE)  # noqa: B010  (an nn.Module attribute)
    for position in mlp:
        for name in (spec.mlp_attr, *spec.mlp_norms):
            setattr(layers[position], name, None)
    config.skipped_attention = sorted(set(config.skipped_attention) | set(attention))
    config.skipped_mlp = sorted(set(config.skipped_mlp) | set(mlp))
    config.layer_types = cache_layer_types(block_types)
    renumber_layer_indices(layers, spec)  # later attentions move down to the freed KV-cache slots


def convert_to_pruned_class(model: nn.Module) -> nn.Module:
    """Gives a stock model its ``Pruned<Family>ForCausalLM`` class in place, with no sublayer removed yet.

    The model object, its decoder and blocks keep their identity, and every module and parameter stays the same
    object (see the module docstring); outputs are unchanged. Afterwards :func:`remove_sublayers` (and
    ``DepthPruner.apply`` with a sublayer plan) prunes the model in place, so this is how sublayers are removed from
    a model that something else holds on to: a running ``Trainer`` and its optimizer, a peft or DDP wrapper.

    Args:
        model: A causal LM of a family with a pruned class, possibly wrapped (peft, DDP); the wrapped base model is
            converted. A model that already has a pruned class is returned unchanged.

    Returns:
        ``model`` itself.

    Raises:
        UnsupportedArchitectureError: If the family has no pruned model class (nothing is changed then).
        RuntimeError: If the model holds weights the pruned class has no place for, e.g. a module attached to a
            block (nothing is changed then; :func:`check_conversion_to_pruned_class` runs the same checks).

    Example:
        ```python
        >>> peft_model = get_peft_model(model, lora_config)  # doctest: +SKIP
        >>> convert_to_pruned_class(peft_model)  # doctest: +SKIP
        >>> remove_sublayers(peft_model, attention=[3])  # doctest: +SKIP
        ```
    """
    spec = get_architecture(model)
    inner: Any = unwrap_model(model)
    if is_sublayer_pruned(inner):
        return model
    pruned_model_class(inner)
    _to_pruned(inner, spec)
    logger.info(
        "Converted the %s model in place to %s.", base_model_type(inner.config.model_type), type(inner).__name__
    )
    return model


def check_conversion_to_pruned_class(model: nn.Module) -> None:
    """Runs every check of :func:`convert_to_pruned_class` without changing anything.

    Args:
        model: A causal LM, possibly wrapped.

    Raises:
        UnsupportedArchitectureError: If the family has no pruned model class.
        RuntimeError: If the model holds weights the pruned class has no place for.
    """
    spec = get_architecture(model)
    inner: Any = unwrap_model(model)
    if not is_sublayer_pruned(inner):
        pruned_model_class(inner)
        _to_pruned(inner, spec, dry_run=True)


def remove_sublayers(model: nn.Module, attention: Iterable[int] = (), mlp: Iterable[int] = ()) -> nn.Module:
    """Removes attention and/or MLP sublayers (and their norms), all-or-nothing.

    Blocks left with neither sublayer are removed as whole blocks. A stock model that keeps a partial block is first
    given its pruned class in place (:func:`convert_to_pruned_class`), so the object passed in (or the peft / DDP
    wrapper around it) is the pruned model; a model left with no partial block goes back to its native class, also in
    place.

    Args:
        model: A causal LM (stock or already sublayer-pruned), possibly wrapped by peft or DDP.
        attention: Positions (current numbering) of the blocks whose attention sublayer goes.
        mlp: Positions of the blocks whose MLP sublayer goes.

    Returns:
        ``model`` itself, pruned.

    Raises:
        SublayerIndexError: On invalid or already removed positions, an empty request, or removing every attention
            sublayer (the KV cache and the positions need one); nothing is changed then.
        UnsupportedArchitectureError: If the family has no pruned model class.
        RuntimeError: If a stock model holds weights its pruned class has no place for (see
            :func:`check_conversion_to_pruned_class`); nothing is changed then.
    """
    spec = get_architecture(model)
    inner: Any = unwrap_model(model)
    layers = get_decoder_layers(model)
    num_blocks = len(layers)
    attention = _validate_positions(attention, "Attention", num_blocks)
    mlp = _validate_positions(mlp, "MLP", num_blocks)
    if not attention and not mlp:
        raise SublayerIndexError("No sublayer given for removal.")
    parts = [get_layer_parts(block, spec) for block in layers]
    gone = [f"attention {i}" for i in attention if parts[i].attention is None]
    gone += [f"mlp {i}" for i in mlp if parts[i].mlp is None]
    if gone:
        raise SublayerIndexError(f"Sublayers {gone} are already removed.")
    has_attention = [parts[i].attention is not None and i not in attention for i in range(num_blocks)]
    has_mlp = [parts[i].mlp is not None and i not in mlp for i in range(num_blocks)]
    if not any(has_attention):
        raise SublayerIndexError("At least one attention sublayer must remain (the KV cache and positions need one).")
    empty = [i for i in range(num_blocks) if not has_attention[i] and not has_mlp[i]]
    kept = [i for i in range(num_blocks) if i not in set(empty)]
    partial = any(has_attention[i] != has_mlp[i] for i in kept)
    convert = partial and not is_sublayer_pruned(model)
    if convert:
        check_conversion_to_pruned_class(model)  # converted in place below, checked first

    # Everything below changes the model.
    if convert:
        convert_to_pruned_class(model)
    if empty:
        remove_layers(model, empty)
    new_position = {old: new for new, old in enumerate(kept)}
    new_attention = [new_position[i] for i in attention if i in new_position]
    new_mlp = [new_position[i] for i in mlp if i in new_position]
    if is_sublayer_pruned(model):
        _drop_in_place(model, spec, new_attention, new_mlp)
        if not partial:
            _to_native(inner, spec)
    logger.info(
        "Removed attention of blocks %s and MLP of blocks %s (positions before removal); %d blocks dropped whole.",
        attention,
        mlp,
        len(empty),
    )
    return model


def apply_sublayer_plan(model: nn.Module | ModelFacts, plan: PruningPlan) -> None:
    """Removes the sublayers (and whole blocks) of a sublayer plan (original numbering), in place.

    The plan must already have been checked against the model (``DepthPruner.apply`` does). A stock model is given
    its pruned class in place first.

    Args:
        model: The model (possibly wrapped by peft/DDP), or its resolved facts.
        plan: A sublayer plan.
    """
    facts = as_facts(model)
    original = facts.original_indices
    present = {(s.original_block, s.kind) for s in list_sublayers(facts)}
    attention = sorted(set(plan.removed_attention) | {b for b in plan.removed_blocks if (b, ATTENTION) in present})
    mlp = sorted(set(plan.removed_mlp) | {b for b in plan.removed_blocks if (b, MLP) in present})
    remove_sublayers(facts.model, [original.index(b) for b in attention], [original.index(b) for b in mlp])
