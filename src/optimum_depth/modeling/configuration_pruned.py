"""Typed configs of pruned checkpoints: ``PrunedLlamaConfig`` and its siblings for the other families.

This file imports nothing from optimum_depth, so it can be copied beside a checkpoint and loaded with
``trust_remote_code=True`` where optimum_depth is not installed.

A block-pruned checkpoint keeps its base ``model_type`` (``"llama"``, ...) so it loads natively everywhere; its
provenance rides along as extra ``config.json`` keys, and ``PrunedLlamaConfig.from_pretrained(path)`` reads it typed.
A sublayer-pruned checkpoint uses the ``pruned_<type>`` model type of these classes.
"""

from __future__ import annotations

import copy
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

PROVENANCE_KEYS = ("surviving_layers", "source_model", "source_num_hidden_layers", "pruning")
SUBLAYER_KEYS = ("skipped_attention", "skipped_mlp")
NO_ATTENTION_LAYER_TYPE = "mlp"
"""``layer_types`` entry of a block whose attention was removed. transformers' caches give such a layer a
``DummyLayer`` that stores nothing, and ``Cache.get_seq_length()`` / mask sizing then read the first block that still
has attention (so removing block 0's attention keeps generation correct)."""


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
        for key in PROVENANCE_KEYS:
            setattr(self, key, kwargs.pop(key, getattr(self, key, None)))
        for key in SUBLAYER_KEYS:
            value = kwargs.pop(key, getattr(self, key, None))
            setattr(self, key, sorted(int(i) for i in (value or [])))
        return kwargs

    @property
    def is_sublayer_pruned(self) -> bool:
        """Whether any attention or MLP sublayer was removed (the checkpoint then needs the pruned model class)."""
        return bool(self.skipped_attention or self.skipped_mlp)

    def check_sublayer_layout(self) -> None:
        """Checks that ``skipped_attention``/``skipped_mlp`` and ``layer_types`` describe the same blocks.

        Raises:
            ValueError: On an out-of-range block, a block without any sublayer, or ``layer_types`` disagreeing
                with ``skipped_attention``.
        """
        num_blocks = self.num_hidden_layers
        for key in SUBLAYER_KEYS:
            bad = [i for i in getattr(self, key) if not 0 <= i < num_blocks]
            if bad:
                raise ValueError(f"`{key}` holds blocks {bad} outside the model's {num_blocks} blocks.")
        empty = sorted(set(self.skipped_attention) & set(self.skipped_mlp))
        if empty:
            raise ValueError(f"Blocks {empty} have neither attention nor MLP; remove them as whole blocks.")
        layer_types = getattr(self, "layer_types", None)
        if layer_types is not None:
            without = [i for i, kind in enumerate(layer_types) if kind == NO_ATTENTION_LAYER_TYPE]
            if without != self.skipped_attention:
                raise ValueError(
                    f"`layer_types` marks blocks {without} as {NO_ATTENTION_LAYER_TYPE!r} but `skipped_attention` is "
                    f"{self.skipped_attention}."
                )

    def validate(self) -> None:
        """Runs the family's validators (blocks without attention count as full attention there) and the layout check."""
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


class PrunedMistralConfig(PrunedConfigMixin, MistralConfig):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Mistral; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_mistral"

    def __post_init__(self, **kwargs):
        # MistralConfig warns about `layer_types`; a sublayer-pruned Mistral needs them to mark attention-free blocks.
        layer_types = kwargs.pop("layer_types", None)
        super().__post_init__(**self._init_pruned_fields(kwargs))
        if layer_types is not None:
            self.layer_types = list(layer_types)


class PrunedQwen2Config(PrunedConfigMixin, Qwen2Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Qwen2; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_qwen2"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))


class PrunedQwen3Config(PrunedConfigMixin, Qwen3Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Qwen3; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_qwen3"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))


class PrunedGemma2Config(PrunedConfigMixin, Gemma2Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Gemma2; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_gemma2"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))


class PrunedGemma3TextConfig(PrunedConfigMixin, Gemma3TextConfig):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Gemma3 (text); see :class:`PrunedConfigMixin`."""

    model_type = "pruned_gemma3_text"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))


class PrunedPhi3Config(PrunedConfigMixin, Phi3Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned Phi3; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_phi3"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))


class PrunedSmolLM3Config(PrunedConfigMixin, SmolLM3Config):  # type: ignore[misc]  # typed from_pretrained
    """Config of a pruned SmolLM3; see :class:`PrunedConfigMixin`."""

    model_type = "pruned_smollm3"

    def __post_init__(self, **kwargs):
        super().__post_init__(**self._init_pruned_fields(kwargs))


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
