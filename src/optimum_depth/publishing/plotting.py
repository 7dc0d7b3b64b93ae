"""PNG charts of layer scores (matplotlib is an optional extra: ``pip install optimum-depth[plot]``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..scores import LayerScores


def require_matplotlib():
    """Imports matplotlib with the non-interactive Agg backend, or explains how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Plotting needs matplotlib: pip install 'optimum-depth[plot]'.") from err
    return plt


def plot_layer_scores(
    scores: LayerScores, path: str | os.PathLike, selected: list[int] | None = None, title: str | None = None
) -> str:
    """Bar chart of importance per candidate: grey protected, red selected for removal, blue kept.

    Candidates whose value is only a lower bound (ruled out early by the best-first early exit,
    ``scores.extra["lower_bound_candidates"]``) are hatched: their true value is at least the bar's height.

    Args:
        scores: The scores to draw.
        path: Output PNG path.
        selected: Candidate positions chosen for removal.
        title: Plot title.

    Returns:
        The path written.
    """
    plt = require_matplotlib()
    selected_set = set(selected or [])
    protected = set(scores.protected)
    colors = [
        "tab:red" if i in selected_set else ("0.6" if i in protected else "tab:blue")
        for i in range(len(scores.values))
    ]
    labels = [scores.candidate_name(i).replace("block ", "") for i in range(len(scores.values))]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(labels)), 3.5))
    bars = ax.bar(range(len(labels)), scores.values, color=colors)
    lower = set(scores.extra.get("lower_bound_candidates") or [])
    for index in lower:
        bars[index].set_hatch("//")
        bars[index].set_alpha(0.55)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_xlabel("original block" if scores.sublayers is None else "sublayer")
    ax.set_ylabel(f"importance ({scores.criterion})")
    legend = "red = removed, grey = protected" + (", hatched = lower bound" if lower else "")
    ax.set_title(title or f"{scores.criterion}: {legend}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.fspath(path)
