"""Several processes, one decision: which rank decides, and how the others receive what it decided.

Low-level and shared: training (the callback's pruning plan, the merged save) and compensation (the fitted maps) both
decide on rank 0 and broadcast. Nothing here knows what is decided.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["decide_on_main_rank", "rank", "world_size"]

T = TypeVar("T")


def world_size() -> int:
    """Number of processes of the default ``torch.distributed`` group (1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """Rank of this process in the default group (0 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _broadcast_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def decide_on_main_rank(
    decide: Callable[[], T],
    to_json: Callable[[T], Any],
    from_json: Callable[..., T],
    action: str = "deciding what to prune",
    tensors: Callable[[T], list[torch.Tensor]] | None = None,
) -> T:
    """Runs ``decide`` on rank 0 only and gives every rank the same result.

    The result travels as JSON (never pickled code objects), and its large tensors, if any, as tensors. If ``decide``
    raises on rank 0, every rank raises, so no process is left waiting in a collective. ``decide`` must not run
    collectives itself (the other ranks are already waiting in the broadcast).

    Args:
        decide: Computes the decision on rank 0.
        to_json: Turns the decision into JSON-serialisable data (without the tensors).
        from_json: Rebuilds the decision from that data; called as ``from_json(data, tensors)`` when ``tensors`` is
            given, else ``from_json(data)``.
        action: What rank 0 does, for the other ranks' error message.
        tensors: The decision's tensors, broadcast one by one (shapes and dtypes travel in the JSON).

    Returns:
        The decision, identical on every rank (rank 0 gets the object ``decide`` returned).

    Raises:
        RuntimeError: On ranks other than 0, when rank 0 failed (rank 0 re-raises its own error).
    """
    if world_size() == 1:
        return decide()
    payload: list[Any] = [None]
    result: T | None = None
    sent: list[torch.Tensor] = []
    if rank() == 0:
        try:
            result = decide()
            message: dict[str, Any] = {"ok": to_json(result)}
            if tensors is not None:
                sent = [t.detach().contiguous() for t in tensors(result)]
                message["tensors"] = [[list(t.shape), str(t.dtype).removeprefix("torch.")] for t in sent]
            payload[0] = json.dumps(message)
        except BaseException as err:
            payload[0] = json.dumps({"error": f"{type(err).__name__}: {err}"})
            dist.broadcast_object_list(payload, src=0)
            raise
    dist.broadcast_object_list(payload, src=0)
    received = json.loads(payload[0])
    if "error" in received:
        raise RuntimeError(f"Rank 0 failed while {action}: {received['error']}")
    device = _broadcast_device() if tensors is not None else None
    arrived = []
    for index, (shape, dtype) in enumerate(received.get("tensors", [])):
        if rank() == 0:
            dist.broadcast(sent[index].to(device), src=0)
        else:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=device)
            dist.broadcast(tensor, src=0)
            arrived.append(tensor.cpu())
    if rank() == 0 and result is not None:
        return result
    return from_json(received["ok"], arrived) if tensors is not None else from_json(received["ok"])
