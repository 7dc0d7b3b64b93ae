"""Weight sparsity on the blocks of a (possibly depth-pruned) model: BESA, and the Wanda and magnitude baselines.

``sparsify(model, SparsityConfig(method="besa", sparsity=0.5), calibration, tokenizer)`` prunes every block's linear
layers in place, block by block, and records the method, target and per-layer sparsities in ``model.config.sparsity``.
Weights stay dense tensors with exact zeros: the checkpoint loads natively, and gives no speed-up by itself.
"""

from ..blocks.replay import BlockInputs, capture_block_inputs
from ..publishing.card_sparsity import sparsity_card_section  # the card section (built by publishing/cards.py)
from .besa import BlockAllocation, LearnedSparseMask, learn_block_allocation, normalised_reconstruction_error
from .config import METHODS, SparsityConfig
from .keep_masks import SparsityMaskCallback
from .plot import plot_layer_sparsity
from .report import BlockReport, SparsityResult, measure_weight_sparsity
from .runner import sparsify
from .targets import check, find_prunable_linears

__all__ = [
    "METHODS",
    "BlockAllocation",
    "BlockInputs",
    "BlockReport",
    "LearnedSparseMask",
    "SparsityConfig",
    "SparsityMaskCallback",
    "SparsityResult",
    "capture_block_inputs",
    "check",
    "find_prunable_linears",
    "learn_block_allocation",
    "measure_weight_sparsity",
    "normalised_reconstruction_error",
    "plot_layer_sparsity",
    "sparsify",
    "sparsity_card_section",
]
