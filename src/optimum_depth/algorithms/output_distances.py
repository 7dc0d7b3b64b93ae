"""Distances between a dense model's and a pruned model's outputs on the same tokens (FinerCut's criterion).

Every distance is a sum of non-negative per-token (``norm``: per-sequence) terms, computed in float32. Summing them
batch by batch gives partial sums that only grow, which lets the greedy search stop evaluating a candidate as soon as
it is already worse than the best one (an exact shortcut). The reported value is the mean per token (per sequence for
``norm``).

``P`` is the dense model's next-token distribution, ``Q`` the pruned model's, ``M = (P + Q) / 2``:

* ``js``: Jensen-Shannon divergence, ``0.5 * [KL(P||M) + KL(Q||M)]`` (nats).
* ``js_finercut``: what FinerCut's public code computes under that name, ``0.5 * [KL(M||P) + KL(M||Q)]`` (it also
  averages over the vocabulary, a constant factor that does not change any ranking; we sum over it).
* ``kl``: ``KL(P||Q)``, as FinerCut's code.
* ``angular``: ``arccos(clamp(cos(logits_P, logits_Q), 0, 1))`` per token, on the logits, as FinerCut's code
  (evaluated in a numerically stable form).
* ``norm``: Frobenius norm of the logit difference of each sequence, as FinerCut's code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DISTANCE_FUNCTIONS", "OutputDistance", "get_distance"]

_LOG2 = math.log(2.0)


CHUNK_ROWS = 8
"""Tokens per chunk: the vocabulary-wide temporaries of 8 tokens stay in cache (about 4x faster than whole batches)."""


@dataclass(frozen=True)
class OutputDistance:
    """A distance between dense and pruned outputs.

    Args:
        name: Registry name (``DepthPruningConfig.distance``).
        reference: Turns the dense logits ``(batch, seq, vocab)`` into what is cached and compared against.
        per_token: ``(reference_rows, logits_rows) -> (rows,)`` non-negative terms of a chunk of token rows (for
            ``norm`` the squared norms, summed per sequence and square-rooted by :meth:`batch_sum`).
        per_sequence: Whether the terms are per sequence (``norm``) rather than per token.
    """

    name: str
    reference: Callable[[torch.Tensor], torch.Tensor]
    per_token: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    per_sequence: bool = False

    def terms(self, input_ids: torch.Tensor) -> int:
        """Number of terms a batch of ``input_ids`` contributes (tokens, or sequences for ``norm``)."""
        return int(input_ids.shape[0]) if self.per_sequence else int(input_ids.numel())

    def batch_sum(self, reference: torch.Tensor, logits: torch.Tensor) -> float:
        """Sum of the distance terms of one batch.

        Args:
            reference: The cached ``reference(dense_logits)`` of the batch, ``(batch, seq, vocab)``.
            logits: The pruned model's logits of the same batch.

        Returns:
            The sum (float64), of float32 terms clamped at zero so that partial sums never decrease.
        """
        vocab = logits.shape[-1]
        rows_ref, rows = reference.reshape(-1, vocab), logits.reshape(-1, vocab)
        terms = torch.cat(
            [
                self.per_token(rows_ref[i : i + CHUNK_ROWS], rows[i : i + CHUNK_ROWS])
                for i in range(0, len(rows), CHUNK_ROWS)
            ]
        )
        if self.per_sequence:
            terms = terms.reshape(logits.shape[0], -1).sum(-1).sqrt()
        return float(terms.clamp_min(0.0).sum())


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits.float(), dim=-1)


def _logits(logits: torch.Tensor) -> torch.Tensor:
    return logits.float()


def js_terms(log_p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per token ``0.5 * [KL(P||M) + KL(Q||M)]``; ``log_p`` is the dense log-distribution."""
    log_q = _log_probs(logits)
    log_m = torch.logaddexp(log_p, log_q) - _LOG2
    return 0.5 * ((log_p.exp() * (log_p - log_m)).sum(-1) + (log_q.exp() * (log_q - log_m)).sum(-1))


def js_finercut_terms(log_p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per token ``0.5 * [KL(M||P) + KL(M||Q)]`` (FinerCut's code)."""
    log_q = _log_probs(logits)
    log_m = torch.logaddexp(log_p, log_q) - _LOG2
    return (log_m.exp() * (log_m - 0.5 * (log_p + log_q))).sum(-1)


def kl_terms(log_p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per token ``KL(P||Q)``."""
    return (log_p.exp() * (log_p - _log_probs(logits))).sum(-1)


def angular_terms(reference: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per token angle between dense and pruned logits, at most pi/2 (cosine clamped to [0, 1]).

    Computed as ``2 * atan2(|u - v|, |u + v|)`` of the unit vectors, which equals ``arccos(cos)`` but stays accurate
    for nearly parallel logits, where ``arccos`` of a float32 cosine is dominated by rounding.
    """
    u = F.normalize(reference, dim=-1)
    v = F.normalize(logits.float(), dim=-1)
    return (2.0 * torch.atan2((u - v).norm(dim=-1), (u + v).norm(dim=-1))).clamp_max(math.pi / 2)


def squared_norm_terms(reference: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per token squared norm of the logit difference (``norm`` sums them per sequence, then takes the root)."""
    return (reference - logits.float()).pow(2).sum(-1)


DISTANCE_FUNCTIONS: dict[str, OutputDistance] = {
    "js": OutputDistance("js", _log_probs, js_terms),
    "js_finercut": OutputDistance("js_finercut", _log_probs, js_finercut_terms),
    "kl": OutputDistance("kl", _log_probs, kl_terms),
    "angular": OutputDistance("angular", _logits, angular_terms),
    "norm": OutputDistance("norm", _logits, squared_norm_terms, per_sequence=True),
}
"""The distances, by name (the same names as ``optimum_depth.config.DISTANCES``)."""


def get_distance(name: str) -> OutputDistance:
    """Returns the distance called ``name``.

    Raises:
        ValueError: If there is none.
    """
    if name not in DISTANCE_FUNCTIONS:
        raise ValueError(f"Unknown distance {name!r}; choose one of {sorted(DISTANCE_FUNCTIONS)}.")
    return DISTANCE_FUNCTIONS[name]
