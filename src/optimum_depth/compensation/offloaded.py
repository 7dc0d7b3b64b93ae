"""Changing a weight that accelerate has offloaded (CPU or disk offload, ``device_map`` with ``"disk"``).

An offloaded module holds ``meta`` tensors; its real weights live in the ``weights_map`` of an accelerate
``AlignDevicesHook`` on it or on one of its ancestors, and are brought in at each forward. Writing into the ``meta``
tensor does nothing, silently, so a fold into an offloaded layer must write into that map instead: a CPU tensor in
the loader's in-memory ``state_dict`` (which takes precedence over the copy on disk; the disk file is left as it is).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedArchitectureError

__all__ = ["update_weight"]


def _offload_weights_map(module: nn.Module) -> Any:
    """The weights map of an offloading accelerate hook on ``module`` itself, or ``None``."""
    hook = getattr(module, "_hf_hook", None)
    hooks = getattr(hook, "hooks", None) or ([hook] if hook is not None else [])  # SequentialHook or one hook
    for candidate in hooks:
        weights_map = getattr(candidate, "weights_map", None)
        if getattr(candidate, "offload", False) and weights_map is not None:
            return weights_map
    return None


def _storage(weights_map: Any, key: str) -> tuple[MutableMapping, str]:
    """The mutable mapping and full key that ``weights_map[key]`` reads from (through nested prefixes)."""
    while hasattr(weights_map, "prefix") and hasattr(weights_map, "dataset"):  # accelerate's PrefixedDataset
        key = f"{weights_map.prefix}{key}"
        weights_map = weights_map.dataset
    storage = getattr(weights_map, "state_dict", weights_map)  # OffloadedWeightsLoader keeps RAM tensors there
    if not isinstance(storage, MutableMapping):
        raise UnsupportedArchitectureError(
            f"Cannot write the offloaded weight {key!r}: accelerate keeps it in a read-only {type(storage).__name__}."
        )
    return storage, key


def _offloaded_location(root: nn.Module, linear: nn.Module) -> tuple[Any, str]:
    """``(weights map, key inside it)`` holding ``linear.weight`` under an offloading hook of it or an ancestor."""
    path = next((name for name, module in root.named_modules() if module is linear), None)
    if path is None:
        raise ValueError("The layer is not a submodule of the model.")
    parts = path.split(".") if path else []
    for depth in range(len(parts), -1, -1):
        ancestor = root.get_submodule(".".join(parts[:depth]))
        weights_map = _offload_weights_map(ancestor)
        if weights_map is not None:
            relative = ".".join([*parts[depth:], "weight"])
            return weights_map, relative
    raise UnsupportedArchitectureError(
        f"The weight of {path!r} is on the 'meta' device and no accelerate offload hook holds it: load the weights first."
    )


@torch.no_grad()
def update_weight(root: nn.Module, linear: nn.Module, new_weight: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Replaces ``linear.weight`` by ``new_weight(current weight)``, wherever the weight really lives.

    Args:
        root: The model ``linear`` belongs to (where accelerate's hooks were attached).
        linear: The layer (a ``Linear``, or a norm with a ``weight``).
        new_weight: Maps the current weight to the new one (same shape and dtype).
    """
    weight = linear.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(linear).__name__} has no weight tensor to update.")
    if weight.device.type != "meta":
        weight.copy_(new_weight(weight))
        return
    weights_map, key = _offloaded_location(root, linear)
    current = weights_map[key]
    updated = new_weight(current).to(device=current.device, dtype=current.dtype).contiguous()
    storage, full_key = _storage(weights_map, key)
    storage[full_key] = updated
