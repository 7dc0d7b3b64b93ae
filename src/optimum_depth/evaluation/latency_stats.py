"""How far a latency figure can be trusted: the spread of its repeats, paired speed-ups, and plain-word cautions.

Machine noise only ever adds time, and on a shared machine it comes in bursts: even with dense and pruned calls
interleaved (:func:`~.latency.measure_latency`), a burst can hit one model's calls more than the other's. So every
latency is reported as the median **with the spread of its repeats** (min-max and quartiles), every speed-up with the
range of its per-round ratios, and a figure is flagged instead of being printed as fact when

* the repeats of either model, or the per-round speed-ups, spread by more than :data:`WIDE_SPREAD` of their median
  ("noisy"), or nothing can be said about the spread (one repeat, or a file that did not record them);
* the speed-up exceeds the ideal ratio, dense / pruned parameters ("above ideal"). At batch 1 decoding reads every
  weight once per token, so a figure above the parameter ratio points to uneven machine load; at larger batches the
  attention over the KV cache, which shrinks with the blocks too, can legitimately lift it.

Pure arithmetic on lists of seconds: no torch, no I/O.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["WIDE_SPREAD", "Spread", "check_label", "repeat_cautions", "speedup_summary"]

WIDE_SPREAD = 0.10  # (max - min) / median above which repeats are called noisy; a quiet CPU gives a few percent


@dataclass(frozen=True)
class Spread:
    """Median and spread of repeated measurements.

    Args:
        median: The median.
        minimum: The smallest value.
        maximum: The largest value.
        q1: First quartile (inclusive method; equals the median for one value).
        q3: Third quartile.
        count: Number of values.
    """

    median: float
    minimum: float
    maximum: float
    q1: float
    q3: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """The spread of ``values``, or ``None`` when there are none."""
        if not values:
            return None
        values = sorted(float(v) for v in values)
        q1, q3 = (
            (values[0], values[0]) if len(values) == 1 else statistics.quantiles(values, n=4, method="inclusive")[::2]
        )
        return cls(statistics.median(values), values[0], values[-1], q1, q3, len(values))

    @property
    def relative(self) -> float:
        """``(maximum - minimum) / median``: 0 for identical repeats."""
        return (self.maximum - self.minimum) / self.median if self.median else float("inf")

    @property
    def judged(self) -> bool:
        """Whether there are at least two values, so that a spread says something about the noise."""
        return self.count >= 2

    @property
    def wide(self) -> bool:
        """Whether the repeats spread by more than :data:`WIDE_SPREAD` of their median."""
        return self.relative > WIDE_SPREAD

    def to_dict(self) -> dict[str, Any]:
        """The fields and ``relative``, for the JSON readers of derived values."""
        return {**asdict(self), "relative": self.relative}


def repeat_cautions(latencies_s: Sequence[float]) -> list[str]:
    """Why one model's latency at one grid point should not be read as fact (empty when nothing is wrong).

    Args:
        latencies_s: Every timed repeat, in seconds.

    Returns:
        Sentences, each starting with the flag (``"noisy"``).
    """
    spread = Spread.of(latencies_s)
    if spread is None or not spread.judged:
        return [_unjudged(spread)]
    if spread.wide:
        return [
            f"noisy: the {spread.count} repeats spread by {spread.relative:.0%} of their median "
            f"({spread.minimum:.3f}-{spread.maximum:.3f} s), more than the {WIDE_SPREAD:.0%} a quiet machine gives; "
            "re-measure with more repeats on an idle machine before quoting it."
        ]
    return []


def _unjudged(spread: Spread | None) -> str:
    if spread is None:
        return "noisy?: the repeats were not recorded, so nothing shows how noisy the machine was."
    return "noisy?: one timed repeat, so nothing shows how noisy the machine was; measure with repeats >= 3."


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def speedup_summary(
    dense_latency_s: float,
    pruned_latency_s: float,
    dense_latencies_s: Sequence[float],
    pruned_latencies_s: Sequence[float],
    ideal: float | None,
    batch_size: int,
) -> dict[str, Any]:
    """The speed-up of one grid point with its spread and cautions.

    ``speedup`` is dense median latency / pruned median latency (the protocol's figure). ``paired_speedup`` is the
    median over repeat rounds of dense / pruned latency of the same round (the two calls of a round ran back to back,
    so slowly varying load cancels out), with its range ``paired_speedup_min`` - ``paired_speedup_max``; ``None``
    when the repeat counts differ.

    Args:
        dense_latency_s: Median latency of the dense model.
        pruned_latency_s: Median latency of the pruned model.
        dense_latencies_s: Every timed repeat of the dense model (may be empty in old files).
        pruned_latencies_s: Every timed repeat of the pruned model.
        ideal: Dense / pruned parameters, if known.
        batch_size: The grid point's batch size (it decides how an above-ideal figure is explained).

    Returns:
        ``speedup``, ``fraction_of_ideal``, ``paired_speedup`` (+ ``_min``, ``_max``), ``paired_fraction_of_ideal``,
        ``dense_spread`` / ``pruned_spread`` (:meth:`Spread.to_dict` or ``None``), ``noisy`` (``None`` when it cannot
        be judged), ``above_ideal`` (``None`` without an ideal) and ``cautions`` (sentences, empty when none).
    """
    speedup = _ratio(dense_latency_s, pruned_latency_s)
    dense, pruned = Spread.of(dense_latencies_s), Spread.of(pruned_latencies_s)
    paired = None
    if dense_latencies_s and len(dense_latencies_s) == len(pruned_latencies_s):
        paired = Spread.of([d / p for d, p in zip(dense_latencies_s, pruned_latencies_s, strict=True)])
    figures = [f for f in (speedup, paired.median if paired else None) if f is not None]
    above = None if ideal is None or not figures else max(figures) > ideal
    cautions = []
    noisy: bool | None = None
    if dense is None or pruned is None:
        cautions.append(_unjudged(None))
    elif not (dense.judged and pruned.judged):
        cautions.append(_unjudged(min(dense, pruned, key=lambda s: s.count)))
    else:
        noisy = any(s.wide for s in (dense, pruned, paired) if s is not None)
        if noisy:
            cautions.append(_noisy_sentence(dense, pruned, paired))
    if above and ideal is not None:
        cautions.append(_above_ideal_sentence(max(figures), ideal, batch_size))
    return {
        "speedup": speedup,
        "fraction_of_ideal": _ratio(speedup, ideal),
        "paired_speedup": paired.median if paired else None,
        "paired_speedup_min": paired.minimum if paired else None,
        "paired_speedup_max": paired.maximum if paired else None,
        "paired_fraction_of_ideal": _ratio(paired.median if paired else None, ideal),
        "dense_spread": dense.to_dict() if dense else None,
        "pruned_spread": pruned.to_dict() if pruned else None,
        "noisy": noisy,
        "above_ideal": above,
        "cautions": cautions,
    }


def check_label(summary: dict[str, Any]) -> str:
    """The one-cell verdict of a :func:`speedup_summary`: ``ok``, or its flags (``spread unknown``, ``noisy``,
    ``above ideal``)."""
    flags = [name for name, on in (("noisy", summary["noisy"]), ("above ideal", summary["above_ideal"])) if on]
    if summary["noisy"] is None:
        flags.insert(0, "spread unknown")
    return ", ".join(flags) or "ok"


def _noisy_sentence(dense: Spread, pruned: Spread, paired: Spread | None) -> str:
    rounds = f"; per-round speed-ups {paired.minimum:.2f}x-{paired.maximum:.2f}x" if paired else ""
    widest = max(s.relative for s in (dense, pruned, paired) if s is not None)
    return (
        f"noisy: the repeats spread by up to {widest:.0%} of their median (dense {dense.minimum:.3f}-"
        f"{dense.maximum:.3f} s, pruned {pruned.minimum:.3f}-{pruned.maximum:.3f} s{rounds}), more than the "
        f"{WIDE_SPREAD:.0%} a quiet machine gives: the speed-up is uncertain; re-measure with more repeats on an idle "
        "machine before quoting it."
    )


def _above_ideal_sentence(figure: float, ideal: float, batch_size: int) -> str:
    why = (
        "at batch 1 decoding reads every weight once per token, so this points to uneven machine load between the "
        "two models' calls, not to a real gain"
        if batch_size == 1
        else f"at batch {batch_size} the attention over the KV cache, which shrinks with the blocks too, can lift it "
        "above the parameter ratio, but so can uneven machine load"
    )
    return (
        f"above ideal: {figure:.3f}x is {figure / ideal:.1%} of the ideal {ideal:.3f}x (dense / pruned parameters); "
        f"{why}. Check the spread before quoting it."
    )
