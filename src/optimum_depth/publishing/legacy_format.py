"""Keys that keep a checkpoint readable by tools one transformers major release behind (4.x).

transformers 5 writes rotary settings only as ``rope_parameters`` and names fast tokenizers ``TokenizersBackend``;
transformers 4 (which exporters such as ``optimum-onnx`` still run on) reads ``rope_theta`` / ``rope_scaling`` (and
Gemma 3's ``rope_local_base_freq``) and does not know ``TokenizersBackend``, so it silently uses a default rotary base
(wrong logits) and cannot load the tokenizer. :func:`add_legacy_keys` writes the 4.x spelling beside the 5.x one;
transformers 5 reads such files with identical results (tested).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..constants import MODEL_CONFIG_NAME, TOKENIZER_CONFIG_NAME

__all__ = ["add_legacy_keys", "legacy_config_keys", "legacy_tokenizer_keys"]

LEGACY_FAST_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
"""The class name both major releases load a ``tokenizer.json`` tokenizer with."""


def _rope_keys(parameters: dict[str, Any]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    if "rope_theta" in parameters:
        keys["rope_theta"] = parameters["rope_theta"]
    if parameters.get("rope_type", "default") != "default":
        keys["rope_scaling"] = {k: v for k, v in parameters.items() if k != "rope_theta"}
    return keys


def legacy_config_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The transformers 4.x keys implied by a transformers 5 ``config.json`` that it does not already hold.

    Args:
        config: The content of ``config.json``.

    Returns:
        ``rope_theta`` (and ``rope_scaling`` for non-default rotary types) from ``rope_parameters``; for configs
        with one set of rotary parameters per attention type (Gemma 3), the full-attention one, plus the sliding one's
        base as ``rope_local_base_freq``.
    """
    parameters = config.get("rope_parameters")
    keys: dict[str, Any] = {}
    if isinstance(parameters, dict) and isinstance(parameters.get("full_attention"), dict):
        keys.update(_rope_keys(parameters["full_attention"]))
        local = parameters.get("sliding_attention")
        if isinstance(local, dict) and "rope_theta" in local:
            keys["rope_local_base_freq"] = local["rope_theta"]
    elif isinstance(parameters, dict):
        keys.update(_rope_keys(parameters))
    return {key: value for key, value in keys.items() if key not in config}


def legacy_tokenizer_keys(tokenizer_config: dict[str, Any], has_tokenizer_json: bool) -> dict[str, Any]:
    """The ``tokenizer_config.json`` changes that let transformers 4.x load a transformers 5 fast tokenizer.

    Args:
        tokenizer_config: The content of ``tokenizer_config.json``.
        has_tokenizer_json: Whether ``tokenizer.json`` sits beside it (what both releases build the tokenizer from).

    Returns:
        For a ``TokenizersBackend`` tokenizer: ``tokenizer_class`` ``"PreTrainedTokenizerFast"``, and the model
        inputs transformers 5 gives it (4.x's ``PreTrainedTokenizerFast`` would add ``token_type_ids``, which
        ``generate`` refuses); else nothing.
    """
    if not (has_tokenizer_json and tokenizer_config.get("tokenizer_class") == "TokenizersBackend"):
        return {}
    keys: dict[str, Any] = {"tokenizer_class": LEGACY_FAST_TOKENIZER_CLASS}
    if "model_input_names" not in tokenizer_config:
        keys["model_input_names"] = ["input_ids", "attention_mask"]
    return keys


def _update_json(path: Path, extra: dict[str, Any]) -> None:
    if not extra:
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(extra)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def add_legacy_keys(folder: str | Path) -> None:
    """Adds the transformers 4.x keys to the ``config.json`` and ``tokenizer_config.json`` saved in ``folder``.

    Args:
        folder: A folder ``save_pretrained`` wrote into (files that are absent are skipped).
    """
    folder = Path(folder)
    config_path = folder / MODEL_CONFIG_NAME
    if config_path.is_file():
        _update_json(config_path, legacy_config_keys(json.loads(config_path.read_text(encoding="utf-8"))))
    tokenizer_path = folder / TOKENIZER_CONFIG_NAME
    if tokenizer_path.is_file():
        tokenizer_config = json.loads(tokenizer_path.read_text(encoding="utf-8"))
        _update_json(tokenizer_path, legacy_tokenizer_keys(tokenizer_config, (folder / "tokenizer.json").is_file()))
