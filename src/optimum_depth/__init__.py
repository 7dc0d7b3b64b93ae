"""optimum_depth: depth pruning (block and sublayer removal) for Hugging Face decoder LLMs.

The pipeline reads as the modules: config -> calibration -> criteria/scoring -> plan -> surgery -> pruner ->
saving. ``import optimum_depth`` also registers the pruned model classes with the transformers Auto classes.
"""

from .architectures import ARCHITECTURES, UnsupportedArchitectureError, get_architecture, get_decoder_layers
from .calibration import CalibrationData, prepare_calibration
from .config import DepthPruningConfig, PruningTargetError
from .modeling import (
    PrunedGemma2Config,
    PrunedGemma3TextConfig,
    PrunedLlamaConfig,
    PrunedMistralConfig,
    PrunedPhi3Config,
    PrunedQwen2Config,
    PrunedQwen3Config,
)
from .plan import PruningPlan
from .pruner import DepthPruner
from .saving import save_pruned_model
from .scores import LayerScores
from .surgery import LayerIndexError, remove_layers
from .version import __version__

__all__ = [
    "ARCHITECTURES",
    "CalibrationData",
    "DepthPruner",
    "DepthPruningConfig",
    "LayerIndexError",
    "LayerScores",
    "PrunedGemma2Config",
    "PrunedGemma3TextConfig",
    "PrunedLlamaConfig",
    "PrunedMistralConfig",
    "PrunedPhi3Config",
    "PrunedQwen2Config",
    "PrunedQwen3Config",
    "PruningPlan",
    "PruningTargetError",
    "UnsupportedArchitectureError",
    "__version__",
    "get_architecture",
    "get_decoder_layers",
    "prepare_calibration",
    "remove_layers",
    "save_pruned_model",
]
