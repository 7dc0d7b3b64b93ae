"""Drawing calibration windows from tokenized documents, with held-out windows that never overlap the others.

Shortened LLaMA's sampler (LLM-Pruner's): ``num_samples`` random documents at least ``seq_len`` tokens long and a
random window from each, seeded. When too few documents are that long, the documents are joined and random windows
are drawn from the whole stream (SparseGPT); windows may then overlap, and when the text is shorter than the windows
together they must: that is warned about, with the numbers.

A compensation fit holds out its last ``heldout`` windows to choose the ridge and report the fit; a held-out window
that shares text with a fitted one would flatter both. So the held-out windows are drawn (with the same seeded
generator, after the fitted ones, which are unchanged) among those that overlap no fitted window, and text too short
to hold such a window is refused.
"""

from __future__ import annotations

import logging
import random

import torch

from .errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["sample_windows"]

_ATTEMPTS_PER_WINDOW = 200


def _overlaps(start: int, length: int, taken: list[tuple[int, int]]) -> bool:
    return any(start < end and begin < start + length for begin, end in taken)


def _free_starts(total: int, length: int, taken: list[tuple[int, int]]) -> list[int]:
    """Every start of a window of ``length`` tokens within ``total`` that overlaps no taken interval."""
    covered = [False] * total
    for begin, end in taken:
        for position in range(begin, min(end, total)):
            covered[position] = True
    starts, run = [], 0
    for position in range(total):
        run = 0 if covered[position] else run + 1
        if run >= length:
            starts.append(position - length + 1)
    return starts


def _heldout_windows(rng: random.Random, total: int, length: int, count: int, fitted: list[int]) -> list[int]:
    """Starts of ``count`` held-out windows that overlap none of the ``fitted`` windows (refused when impossible)."""
    taken = [(start, start + length) for start in fitted]
    chosen: list[int] = []
    for _ in range(_ATTEMPTS_PER_WINDOW * count):
        if len(chosen) == count:
            return chosen
        start = rng.randint(0, total - length)
        if not _overlaps(start, length, taken):
            chosen.append(start)
    free = _free_starts(total, length, taken)
    if not free:
        raise DataError(
            f"The calibration text has only {total} tokens: its {len(fitted)} fitted windows of {length} tokens cover "
            f"it, so no held-out window can be drawn that does not overlap them. Give more text (about "
            f"{(len(fitted) + count) * length:,} tokens for {len(fitted) + count} distinct windows) or fewer samples."
        )
    return chosen + [free[rng.randrange(len(free))] for _ in range(count - len(chosen))]


def sample_windows(
    token_docs: list[list[int]], num_samples: int, seq_len: int, seed: int, bos: int | None, heldout: int = 0
) -> torch.Tensor:
    """Draws ``num_samples`` calibration windows of ``seq_len`` tokens.

    Args:
        token_docs: Tokenized documents.
        num_samples: Windows to draw.
        seq_len: Tokens per window (the BOS token included when ``bos`` is given).
        seed: Seed of the draw.
        bos: Token prepended to every window, or ``None``.
        heldout: The last ``heldout`` windows must share no token position with the others (a fit's held-out
            windows); 0 for no such constraint.

    Returns:
        ``LongTensor`` of shape ``(num_samples, seq_len)``.

    Raises:
        DataError: If the text is shorter than one window, or too short for held-out windows apart from the others.
    """
    rng = random.Random(seed)
    body = seq_len - (1 if bos is not None else 0)
    long_docs = [i for i, doc in enumerate(token_docs) if len(doc) >= body]
    rows: list[list[int]] = []
    if len(long_docs) >= num_samples:  # one window per document: no two windows share text
        for index in rng.sample(long_docs, num_samples):
            doc = token_docs[index]
            start = rng.randint(0, len(doc) - body)
            rows.append(doc[start : start + body])
    else:
        stream = [t for doc in token_docs for t in doc]
        if len(stream) < body:
            raise DataError(
                f"The calibration text has only {len(stream)} tokens; at least {body} are needed for seq_len={seq_len}."
            )
        if len(stream) < num_samples * body:
            logger.warning(
                "The calibration text has %s tokens for %d windows of %d tokens (%s): the windows overlap, each token "
                "is seen about %.1f times. Give more text for distinct windows.",
                f"{len(stream):,}",
                num_samples,
                body,
                f"{num_samples * body:,} tokens",
                num_samples * body / len(stream),
            )
        starts = [rng.randint(0, len(stream) - body) for _ in range(num_samples - heldout)]
        if heldout:
            starts += _heldout_windows(rng, len(stream), body, heldout, starts)
        rows = [stream[start : start + body] for start in starts]
    if bos is not None:
        rows = [[bos, *row] for row in rows]
    return torch.tensor(rows, dtype=torch.long)
