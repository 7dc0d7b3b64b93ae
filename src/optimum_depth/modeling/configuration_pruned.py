"""Typed configs of pruned checkpoints: ``PrunedLlamaConfig`` and its siblings for the other families.

This file imports nothing from optimum_depth, so it can be copied beside a checkpoint and loaded with
``trust_remote_code=True`` where optimum_depth is not installed.

A block-pruned checkpoint keeps its base ``model_type`` (``"llama"``, ...) so it loads natively everywhere; its
provenance rides along as extra ``config.json`` keys, and ``PrunedLlamaConfig.from_pretrained(path)`` reads it typed.
A sublayer-pruned checkpoint uses the ``pruned_<type>`` model type of these classes.
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

PROVENANCE_KEYS = ("surviving_layers", "source_model", "source_num_hidden_layers", "pruning")
SUBLAYER_KEYS = ("skipped_attention", "skipped_mlp")
NO_ATTENTION_LAYER_TYPE = "moe"
"""``layer_types`` entry of a block whose attention was removed. It is the one entry transformers both accepts in any
config (``PreTrainedConfig`` validates ``layer_types``; nemotron_h uses it for its attention-free layers) and treats
as attention-free: every cache gives such a layer a ``DummyLayer`` that stores nothing, and ``Cache.get_seq_length()``
/ mask sizing then read the first block that still has attention (so removing block 0's attention keeps generation
correct). Because the entry is valid for plain transformers, a tool that reads the checkpoint's ``config.json``
without the pruned classes (``AutoTokenizer``, a generic ``PreTrainedConfig``) does not reject it."""

LEGACY_NO_ATTENTION_LAYER_TYPES = ("mlp",)
"""Entries that marked attention-free blocks in checkpoints of optimum-depth 0.1; read as
:data:`NO_ATTENTION_LAYER_TYPE`."""


def provenance_problem(surviving_layers: Any, num_hidden_layers: int, source_num_hidden_layers: Any) -> str | None:
    """What is wrong with a config's pruning provenance, or ``None`` when it is consistent.

    Consistent means: ``source_num_hidden_layers`` is a positive integer (or absent), and ``surviving_layers`` (when
    present) is a strictly increasing list of ``num_hidden_layers`` integers within the source model's blocks.

    Args:
        surviving_layers: ``config.surviving_layers``.
        num_hidden_layers: ``config.num_hidden_layers``.
        source_num_hidden_layers: ``config.source_num_hidden_layers``.

    Returns:
        A sentence naming the problem, or ``None``.
    """

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    source = source_num_hidden_layers
    if source is not None and (not is_int(source) or source < 1):
        return f"source_num_hidden_layers={source!r} is not a positive integer"
    if surviving_layers is None:
        return None
    source = num_hidden_layers if source is None else source
    values = surviving_layers
    if not isinstance(values, (list, tuple)) or not all(is_int(i) for i in values):
        return f"surviving_layers={values!r} is not a list of integers"
    if len(values) != num_hidden_layers:
        return f"surviving_layers has {len(values)} entries for num_hidden_layers={num_hidden_layers}"
    if any(values[i + 1] <= values[i] for i in range(len(values) - 1)):
        return f"surviving_layers={list(values)} is not strictly increasing (duplicates or wrong order)"
    if values and (values[0] < 0 or values[-1] >= source):
        return f"surviving_layers={list(values)} names blocks outside the source model's {source} blocks"
    return None


def _current_layer_types(layer_types: list[str]) -> list[str]:
    return [NO_ATTENTION_LAYER_TYPE if kind in LEGACY_NO_ATTENTION_LAYER_TYPES else kind for kind in layer_types]


_FIRST_USE_HOOKS: list[Callable[[], None]] = []
"""Called once, when the first pruned config is built (optimum_depth registers its model classes there, so that
``import optimum_depth`` stays light; a copy of this file beside a checkpoint has none)."""


def call_on_first_pruned_config(hook: Callable[[], None]) -> None:
    """Runs ``hook`` when the first pruned config is built (at once if one was built already)."""
    _FIRST_USE_HOOKS.append(hook)


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
        while _FIRST_USE_HOOKS:
            _FIRST_USE_HOOKS.pop(0)()
        if kwargs.get("layer_types") is not None:  # families without a `layer_types` field
            kwargs["layer_types"] = _current_layer_types(kwargs["layer_types"])
        current = getattr(self, "layer_types", None)
        if current is not None:  # families with one (already set)
            self.layer_types = _current_layer_types(current)
        for key in PROVENANCE_KEYS:
            setattr(self, key, kwargs.pop(key, getattr(self, key, None)))
        for key in SUBLAYER_KEYS:
            value = kwargs.pop(key, getattr(self, key, None))
            setattr(self, key, sorted(int(i) for i in (value or [])))
        self.check_provenance()  # a config.json edited or corrupted by hand is refused on load
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
