"""optimum_depth: depth pruning (block and sublayer removal) for Hugging Face decoder LLMs.

The pipeline reads as the modules: config -> calibration -> criteria/scoring -> plan -> surgery -> pruner ->
saving. ``import optimum_depth`` also registers the pruned model classes with the transformers Auto classes.
"""

from .architectures import ARCHITECTURES, UnsupportedArchitectureError, get_architecture, get_decoder_layers
from .calibration import CalibrationData, prepare_calibration
from .callbacks import DepthPruningCallback
from .cards import build_model_card
from .config import DepthPruningConfig, PruningTargetError
from .evaluation import ComparisonResults, EvaluationResults, LatencyRecord
from .hub import push_to_hub
from .modeling import (
    PrunedGemma2Config,
    PrunedGemma3TextConfig,
    PrunedLlamaConfig,
    PrunedLlamaForCausalLM,
    PrunedMistralConfig,
    PrunedMistralForCausalLM,
    PrunedPhi3Config,
    PrunedPhi3ForCausalLM,
    PrunedQwen2Config,
    PrunedQwen2ForCausalLM,
    PrunedQwen3Config,
    PrunedQwen3ForCausalLM,
    PrunedSmolLM3Config,
    PrunedSmolLM3ForCausalLM,
)
from .plan import PruningPlan
from .pruner import DepthPruner
from .resume import prepare_model_for_resume
from .saving import save_pruned_model
from .scores import LayerScores
from .sparsity import SparsityConfig, SparsityResult, sparsify
from .sublayer_plot import plot_sublayer_map
from .sublayer_surgery import SublayerIndexError, convert_to_pruned_class, remove_sublayers
from .surgery import LayerIndexError, remove_layers
from .version import __version__

__all__ = [
    "ARCHITECTURES",
    "CalibrationData",
    "ComparisonResults",
    "DepthPruner",
    "DepthPruningCallback",
    "DepthPruningConfig",
    "EvaluationResults",
    "LayerIndexError",
    "LayerScores",
    "LatencyRecord",
    "PrunedGemma2Config",
    "PrunedGemma3TextConfig",
    "PrunedLlamaConfig",
    "PrunedLlamaForCausalLM",
    "PrunedMistralConfig",
    "PrunedMistralForCausalLM",
    "PrunedPhi3Config",
    "PrunedPhi3ForCausalLM",
    "PrunedQwen2Config",
    "PrunedQwen2ForCausalLM",
    "PrunedQwen3Config",
    "PrunedQwen3ForCausalLM",
    "PrunedSmolLM3Config",
    "PrunedSmolLM3ForCausalLM",
    "PruningPlan",
    "PruningTargetError",
    "SparsityConfig",
    "SparsityResult",
    "SublayerIndexError",
    "UnsupportedArchitectureError",
    "__version__",
    "build_model_card",
    "convert_to_pruned_class",
    "get_architecture",
    "get_decoder_layers",
    "prepare_calibration",
    "prepare_model_for_resume",
    "push_to_hub",
    "plot_sublayer_map",
    "remove_layers",
    "remove_sublayers",
    "save_pruned_model",
    "sparsify",
]
