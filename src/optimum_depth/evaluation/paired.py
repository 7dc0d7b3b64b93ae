"""Is a pruned model's zero-shot accuracy different from its dense parent's? A paired test on the same documents.

Dense and pruned answer the *same* documents, so their accuracies are not two independent binomials: most documents
are answered alike by both, and the difference lives in the documents where they disagree. Per task, with
``d_i = pruned_i - dense_i`` in {-1, 0, 1} for each of the ``n`` documents:

* difference = mean(d), paired standard error = ``sd(d) / sqrt(n)`` (sample standard deviation, ``n - 1``);
* McNemar's exact two-sided p-value on the discordant documents (pruned right only vs dense right only);
* verdict: ``"="`` (no difference) when ``|difference| <= 2 * standard error``, else ``"-"`` (pruned lower) or
  ``"+"`` (higher).

The mean over tasks (different documents, independent) has difference = mean of the task differences and standard
error ``sqrt(sum se_t^2) / T``, with the same two-standard-error verdict. Two independent binomials would give a
standard error about ``sqrt(2 p (1 - p) / n)``, several times larger when the two models mostly agree, and call
real losses "no difference".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import DataError

__all__ = ["PairedDifference", "mcnemar_exact_p", "mean_paired_difference", "paired_difference", "paired_zero_shot"]

SIGNIFICANCE_STDERRS = 2.0
"""A difference larger than this many paired standard errors is reported as a difference."""


@dataclass(frozen=True)
class PairedDifference:
    """Pruned minus dense accuracy on the same documents.

    Args:
        documents: Documents compared (``None`` for a mean over tasks).
        dense_accuracy: Dense accuracy.
        pruned_accuracy: Pruned accuracy.
        difference: ``pruned_accuracy - dense_accuracy``.
        stderr: Paired standard error of the difference.
        pruned_only: Documents only the pruned model answers right (``None`` for a mean).
        dense_only: Documents only the dense model answers right (``None`` for a mean).
        mcnemar_p: McNemar's exact two-sided p-value (``None`` for a mean).
        verdict: ``"="`` (within :data:`SIGNIFICANCE_STDERRS` standard errors), ``"-"`` or ``"+"``.
    """

    documents: int | None
    dense_accuracy: float
    pruned_accuracy: float
    difference: float
    stderr: float
    pruned_only: int | None
    dense_only: int | None
    mcnemar_p: float | None
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def verdict(difference: float, stderr: float) -> str:
    """``"="`` when ``|difference| <= 2 * stderr``, else the sign of the difference."""
    if abs(difference) <= SIGNIFICANCE_STDERRS * stderr:
        return "="
    return "+" if difference > 0 else "-"


def _as_outcomes(values: str | Sequence[int | bool | float], name: str) -> list[int]:
    items = list(values)
    outcomes = []
    for item in items:
        if item in ("0", "1"):
            outcomes.append(int(item))  # type: ignore[arg-type]
        elif isinstance(item, (bool, int, float)) and float(item) in (0.0, 1.0):
            outcomes.append(int(item))
        else:
            raise DataError(f"{name} outcomes must be 0/1 per document, got {item!r}.")
    return outcomes


def mcnemar_exact_p(pruned_only: int, dense_only: int) -> float:
    """McNemar's exact two-sided p-value: the binomial test of ``pruned_only`` among the discordant documents."""
    total = pruned_only + dense_only
    if total == 0:
        return 1.0
    low = min(pruned_only, dense_only)
    log_half = total * math.log(0.5)
    tail = sum(
        math.exp(math.lgamma(total + 1) - math.lgamma(k + 1) - math.lgamma(total - k + 1) + log_half)
        for k in range(low + 1)
    )
    return min(1.0, 2.0 * tail)


def paired_difference(dense: str | Sequence[int], pruned: str | Sequence[int]) -> PairedDifference:
    """Compares two models' per-document outcomes on the same documents, in the same order.

    Args:
        dense: Dense outcomes, one 0/1 per document (a ``"0110..."`` string or a sequence).
        pruned: Pruned outcomes, same documents.

    Returns:
        The :class:`PairedDifference`.

    Raises:
        DataError: If the lengths differ, an outcome is not 0/1, or there is no document.
    """
    a, b = _as_outcomes(dense, "Dense"), _as_outcomes(pruned, "Pruned")
    if len(a) != len(b):
        raise DataError(f"Paired outcomes need the same documents: {len(a)} dense vs {len(b)} pruned outcomes.")
    n = len(a)
    if n == 0:
        raise DataError("No document to compare.")
    differences = [y - x for x, y in zip(a, b, strict=True)]
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1) if n > 1 else 0.0
    stderr = math.sqrt(variance / n)
    pruned_only, dense_only = differences.count(1), differences.count(-1)
    return PairedDifference(
        documents=n,
        dense_accuracy=sum(a) / n,
        pruned_accuracy=sum(b) / n,
        difference=mean,
        stderr=stderr,
        pruned_only=pruned_only,
        dense_only=dense_only,
        mcnemar_p=mcnemar_exact_p(pruned_only, dense_only),
        verdict=verdict(mean, stderr),
    )


def mean_paired_difference(per_task: Sequence[PairedDifference]) -> PairedDifference:
    """The mean over tasks of per-task paired differences (tasks are independent document sets)."""
    if not per_task:
        raise DataError("No task to average.")
    count = len(per_task)
    difference = sum(t.difference for t in per_task) / count
    stderr = math.sqrt(sum(t.stderr**2 for t in per_task)) / count
    return PairedDifference(
        documents=None,
        dense_accuracy=sum(t.dense_accuracy for t in per_task) / count,
        pruned_accuracy=sum(t.pruned_accuracy for t in per_task) / count,
        difference=difference,
        stderr=stderr,
        pruned_only=None,
        dense_only=None,
        mcnemar_p=None,
        verdict=verdict(difference, stderr),
    )


def paired_zero_shot(
    dense: Mapping[str, Mapping[str, Any]], pruned: Mapping[str, Mapping[str, Any]], metric: str = "acc"
) -> dict[str, PairedDifference]:
    """Paired differences per task, and their ``"mean"``, from two per-document records.

    Args:
        dense: Task -> ``{"fingerprint": ..., "acc": "0110...", ...}`` (what
            :func:`~.zero_shot.evaluate_zero_shot_documents` returns) of the dense model.
        pruned: The same for the pruned model.
        metric: ``"acc"`` or ``"acc_norm"``.

    Returns:
        Task -> :class:`PairedDifference` for every task both measured with ``metric``, plus ``"mean"`` over them
        (absent when no task is shared).

    Raises:
        DataError: If a shared task was measured on different documents (fingerprints differ).
    """
    results: dict[str, PairedDifference] = {}
    for task, record in dense.items():
        other = pruned.get(task)
        if other is None or metric not in record or metric not in other:
            continue
        if record.get("fingerprint") != other.get("fingerprint"):
            raise DataError(
                f"Zero-shot task {task!r}: dense and pruned answered different documents (fingerprints "
                f"{record.get('fingerprint')} vs {other.get('fingerprint')}); a paired comparison needs the same ones."
            )
        results[task] = paired_difference(record[metric], other[metric])
    if results:
        results["mean"] = mean_paired_difference(list(results.values()))
    return results
