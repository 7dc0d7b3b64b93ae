"""PNG map of a sublayer-pruned model: original blocks x {attention, MLP}, showing what was removed and in which order.

FinerCut's "inspect the types and locations of pruned layers": one column per block of the original model, one row
per sublayer kind. Red = removed, blue = kept, grey = protected; with scores of a greedy search the removal step
is written in each removed cell.
"""

from __future__ import annotations

import os

from torch import nn

from ..architectures import unwrap_model
from ..provenance import original_layer_indices, source_num_layers
from ..publishing.plotting import require_matplotlib
from ..scores import LayerScores
from .candidates import ATTENTION, MLP, SUBLAYER_KINDS

__all__ = ["plot_sublayer_map", "sublayer_map"]

KEPT, REMOVED, PROTECTED = 0, 1, 2


def sublayer_map(config) -> list[list[int]]:
    """What each sublayer of the original model became, from a (pruned) model's config.

    Args:
        config: The config of a model (block- or sublayer-pruned or not).

    Returns:
        Two rows (attention, MLP) of ``source_num_hidden_layers`` entries: ``KEPT`` (0) or ``REMOVED`` (1).
    """
    num_blocks = source_num_layers(config)
    cells = [[REMOVED] * num_blocks for _ in SUBLAYER_KINDS]
    original = original_layer_indices(config)
    skipped = {
        ATTENTION: set(getattr(config, "skipped_attention", None) or []),
        MLP: set(getattr(config, "skipped_mlp", None) or []),
    }
    for position, block in enumerate(original):
        for row, kind in enumerate(SUBLAYER_KINDS):
            cells[row][block] = REMOVED if position in skipped[kind] else KEPT
    return cells


def plot_sublayer_map(
    model_or_config, path: str | os.PathLike, scores: LayerScores | None = None, title: str | None = None
) -> str:
    """Writes the blocks x {attention, MLP} map of what was removed.

    Args:
        model_or_config: The pruned model (possibly wrapped) or its config.
        path: Output PNG path.
        scores: Optional sublayer scores of the run (greys its protected blocks, numbers the greedy removal order).
        title: Plot title.

    Returns:
        The path written.
    """
    config = unwrap_model(model_or_config).config if isinstance(model_or_config, nn.Module) else model_or_config
    cells = sublayer_map(config)
    steps: dict[tuple[int, str], int] = {}
    if scores is not None and scores.sublayers is not None:
        for row, kind in enumerate(SUBLAYER_KINDS):
            for position in scores.protected:
                if scores.sublayers[position] == kind and cells[row][scores.layer_indices[position]] == KEPT:
                    cells[row][scores.layer_indices[position]] = PROTECTED
        for step, position in enumerate(scores.removal_order or [], 1):
            steps[(scores.layer_indices[position], scores.sublayers[position])] = step
    plt = require_matplotlib()
    from matplotlib.colors import ListedColormap

    num_blocks = len(cells[0])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * num_blocks + 1.5), 2.2))
    ax.imshow(cells, cmap=ListedColormap(["tab:blue", "tab:red", "0.7"]), vmin=0, vmax=2, aspect="auto")
    for row, kind in enumerate(SUBLAYER_KINDS):
        for block in range(num_blocks):
            if cells[row][block] == REMOVED and (block, kind) in steps:
                ax.text(block, row, str(steps[(block, kind)]), ha="center", va="center", fontsize=6, color="white")
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["attention", "MLP"])
    ax.set_xticks(range(num_blocks))
    ax.set_xticklabels([str(b) for b in range(num_blocks)], fontsize=7)
    ax.set_xlabel("original block")
    removed = sum(c == REMOVED for row in cells for c in row)
    ax.set_title(title or f"{removed} of {2 * num_blocks} sublayers removed (red; numbers = removal step)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.fspath(path)
