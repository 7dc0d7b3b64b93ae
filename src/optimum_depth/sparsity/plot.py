"""PNG chart of the sparsity learned per block and per linear layer (matplotlib: ``optimum-depth[plot]``)."""

from __future__ import annotations

import os
from typing import Any

from ..publishing.plotting import require_matplotlib

__all__ = ["plot_layer_sparsity"]


def _record_of(source) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    record = getattr(getattr(source, "config", None), "sparsity", None)
    if isinstance(record, dict):
        return record
    raise ValueError(
        "plot_layer_sparsity takes a sparsity record (SparsityResult.record()) or a model whose config has one "
        "(`model.config.sparsity`, written by optimum_depth.sparsity.sparsify)."
    )


def plot_layer_sparsity(source, path: str | os.PathLike, title: str | None = None) -> str:
    """Draws the achieved sparsity of every block (line, target dashed) and of every linear layer (heat map centred
    on the target: red above it, blue below).

    Args:
        source: A record from :meth:`SparsityResult.record`, or a sparsified model (loaded checkpoints included).
        path: Output PNG path.
        title: Figure title (default: method, target and achieved sparsity).

    Returns:
        The path written.

    Raises:
        ValueError: If ``source`` carries no sparsity record.
    """
    record = _record_of(source)
    plt = require_matplotlib()
    blocks = list(record["layers"])
    names: list[str] = []
    for block in blocks:
        names.extend(n for n in record["layers"][block] if n not in names)
    grid = [[record["layers"][b].get(n, float("nan")) for b in blocks] for n in names]

    width = max(6.0, 0.32 * len(blocks) + 2.5)
    fig, (bars, heat) = plt.subplots(
        2,
        1,
        figsize=(width, 2.2 + 0.35 * len(names) + 2.0),
        gridspec_kw={"height_ratios": [1, max(1, len(names)) / 3]},
    )
    target = float(record["target"])
    bars.plot(range(len(blocks)), [record["blocks"][b] for b in blocks], marker="o", markersize=3, color="tab:blue")
    bars.axhline(target, color="tab:red", linestyle="--", linewidth=1, label=f"target {target}")
    bars.set_xlim(-0.5, len(blocks) - 0.5)
    bars.set_xticks(range(len(blocks)))
    bars.set_xticklabels(blocks, fontsize=7)
    bars.set_ylabel("block sparsity")
    bars.legend(loc="best", fontsize=7)

    # Diverging colours centred on the target, so that the learned re-allocation is visible.
    values = [v for row in grid for v in row if v == v]
    span = max([abs(v - target) for v in values] + [0.02])
    image = heat.imshow(
        grid, aspect="auto", cmap="coolwarm", vmin=target - span, vmax=target + span, interpolation="nearest"
    )
    if len(blocks) <= 40:
        for row, name_values in enumerate(grid):
            for column, value in enumerate(name_values):
                if value == value:
                    heat.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=5)
    heat.set_yticks(range(len(names)))
    heat.set_yticklabels(names, fontsize=7)
    heat.set_xticks(range(len(blocks)))
    heat.set_xticklabels(blocks, fontsize=7)
    heat.set_xlabel("original block index")
    fig.colorbar(image, ax=heat, label="layer sparsity", fraction=0.03, pad=0.01)
    achieved = record.get("achieved")
    default = f"{record['method']} ({record.get('allocation', '')}): target {record['target']}, achieved {achieved}"
    fig.suptitle(title or default, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.fspath(path)
