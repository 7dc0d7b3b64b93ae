"""Every place where optimum_depth's model code leans on transformers beyond its documented API, in one module.

Copied beside every sublayer-pruned checkpoint with the other ``trust_remote_code`` files, so it imports only the
standard library, ``packaging`` and (inside functions) transformers. Each entry names the transformers releases it
was checked on; ``tests/modeling/test_transformers_compat.py`` has one test per entry, and CI runs it on the lowest
and the newest release that ``pyproject.toml`` admits.

* :data:`CACHE_KWARG`: the name of the KV-cache argument (``cache`` since 5.24; ``past_key_values`` is deprecated).
* :func:`untested_transformers_message` / :func:`warn_if_untested_transformers`: the range of releases this code was
  tested with, and the one warning a checkpoint's code gives under any other release.
* :func:`register_deferred_config`: ``AutoConfig`` learns the pruned model types at ``import optimum_depth`` without
  importing the families' config modules (which costs more than half a second): it is given a small stand-in class
  per model type that builds the real config class on first use. ``AutoConfig.register`` checks the model type only
  for ``PreTrainedConfig`` subclasses, and ``AutoConfig.from_pretrained`` / ``for_model`` only call ``from_dict``
  or the class itself (checked on 5.24 and 5.25). Where a release refuses the stand-in, the real class is
  registered at once instead: slower, never wrong.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

CODE_VERSION = "0.3.0"
"""The optimum-depth release this code belongs to (recorded in the copy written beside a checkpoint)."""

TESTED_TRANSFORMERS = ("5.24", "5.25")
"""Oldest and newest transformers minor releases this code was tested with (both ends of CI)."""

CACHE_KWARG = "cache"
"""The KV-cache argument and output field of transformers models (``cache`` since 5.24; 5.24 and 5.25 still accept
``past_key_values`` with a deprecation warning)."""

UPGRADE_HINT = (
    "re-save the checkpoint with current code (`pip install -U optimum-depth`, then `optimum-depth upgrade "
    "<checkpoint>`), or load it with optimum-depth installed and imported, which uses the package's own classes "
    "instead of the copy in the checkpoint"
)


class UntestedTransformersWarning(UserWarning):
    """The model code of a pruned checkpoint runs under a transformers release it was not tested with."""


def _minor(version: str) -> tuple[int, int]:
    from packaging.version import Version

    release = Version(version).release
    return release[0], release[1] if len(release) > 1 else 0


def untested_transformers_message(installed: str) -> str | None:
    """The warning for ``installed`` transformers, or ``None`` when it lies within :data:`TESTED_TRANSFORMERS`.

    Args:
        installed: A transformers version string, e.g. ``"5.26.0"``.

    Returns:
        One sentence naming both versions and the fix, or ``None``.
    """
    low, high = (_minor(v) for v in TESTED_TRANSFORMERS)
    if low <= _minor(installed) <= high:
        return None
    return (
        f"This sublayer-pruned checkpoint's model code was written by optimum-depth {CODE_VERSION} and tested with "
        f"transformers {TESTED_TRANSFORMERS[0]} to {TESTED_TRANSFORMERS[1]}, but transformers {installed} is "
        f"installed. If loading or generation fails, {UPGRADE_HINT}."
    )


def warn_if_untested_transformers() -> None:
    """Warns (once per import of the checkpoint's code) when the installed transformers lies outside
    :data:`TESTED_TRANSFORMERS`."""
    from importlib.metadata import version

    message = untested_transformers_message(version("transformers"))
    if message is not None:
        warnings.warn(message, UntestedTransformersWarning, stacklevel=3)


def register_deferred_config(model_type: str, load_config_class: Callable[[], type]) -> None:
    """Makes ``AutoConfig`` read checkpoints of ``model_type`` without importing their config class now.

    Args:
        model_type: A pruned model type, e.g. ``"pruned_llama"``.
        load_config_class: Imports and returns the real config class (and registers it, replacing the stand-in).
    """

    def build(cls: type, *args: Any, **kwargs: Any) -> Any:  # `AutoConfig.for_model` calls the class
        return load_config_class()(*args, **kwargs)

    def from_dict(cls: type, config_dict: dict, **kwargs: Any) -> Any:  # `AutoConfig.from_pretrained`
        return load_config_class().from_dict(config_dict, **kwargs)

    stand_in = type(
        f"Deferred_{model_type}_config",
        (),
        {
            "__doc__": f"Stands in AutoConfig's registry for the {model_type} config until it is first used.",
            "__module__": __name__,
            "model_type": model_type,
            "__new__": build,
            "from_dict": classmethod(from_dict),
        },
    )
    try:
        _register_with_auto_config(model_type, stand_in, exist_ok=True)
    except (TypeError, ValueError):  # a release that checks the class: register the real one now
        _register_with_auto_config(model_type, load_config_class(), exist_ok=True)


def _register_with_auto_config(model_type: str, config_class: type, exist_ok: bool = False) -> None:
    from transformers import AutoConfig

    AutoConfig.register(model_type, config_class, exist_ok=exist_ok)
