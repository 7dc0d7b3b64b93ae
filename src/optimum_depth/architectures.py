"""Where each supported model family keeps its decoder blocks, sublayers, norms and per-layer config fields.

Every fact about a family lives in one plain dict, :data:`ARCHITECTURES`, keyed by ``config.model_type``. The rest of
the library asks this module for the decoder-layer list of a model (unwrapping peft, DDP/FSDP and accelerate
wrappers) and never hard-codes attribute paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from .errors import UnsupportedArchitectureError
from .provenance import original_layer_indices, source_num_layers

__all__ = [
    "ARCHITECTURES",
    "ArchitectureSpec",
    "DecoderLayerParts",
    "ModelFacts",
    "UnsupportedArchitectureError",
    "as_facts",
    "config_fingerprint",
    "count_parameters",
    "get_architecture",
    "get_decoder_layers",
    "get_layer_parts",
    "iter_layer_parts",
    "resolve_model",
    "set_decoder_layers",
    "unwrap_model",
]


@dataclass(frozen=True)
class ArchitectureSpec:
    """Facts about one decoder family.

    Args:
        model_type: The ``config.model_type`` of the family.
        decoder_path: Dotted path from the causal-LM module to the decoder (the module owning ``layers``).
        layers_attr: Name of the ``nn.ModuleList`` of decoder blocks on the decoder.
        attention_attr: Attribute of a block holding its self-attention sublayer.
        mlp_attr: Attribute of a block holding its feed-forward sublayer.
        attention_norms: Norms that belong to the attention sublayer (its pre-norm, and a post-norm where the family
            has one). They are removed together with the attention sublayer.
        mlp_norms: Norms that belong to the feed-forward sublayer.
        per_layer_sequences: Config fields holding one entry per decoder block, in block order. ``layer_types`` is
            one for every family (sublayer-pruned configs of Llama and Phi-3 have it too).
        per_layer_index_lists: Config fields holding a list of block indices (renumbered after surgery). By default
            the blocks that lost their attention / MLP sublayer (sublayer-pruned checkpoints).
        norm_after_mlp: Whether a norm follows the MLP inside the block (Gemma's sandwich norms): the MLP's
            contribution to the residual stream is then not linear in its down-projection.
    """

    model_type: str
    decoder_path: str = "model"
    layers_attr: str = "layers"
    attention_attr: str = "self_attn"
    mlp_attr: str = "mlp"
    attention_norms: tuple[str, ...] = ("input_layernorm",)
    mlp_norms: tuple[str, ...] = ("post_attention_layernorm",)
    per_layer_sequences: tuple[str, ...] = ("layer_types",)
    per_layer_index_lists: tuple[str, ...] = ("skipped_attention", "skipped_mlp")
    norm_after_mlp: bool = False


_GEMMA_ATTENTION_NORMS = ("input_layernorm", "post_attention_layernorm")
_GEMMA_MLP_NORMS = ("pre_feedforward_layernorm", "post_feedforward_layernorm")

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "llama": ArchitectureSpec("llama"),
    "mistral": ArchitectureSpec("mistral"),
    "qwen2": ArchitectureSpec("qwen2"),
    "qwen3": ArchitectureSpec("qwen3"),
    "gemma2": ArchitectureSpec(
        "gemma2",
        attention_norms=_GEMMA_ATTENTION_NORMS,
        mlp_norms=_GEMMA_MLP_NORMS,
        norm_after_mlp=True,
    ),
    "gemma3_text": ArchitectureSpec(
        "gemma3_text",
        attention_norms=_GEMMA_ATTENTION_NORMS,
        mlp_norms=_GEMMA_MLP_NORMS,
        norm_after_mlp=True,
    ),
    "phi3": ArchitectureSpec("phi3"),
    "smollm3": ArchitectureSpec("smollm3", per_layer_sequences=("layer_types", "no_rope_layers")),
}
"""Supported families, keyed by ``config.model_type``. Pruned checkpoints of sublayer granularity use their own
``pruned_<type>`` model types, which map back to the base family here."""

PRUNED_MODEL_TYPE_PREFIX = "pruned_"


@dataclass
class DecoderLayerParts:
    """The modules of one decoder block, as found by :func:`get_layer_parts`.

    Args:
        block: The decoder block itself.
        attention: Its self-attention sublayer, or ``None`` when it was removed.
        mlp: Its feed-forward sublayer, or ``None`` when it was removed.
        attention_norms: The norms belonging to the attention sublayer that are present.
        mlp_norms: The norms belonging to the feed-forward sublayer that are present.
    """

    block: nn.Module
    attention: nn.Module | None
    mlp: nn.Module | None
    attention_norms: list[nn.Module]
    mlp_norms: list[nn.Module]


def unwrap_model(model: Any) -> Any:
    """Returns the causal-LM module under peft, DDP/FSDP (``.module``) and ``torch.compile`` wrappers.

    Args:
        model: A causal LM, possibly wrapped.

    Returns:
        The innermost ``PreTrainedModel`` with a ``config``.
    """
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and hasattr(model, "peft_config"):  # peft PeftModel
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, nn.Module) and not hasattr(model, "config"):
            model = model.module  # DistributedDataParallel, FSDP, DataParallel
        else:
            break
    return model


def base_model_type(model_type: str) -> str:
    """Maps ``pruned_llama`` (a sublayer-pruned checkpoint) back to ``llama``; other types pass through."""
    if model_type.startswith(PRUNED_MODEL_TYPE_PREFIX):
        return model_type[len(PRUNED_MODEL_TYPE_PREFIX) :]
    return model_type


def get_architecture(model: nn.Module) -> ArchitectureSpec:
    """Finds the :class:`ArchitectureSpec` of a (possibly wrapped) causal LM.

    Args:
        model: A causal LM, possibly wrapped by peft, DDP or FSDP.

    Returns:
        The family's spec.

    Raises:
        UnsupportedArchitectureError: If the model has no config or its ``model_type`` is not supported.
    """
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    if config is None:
        raise UnsupportedArchitectureError(
            f"{type(inner).__name__} has no `config`; optimum_depth works on transformers causal LMs of the families "
            f"{sorted(ARCHITECTURES)}."
        )
    return get_architecture_for_config(config)


def get_architecture_for_config(config) -> ArchitectureSpec:
    """Same as :func:`get_architecture`, from a config alone."""
    model_type = base_model_type(getattr(config, "model_type", "") or "")
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        raise UnsupportedArchitectureError(
            f"Model type {getattr(config, 'model_type', None)!r} is not supported by optimum_depth. "
            f"Supported model types: {', '.join(sorted(ARCHITECTURES))}."
        )
    return spec


def _get_decoder(model: nn.Module, spec: ArchitectureSpec) -> Any:
    module = unwrap_model(model)
    for name in spec.decoder_path.split("."):
        module = getattr(module, name, None)
        if module is None:
            raise UnsupportedArchitectureError(
                f"{type(unwrap_model(model)).__name__} has no `{spec.decoder_path}` decoder: pass a causal LM "
                f"(e.g. AutoModelForCausalLM), not a bare backbone or a task head of another kind."
            )
    return module


def get_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Returns the ``nn.ModuleList`` of decoder blocks of a supported causal LM.

    Args:
        model: A causal LM, possibly wrapped.

    Returns:
        The model's decoder blocks, in order.
    """
    spec = get_architecture(model)
    layers = getattr(_get_decoder(model, spec), spec.layers_attr, None)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(f"Could not find the decoder layers `{spec.layers_attr}` of this model.")
    return layers


def set_decoder_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    """Replaces the decoder-block list of a model (used by surgery)."""
    spec = get_architecture(model)
    setattr(_get_decoder(model, spec), spec.layers_attr, layers)


def get_layer_parts(block: nn.Module, spec: ArchitectureSpec) -> DecoderLayerParts:
    """Finds the sublayers and norms of one decoder block.

    Args:
        block: A decoder block of the family described by ``spec``.
        spec: The family's spec.

    Returns:
        The block's parts; a removed sublayer (or norm) is ``None`` (or absent from the list).
    """

    def present(name: str) -> nn.Module | None:
        module = getattr(block, name, None)
        return module if isinstance(module, nn.Module) else None

    return DecoderLayerParts(
        block=block,
        attention=present(spec.attention_attr),
        mlp=present(spec.mlp_attr),
        attention_norms=[m for m in (present(n) for n in spec.attention_norms) if m is not None],
        mlp_norms=[m for m in (present(n) for n in spec.mlp_norms) if m is not None],
    )


def iter_layer_parts(model: nn.Module) -> Iterator[DecoderLayerParts]:
    """Yields :class:`DecoderLayerParts` for each decoder block of ``model``, in order."""
    spec = get_architecture(model)
    for block in get_decoder_layers(model):
        yield get_layer_parts(block, spec)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module (shared tensors, such as tied embeddings, counted once)."""
    seen: set[int] = set()
    total = 0
    for param in module.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


FINGERPRINT_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size")
"""Config fields that identify the model a plan or scores were made for (with the base family)."""


def config_fingerprint(config) -> dict[str, Any]:
    """The facts that identify which model a plan was made for: base family and shape-defining sizes.

    They do not change when blocks or sublayers are removed, so a pruned model has its source's fingerprint.

    Args:
        config: A model config.

    Returns:
        ``{"model_type": <base family>, "hidden_size": ..., ...}`` (fields the config lacks are left out).
    """
    fingerprint: dict[str, Any] = {"model_type": base_model_type(getattr(config, "model_type", "") or "")}
    for key in FINGERPRINT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, (int, str)):
            fingerprint[key] = value
    return fingerprint


@dataclass(frozen=True)
class ModelFacts:
    """What the library needs to know about a model, resolved once per call and passed down.

    Args:
        model: The model as given (possibly wrapped by peft, DDP or ``torch.compile``).
        inner: The unwrapped causal LM.
        spec: Its family's :class:`ArchitectureSpec`.
        layers: Its decoder blocks.
        original_indices: Original index of each current block (``surviving_layers``).
        source_num_layers: Number of blocks of the original model.
    """

    model: nn.Module
    inner: Any
    spec: ArchitectureSpec
    layers: nn.ModuleList
    original_indices: list[int]
    source_num_layers: int

    @property
    def config(self) -> Any:
        """The unwrapped model's config."""
        return self.inner.config

    @property
    def num_layers(self) -> int:
        """Number of decoder blocks."""
        return len(self.layers)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """See :func:`config_fingerprint`."""
        return config_fingerprint(self.inner.config)


def as_facts(model: nn.Module | ModelFacts) -> ModelFacts:
    """``model``'s :class:`ModelFacts` (resolved now unless they are given already)."""
    return model if isinstance(model, ModelFacts) else resolve_model(model)


def resolve_model(model: nn.Module) -> ModelFacts:
    """Resolves the facts of a (possibly wrapped) causal LM once: family, decoder blocks, provenance.

    Args:
        model: A causal LM of a supported family, possibly wrapped.

    Returns:
        Its :class:`ModelFacts`.

    Raises:
        UnsupportedArchitectureError: If the model's family is not supported.
        ProvenanceError: If its recorded provenance is inconsistent.
    """
    spec = get_architecture(model)
    inner = unwrap_model(model)
    layers = getattr(_get_decoder(inner, spec), spec.layers_attr, None)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(f"Could not find the decoder layers `{spec.layers_attr}` of this model.")
    return ModelFacts(
        model=model,
        inner=inner,
        spec=spec,
        layers=layers,
        original_indices=original_layer_indices(inner.config),
        source_num_layers=source_num_layers(inner.config),
    )
