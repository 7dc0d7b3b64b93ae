"""Re-save a sublayer-pruned checkpoint with this version's model code (``optimum-depth upgrade``).

A sublayer-pruned checkpoint carries the model code of the optimum-depth release that wrote it, for
``trust_remote_code=True``. When a later transformers release breaks that copy (transformers 5.25 broke the code of
optimum-depth 0.2 for models whose block 0 lost its attention), :func:`upgrade_checkpoint` rewrites ``config.json``
(attention-first ``layer_types``, see :mod:`optimum_depth.modeling.pruned_layout`) and the code files with the
current ones. Weight files and every other file are left as they are; the new config and code are checked by a strict
load of the weights before anything in the folder changes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..constants import MODEL_CONFIG_NAME, REMOTE_CODE_FILES
from ..errors import CheckpointError
from ..publishing.legacy_format import add_legacy_keys
from ..publishing.saving import publish_model_config, write_into_directory

logger = logging.getLogger(__name__)

__all__ = ["upgrade_checkpoint"]


def _read_model_type(folder: Path) -> str:
    config_file = folder / MODEL_CONFIG_NAME
    if not config_file.is_file():
        raise CheckpointError(f"{os.fspath(folder)!r} holds no {MODEL_CONFIG_NAME}: not a checkpoint folder.")
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{os.fspath(config_file)!r} is not valid JSON: {err}.") from err
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise CheckpointError(f"{os.fspath(config_file)!r} has no `model_type`.")
    return data["model_type"]


def _write_config_and_code(config, model_class, folder: Path) -> None:
    from .. import modeling

    config.auto_map = {
        "AutoConfig": f"configuration_pruned.{type(config).__name__}",
        "AutoModelForCausalLM": f"modeling_pruned.{model_class.__name__}",
    }
    config.save_pretrained(folder)
    publish_model_config(folder)  # no machine path, as every save of the library
    add_legacy_keys(folder)
    source = Path(modeling.__file__).parent
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(source / name, folder / name)


def _check_loads(folder: Path, staged: Path) -> None:
    """Loads the weights of ``folder`` with the staged config and code, strictly (nothing missing or unexpected)."""
    from .zoo import load_pretrained_model

    with tempfile.TemporaryDirectory(prefix="optimum-depth-upgrade-") as probe:
        probe_dir = Path(probe)
        for path in staged.iterdir():
            shutil.copyfile(path, probe_dir / path.name)
        for path in folder.iterdir():
            if path.is_file() and not (probe_dir / path.name).exists():
                os.symlink(path.absolute(), probe_dir / path.name)
        load_pretrained_model(probe_dir)


def upgrade_checkpoint(checkpoint: str | os.PathLike) -> list[str]:
    """Rewrites a sublayer-pruned checkpoint's ``config.json`` and model code with this version's.

    Args:
        checkpoint: A local checkpoint folder.

    Returns:
        The names of the files rewritten; empty for a checkpoint that needs nothing (block-pruned and plain
        checkpoints load with transformers' own classes and carry no code).

    Raises:
        CheckpointError: If the folder holds no readable ``config.json``, or its weights do not load strictly with the
            new config (nothing is changed then).
    """
    from transformers import AutoConfig

    from ..modeling import register_pruned_classes

    folder = Path(checkpoint).expanduser()
    model_type = _read_model_type(folder)
    if not model_type.startswith("pruned_"):
        logger.info(
            "%s is a %r checkpoint: it uses transformers' own classes, nothing to upgrade.", folder, model_type
        )
        return []
    register_pruned_classes()
    from ..modeling.modeling_pruned import PRUNED_CAUSAL_LM_CLASSES

    model_class = PRUNED_CAUSAL_LM_CLASSES.get(model_type)
    if model_class is None:
        raise CheckpointError(f"Unknown pruned model type {model_type!r} in {os.fspath(folder)!r}.")
    try:
        config = AutoConfig.from_pretrained(folder)
    except ValueError as err:
        raise CheckpointError(f"The config of {os.fspath(folder)!r} cannot be read: {err}") from err
    written: list[str] = []

    def write(staging: Path) -> None:
        _write_config_and_code(config, model_class, staging)
        _check_loads(folder, staging)
        written.extend(sorted(p.name for p in staging.iterdir()))

    write_into_directory(folder, write)
    logger.info("Upgraded %s: rewrote %s.", folder, ", ".join(written))
    return written
