"""Deprecated location of :mod:`optimum_depth.loading` (0.2 documented ``from optimum_depth.model_zoo import ...``).

Importing it warns once and gives the same objects as :mod:`optimum_depth.loading`; it will be removed in 0.5.
"""

from __future__ import annotations

import warnings

from .loading.zoo import (
    DEFAULT_MODEL_ID,
    NAMED_MODELS,
    NamedModel,
    cache_dir,
    default_model_path,
    load_model_and_tokenizer,
    load_pretrained_model,
    materialise_gguf,
    named_model_path,
)

warnings.warn(
    "`optimum_depth.model_zoo` moved to `optimum_depth.loading` (e.g. `from optimum_depth.loading import "
    "load_model_and_tokenizer`); the old module will be removed in 0.5.",
    FutureWarning,
    stacklevel=2,
)

__all__ = [
    "DEFAULT_MODEL_ID",
    "NAMED_MODELS",
    "NamedModel",
    "cache_dir",
    "default_model_path",
    "load_model_and_tokenizer",
    "load_pretrained_model",
    "materialise_gguf",
    "named_model_path",
]
