"""Straightforward references for the FinerCut tests: textbook distances and an exhaustive greedy search."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from optimum_depth.sublayers.candidates import ATTENTION, list_sublayers
from optimum_depth.sublayers.surgery import remove_sublayers

SUPPORTED_FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "smollm3"]


def textbook_distance(name: str, dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Sum over tokens (sequences for ``norm``) of the distance, written from the definitions."""
    dense, pruned = dense.double(), pruned.double()
    p, q = dense.softmax(-1), pruned.softmax(-1)
    m = 0.5 * (p + q)

    def kl(a, b):  # sum_v a log(a / b)
        return (a * (a.log() - b.log())).sum(-1)

    if name == "js":
        return float((0.5 * (kl(p, m) + kl(q, m))).sum())
    if name == "js_finercut":
        return float((0.5 * (kl(m, p) + kl(m, q))).sum())
    if name == "kl":
        return float(kl(p, q).sum())
    if name == "angular":
        cosine = (dense * pruned).sum(-1) / (dense.norm(dim=-1) * pruned.norm(dim=-1))
        return float(torch.acos(cosine.clamp(0, 1)).sum())
    if name == "norm":
        return float(sum((dense[i] - pruned[i]).pow(2).sum().sqrt() for i in range(dense.shape[0])))
    raise ValueError(name)


def physically_pruned_logits(model, removed: list[int], input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of a copy of ``model`` with the sublayers at ``removed`` (positions in ``list_sublayers``) deleted."""
    sublayers = list_sublayers(model)
    attention = [sublayers[i].block for i in removed if sublayers[i].kind == ATTENTION]
    mlp = [sublayers[i].block for i in removed if sublayers[i].kind != ATTENTION]
    pruned = copy.deepcopy(model)
    if removed:
        pruned = remove_sublayers(pruned, attention, mlp)
    with torch.no_grad():
        return torch.cat([pruned(row[None]).logits for row in input_ids])


@contextmanager
def sublayers_zeroed(model, removed: list[int]):
    """Temporarily replaces the outputs of the sublayers at ``removed`` by zeros (the residual passes unchanged,
    which equals deleting them: see tests/modeling)."""
    sublayers = list_sublayers(model)
    handles = []
    for position in removed:
        block = model.model.layers[sublayers[position].block]
        if sublayers[position].kind == ATTENTION:
            hook = block.self_attn.register_forward_hook(
                lambda m, a, k, out: (torch.zeros_like(out[0]), None), with_kwargs=True
            )
        else:
            hook = block.mlp.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
        handles.append(hook)
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def logits_without(model, removed: list[int], input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` without the sublayers at ``removed``, one full forward per calibration row."""
    with sublayers_zeroed(model, removed), torch.no_grad():
        return torch.cat([model(row[None]).logits for row in input_ids])


def exhaustive_greedy(model, calibration: torch.Tensor, distance: str, steps: int, protected=()) -> tuple[list, list]:
    """FinerCut greedy with every candidate evaluated by a full forward of the whole model."""
    dense = logits_without(model, [], calibration)
    candidates = [i for i in range(len(list_sublayers(model))) if i not in set(protected)]
    order, distances = [], []
    for _ in range(steps):
        totals = {
            c: textbook_distance(distance, dense, logits_without(model, order + [c], calibration))
            for c in candidates
            if c not in order
        }
        best = min(totals, key=lambda c: (totals[c], c))
        order.append(best)
        distances.append(totals[best])
    return order, distances
