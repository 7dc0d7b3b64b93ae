"""Typed configs of pruned checkpoints: ``PrunedLlamaConfig`` and its siblings for the other families.

This file imports nothing from optimum_depth but its sibling :mod:`.pruned_layout`, so both can be copied beside a
checkpoint and loaded with ``trust_remote_code=True`` where optimum_depth is not installed.

A block-pruned checkpoint keeps its base ``model_type`` (``"llama"``, ...) so it loads natively everywhere; its
provenance rides along as extra ``config.json`` keys, and ``PrunedLlamaConfig.from_pretrained(path)`` reads it typed.
A sublayer-pruned checkpoint uses the ``pruned_<type>`` model type of these classes; its ``layer_types`` follow the
attention-first layout of :mod:`.pruned_layout`, and older block-order configs are re-written to it on load.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from transformers import (
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
    SmolLM3Config,
)
from transformers.configuration_utils import PreTrainedConfig

from .pruned_layout import (
    LEGACY_NO_ATTENTION_LAYER_TYPES,
    NO_ATTENTION_LAYER_TYPE,
    PROVENANCE_KEYS,
    SUBLAYER_KEYS,
    block_layer_types,
    cache_layer_types,
    provenance_problem,
)

__all__ = [
    "NO_ATTENTION_LAYER_TYPE",
    "PROVENANCE_KEYS",
    "PRUNED_CONFIG_CLASSES",
    "SUBLAYER_KEYS",
    "PrunedConfigMixin",
    "PrunedGemma2Config",
    "PrunedGemma3TextConfig",
    "PrunedLlamaConfig",
    "PrunedMistralConfig",
    "PrunedPhi3Config",
    "PrunedQwen2Config",
    "PrunedQwen3Config",
    "PrunedSmolLM3Config",
    "call_on_first_pruned_config",
    "provenance_problem",
]

_FIRST_USE_HOOKS: list[Callable[[], None]] = []
"""Called once, when the first pruned config is built (optimum_depth registers its model classes there, so that
``import optimum_depth`` stays light; a copy of this file beside a checkpoint has none)."""


def call_on_first_pruned_config(hook: Callable[[], None]) -> None:
    """Runs ``hook`` (once) when the next pruned config is built."""
    _FIRST_USE_HOOKS.append(hook)


def _without_legacy_markers(layer_types: list[str]) -> list[str]:
    return [NO_ATTENTION_LAYER_TYPE if kind in LEGACY_NO_ATTENTION_LAYER_TYPES else kind for kind in layer_types]


class PrunedConfigMixin:
    """Typed access to the provenance that optimum_depth writes into a pruned checkpoint's config.

    Attributes:
        surviving_layers: Original indices of the kept blocks, in order (``None`` for an unpruned model).
        source_model: Name or path of the model that was pruned.
        source_num_hidden_layers: Number of blocks of the source model.
        pruning: What was done: criterion, target, calibration, seed, optimum_depth version.
        skipped_attention: Blocks (current numbering) whose attention sublayer was removed.
        skipped_mlp: Blocks (current numbering) whose MLP sublayer was removed.
    """

    surviving_layers: list[int] | None
    source_model: str | None
    source_num_hidden_layers: int | None
    pruning: dict[str, Any] | None
    skipped_attention: list[int]
    skipped_mlp: list[int]

    def _init_pruned_fields(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Takes the provenance and sublayer keys out of ``kwargs`` (before the family's ``__post_init__``)."""
        while _FIRST_USE_HOOKS:
            _FIRST_USE_HOOKS.pop(0)()
        if kwargs.get("layer_types") is not None:  # families without a `layer_types` field
            kwargs["layer_types"] = _without_legacy_markers(kwargs["layer_types"])
        current = getattr(self, "layer_types", None)
        if current is not None:  # families with one (already set)
            self.layer_types = _without_legacy_markers(current)
        for key in PROVENANCE_KEYS:
            setattr(self, key, kwargs.pop(key, getattr(self, key, None)))
        for key in SUBLAYER_KEYS:
            value = kwargs.pop(key, getattr(self, key, None))
            setattr(self, key, sorted(int(i) for i in (value or [])))
        self.check_provenance()  # a config.json edited or corrupted by hand is refused on load
        return kwargs

    def _finish_pruned_fields(self) -> None:
        """Re-writes ``layer_types`` attention-first (after the family's ``__post_init__``); older block-order and
        ``"mlp"``-marked configs are read too (see :func:`~.pruned_layout.block_layer_types`)."""
        if getattr(self, "layer_types", None) is not None:
            self.layer_types = cache_layer_types(block_layer_types(self))

    @property
    def is_sublayer_pruned(self) -> bool:
        """Whether any attention or MLP sublayer was removed (the checkpoint then needs the pruned model class)."""
        return bool(self.skipped_attention or self.skipped_mlp)

    def check_sublayer_layout(self) -> None:
        """Checks that ``skipped_attention``/``skipped_mlp`` and ``layer_types`` describe the same blocks.

        Raises:
            ValueError: On an out-of-range block, a block without any sublayer, or ``layer_types`` disagreeing
                with ``skipped_attention`` (in either layout).
        """
        num_blocks = self.num_hidden_layers
        for key in SUBLAYER_KEYS:
            bad = [i for i in getattr(self, key) if not 0 <= i < num_blocks]
            if bad:
                raise ValueError(f"`{key}` holds blocks {bad} outside the model's {num_blocks} blocks.")
        empty = sorted(set(self.skipped_attention) & set(self.skipped_mlp))
        if empty:
            raise ValueError(f"Blocks {empty} have neither attention nor MLP; remove them as whole blocks.")
        block_layer_types(self)  # raises if `layer_types` and `skipped_attention` disagree

    def check_provenance(self) -> None:
        """Checks that ``surviving_layers`` and ``source_num_hidden_layers`` describe this model's blocks.

        Raises:
            ValueError: Naming the inconsistency (see :func:`provenance_problem`).
        """
        problem = provenance_problem(self.surviving_layers, self.num_hidden_layers, self.source_num_hidden_layers)
        if problem is not None:
            raise ValueError(f"Inconsistent pruning provenance in this config: {problem}.")

    def validate(self) -> None:
        """Runs the family's validators (blocks without attention count as full attention there), the layout check
        and the provenance check."""
        self.check_provenance()
        self.check_sublayer_layout()
        probe = copy.copy(self)
        layer_types = getattr(self, "layer_types", None)
        if layer_types is not None:
            probe.layer_types = ["full_attention" if k == NO_ATTENTION_LAYER_TYPE else k for k in layer_types]
        base_validate = getattr(super(PrunedConfigMixin, probe), "validate", None)
        if base_validate is not None:
            base_validate()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):  # type: ignore[override]
        """Loads the config of a pruned (or base) checkpoint of the matching family, typed.

        Unlike ``PreTrainedConfig.from_pretrained`` this accepts the base ``model_type`` silently: a block-pruned
        checkpoint keeps ``"llama"`` on purpose.
        """
        config_dict, kwargs = cls.get_config_dict(pretrained_model_name_or_path, **kwargs)
        base_type = cls.model_type[len("pruned_") :]
        found = config_dict.get("model_type")
        if found not in (cls.model_type, base_type):
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {found!r} model; {cls.__name__} reads {base_type!r} "
                f"or {cls.model_type!r} checkpoints."
            )
        config_dict = {**config_dict, "model_type": cls.model_type}
        return cls.from_dict(config_dict, **kwargs)


class PrunedLlamaConfig(PrunedConfigMixin, LlamaConfig):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Llama; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_llama"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))
        self._finish_pruned_fields()


class PrunedMistralConfig(PrunedConfigMixin, MistralConfig):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Mistral; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_mistral"

    def __post_init__(self, **kwargs):
        # MistralConfig warns about `layer_types`; a sublayer-pruned Mistral needs them to mark attention-free blocks.
        layer_types = kwargs.pop("layer_types", None)
        super().__post_init__(**self._init_pruned_fields(kwargs))
        if layer_types is not None:
            self.layer_types = list(layer_types)
        self._finish_pruned_fields()


class PrunedQwen2Config(PrunedConfigMixin, Qwen2Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Qwen2; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_qwen2"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))
        self._finish_pruned_fields()


class PrunedQwen3Config(PrunedConfigMixin, Qwen3Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Qwen3; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_qwen3"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))
        self._finish_pruned_fields()


class PrunedGemma2Config(PrunedConfigMixin, Gemma2Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Gemma2; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_gemma2"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))
        self._finish_pruned_fields()


class PrunedGemma3TextConfig(PrunedConfigMixin, Gemma3TextConfig):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Gemma3 (text); see :class:`PrunedConfigMixin`."""

    model_type = "pruned_gemma3_text"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))
        self._finish_pruned_fields()


class PrunedPhi3Config(PrunedConfigMixin, Phi3Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Phi3; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_phi3"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))
        self._finish_pruned_fields()


class PrunedSmolLM3Config(PrunedConfigMixin, SmolLM3Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned SmolLM3; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_smollm3"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))
        self._finish_pruned_fields()


PRUNED_CONFIG_CLASSES: dict[str, type[PreTrainedConfig]] = {
    cls.model_type[len("pruned_") :]: cls
    for cls in (
        PrunedLlamaConfig,
        PrunedMistralConfig,
        PrunedQwen2Config,
        PrunedQwen3Config,
        PrunedGemma2Config,
        PrunedGemma3TextConfig,
        PrunedPhi3Config,
        PrunedSmolLM3Config,
    )
}
"""Base ``model_type`` -> pruned config class."""
