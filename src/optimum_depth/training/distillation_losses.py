"""Distillation losses (pure tensor math): full-vocabulary KD, top-k KD with a residual bin, hidden-state alignment.

No dependency on transformers. Every loss returns a scalar that is either the mean over the selected tokens
(``reduction="mean"``) or their sum (``reduction="sum"``); the sum form lets
:class:`~optimum_depth.training.distillation.DistillationTrainer` divide by ``num_items_in_batch``, so gradient
accumulation and data parallelism give the same result as one large batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["kd_loss", "topk_kd_loss", "hidden_alignment_loss", "topk_teacher_targets"]


def _reduce(per_token: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Masked mean or sum of a per-token loss of shape ``[...]``."""
    if mask is not None:
        mask = mask.to(per_token.dtype)
        if mask.shape != per_token.shape:
            raise ValueError(f"`mask` has shape {tuple(mask.shape)}, expected {tuple(per_token.shape)}.")
        total = (per_token * mask).sum()
        count = mask.sum()
    else:
        total = per_token.sum()
        count = torch.tensor(per_token.numel(), dtype=per_token.dtype, device=per_token.device)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / count.clamp_min(1)
    raise ValueError(f"`reduction` must be 'mean' or 'sum', got {reduction!r}.")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    r"""Forward KL divergence ``KL(teacher || student)`` between temperature-softened next-token distributions.

    For every token position, with :math:`p = \mathrm{softmax}(z_t / T)` and :math:`q = \mathrm{softmax}(z_s / T)`,
    the loss is :math:`T^2 \sum_v p_v (\log p_v - \log q_v)`; the :math:`T^2` factor (Hinton et al., 2015) keeps the
    gradient scale independent of the temperature.

    Args:
        student_logits (`torch.Tensor` of shape `(..., vocab_size)`):
            Student logits (the graph is kept, gradients flow into them).
        teacher_logits (`torch.Tensor` of shape `(..., vocab_size)`):
            Teacher logits for the same positions; treated as constants (detached).
        temperature (`float`, defaults to 1.0):
            Softmax temperature applied to both distributions. Must be positive.
        mask (`torch.Tensor` of shape `(...)`, *optional*):
            1/True for positions that count (e.g. the attention mask), 0/False for padding. ``None``: all count.
        reduction (`str`, defaults to `"mean"`):
            `"mean"`: average over the selected positions; `"sum"`: their sum (divide it by `num_items_in_batch`
            in a `Trainer`).

    Returns:
        `torch.Tensor`: A scalar loss (computed in float32 or wider).
    """
    if temperature <= 0:
        raise ValueError(f"`temperature` must be positive, got {temperature}.")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ."
        )
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=-1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2
    return _reduce(per_token, mask, reduction)


@torch.no_grad()
def topk_teacher_targets(
    teacher_logits: torch.Tensor, k: int, temperatures: Sequence[float] = (1.0,)
) -> tuple[torch.Tensor, torch.Tensor, dict[float, torch.Tensor]]:
    """Compress teacher logits into what `topk_kd_loss` needs (e.g. to precompute and store them).

    Args:
        teacher_logits (`torch.Tensor` of shape `(..., vocab_size)`): Raw teacher logits.
        k (`int`): Number of top logits to keep.
        temperatures (`Sequence[float]`): Temperatures for which the full log-partition function is stored.

    Returns:
        `tuple`: `(topk_values, topk_indices, logsumexp)` where `topk_values` holds the raw (un-tempered) top-k
        logits, `topk_indices` their vocabulary ids, and `logsumexp[T]` is `logsumexp(teacher_logits / T, -1)`.
    """
    logits = teacher_logits.float()
    values, indices = logits.topk(k, dim=-1)
    lse = {float(t): torch.logsumexp(logits / t, dim=-1) for t in temperatures}
    return values, indices, lse


def topk_kd_loss(
    student_logits: torch.Tensor,
    topk_values: torch.Tensor,
    topk_indices: torch.Tensor,
    teacher_logsumexp: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    r"""KL divergence to a teacher stored as its top-k logits, with the remaining probability mass as one extra bin.

    The teacher's probabilities of its top-k tokens are exact because the full log-partition function is given:
    :math:`p_i = \exp(v_i / T - \mathrm{lse}_T)`. The other ``vocab_size - k`` tokens are merged into a residual bin of
    mass :math:`p_r = 1 - \sum_i p_i`; the student distribution is coarsened the same way
    (:math:`q_r = \sum_{v \notin \mathrm{top}k} q_v`, computed exactly from the student logits). The loss is the
    KL divergence between these two (k+1)-bin distributions, times :math:`T^2`. It is a lower bound of the full
    `kd_loss` (data-processing inequality) and equals it when ``k == vocab_size``.

    Args:
        student_logits (`torch.Tensor` of shape `(..., vocab_size)`):
            Student logits.
        topk_values (`torch.Tensor` of shape `(..., k)`):
            The teacher's k largest raw logits (before dividing by the temperature).
        topk_indices (`torch.Tensor` of shape `(..., k)`):
            Their vocabulary ids (any integer dtype).
        teacher_logsumexp (`torch.Tensor` of shape `(...)`):
            `logsumexp(teacher_logits / temperature, dim=-1)` over the *full* vocabulary, for the same temperature.
        temperature (`float`, defaults to 1.0):
            Softmax temperature. Must match the one used for `teacher_logsumexp`.
        mask (`torch.Tensor` of shape `(...)`, *optional*):
            1/True for positions that count. ``None``: all count.
        reduction (`str`, defaults to `"mean"`):
            `"mean"` over the selected positions or `"sum"`.

    Returns:
        `torch.Tensor`: A scalar loss.
    """
    if temperature <= 0:
        raise ValueError(f"`temperature` must be positive, got {temperature}.")
    if topk_values.shape != topk_indices.shape or topk_values.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError("`topk_values`/`topk_indices` must have shape student_logits.shape[:-1] + (k,).")
    vocab_size, k = student_logits.shape[-1], topk_values.shape[-1]
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    indices = topk_indices.long()

    s = student_logits.to(dtype) / temperature
    s_lse = torch.logsumexp(s, dim=-1, keepdim=True)
    log_q_top = s.gather(-1, indices) - s_lse  # [..., k]
    log_p_top = topk_values.detach().to(dtype) / temperature - teacher_logsumexp.detach().to(dtype).unsqueeze(-1)
    p_top = log_p_top.exp()
    per_token = (p_top * (log_p_top - log_q_top)).sum(-1)

    if k < vocab_size:
        # Residual bin. Teacher: 1 - sum of the exact top-k probabilities. Student: logsumexp over the other tokens.
        p_rest = (1.0 - p_top.sum(-1)).clamp_min(0.0)
        s_rest = s.scatter(-1, indices, torch.finfo(dtype).min)
        log_q_rest = torch.logsumexp(s_rest, dim=-1) - s_lse.squeeze(-1)
        log_p_rest = torch.log(p_rest.clamp_min(torch.finfo(dtype).tiny))
        per_token = per_token + torch.where(p_rest > 0, p_rest * (log_p_rest - log_q_rest), torch.zeros_like(p_rest))
    return _reduce(per_token * temperature**2, mask, reduction)


def hidden_alignment_loss(
    student_hidden: torch.Tensor | Sequence[torch.Tensor],
    teacher_hidden: torch.Tensor | Sequence[torch.Tensor],
    mask: torch.Tensor | None = None,
    kind: Literal["mse", "nmse", "cosine"] = "nmse",
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    r"""Distance between student and teacher hidden states (e.g. the output of a kept block and of the same
    original block in the dense teacher).

    Per token, with student state :math:`s` and teacher state :math:`t` (last dimension = hidden size):

    * `"mse"`: :math:`\mathrm{mean}_d (s_d - t_d)^2`, sensitive to the residual-stream scale, which grows with depth
      and has a few massive-activation channels;
    * `"nmse"`: :math:`\lVert s - t \rVert^2 / \lVert t \rVert^2`, scale-free, comparable across layers;
    * `"cosine"`: :math:`1 - \cos(s, t)`, ignores the norm.

    When sequences of tensors are given (several layers), the per-token losses are averaged over the layers.

    Args:
        student_hidden (`torch.Tensor` of shape `(..., hidden_size)` or a sequence of them):
            Student hidden states.
        teacher_hidden (`torch.Tensor` of shape `(..., hidden_size)` or a sequence of them):
            Teacher hidden states (detached), paired one-to-one with `student_hidden`.
        mask (`torch.Tensor` of shape `(...)`, *optional*):
            1/True for positions that count. ``None``: all count.
        kind (`str`, defaults to `"nmse"`):
            `"mse"`, `"nmse"` or `"cosine"`.
        reduction (`str`, defaults to `"mean"`):
            `"mean"` over the selected positions or `"sum"`.

    Returns:
        `torch.Tensor`: A scalar loss.
    """
    students = [student_hidden] if isinstance(student_hidden, torch.Tensor) else list(student_hidden)
    teachers = [teacher_hidden] if isinstance(teacher_hidden, torch.Tensor) else list(teacher_hidden)
    if len(students) != len(teachers) or not students:
        raise ValueError("`student_hidden` and `teacher_hidden` must pair up one-to-one (and not be empty).")
    per_token: torch.Tensor | None = None
    for s, t in zip(students, teachers, strict=True):
        if s.shape != t.shape:
            raise ValueError(f"hidden shapes differ: {tuple(s.shape)} vs {tuple(t.shape)}.")
        dtype = torch.promote_types(s.dtype, torch.float32)
        s, t = s.to(dtype), t.detach().to(dtype)
        if kind == "mse":
            loss = (s - t).pow(2).mean(-1)
        elif kind == "nmse":
            loss = (s - t).pow(2).sum(-1) / t.pow(2).sum(-1).clamp_min(torch.finfo(dtype).eps)
        elif kind == "cosine":
            loss = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
        else:
            raise ValueError(f"`kind` must be 'mse', 'nmse' or 'cosine', got {kind!r}.")
        per_token = loss if per_token is None else per_token + loss
    assert per_token is not None  # at least one pair, checked above
    return _reduce(per_token / len(students), mask, reduction)
