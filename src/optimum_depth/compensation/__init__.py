"""Training-free compensation of removed blocks, folded into the kept weights (ReplaceMe and beyond).

:mod:`.linear_maps` (the math: streaming least squares, ridge selection, folding), :mod:`.cuts` (which kept block
compensates which removed run), :mod:`.walk` (the block-by-block fit) and :mod:`.compensate` (the entry points:
:func:`fit_compensation` before a plan is applied, :func:`compensate` after, :func:`compensation_from_activations`
from captured activations, :func:`fold_compensation`). Configured by
:class:`optimum_depth.CompensationConfig` (``DepthPruningConfig(compensation=...)``).
"""

from .compensate import (
    CompensationResult,
    compensate,
    compensation_calibration,
    compensation_from_activations,
    fit_compensation,
    fold_compensation,
)

__all__ = [
    "CompensationResult",
    "compensate",
    "compensation_calibration",
    "compensation_from_activations",
    "fit_compensation",
    "fold_compensation",
]
