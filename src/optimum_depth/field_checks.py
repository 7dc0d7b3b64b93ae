"""Checks of single config fields, shared by the config dataclasses (pruning, compensation, recovery, evaluation)."""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

__all__ = ["check_positive_int", "is_finite_number"]


def check_positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    """Refuses anything but an integer ``>= 1`` (``>= 0`` with ``allow_zero``); booleans are not integers here.

    Args:
        name: The field's name, for the message.
        value: The value to check.
        allow_zero: Whether 0 is allowed.

    Raises:
        ConfigError: Naming the field, the bound and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ConfigError(f"`{name}` must be an integer {bound}, got {value!r}.")


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (booleans are not numbers here).

    Args:
        value: The value to test.

    Returns:
        ``True`` for a finite number.
    """
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
