"""optimum_depth: depth pruning (block and sublayer removal) for Hugging Face decoder LLMs.

The package follows the pipeline: :mod:`.config` -> :mod:`.calibration` -> :mod:`.criteria` (scores) ->
:mod:`.blocks` / :mod:`.sublayers` (planning, surgery; dispatched by :mod:`.pruner`) -> :mod:`.training`
(the callback, recovery) -> :mod:`.evaluation` -> :mod:`.publishing` (saving, cards, Hub).

``import optimum_depth`` is light: every name below is imported on first use (PEP 562), so the CLI and scripts do not
pay for peft, accelerate, bitsandbytes, lm-eval, matplotlib, the Trainer or the families' config and modeling code
unless a feature needs them. It does register the ``pruned_<family>`` model types with the transformers Auto classes
(:mod:`.modeling`, at almost no cost: the classes themselves load with the first pruned checkpoint), so a
sublayer-pruned checkpoint loads with ``import optimum_depth`` then ``AutoModelForCausalLM.from_pretrained(path)``, or
without optimum_depth with ``trust_remote_code=True``. Block-pruned checkpoints need neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import modeling as _modeling  # noqa: F401  (registers the pruned model types with the Auto classes)
from .version import __version__

_EXPORTS: dict[str, str] = {
    # configs, records and errors
    "DepthPruningConfig": "config",
    "CompensationConfig": "config",
    "PruningPlan": "plan",
    "LayerScores": "scores",
    "OptimumDepthError": "errors",
    "ConfigError": "errors",
    "CheckpointError": "errors",
    "DataError": "errors",
    "DataNotFoundError": "errors",
    "HubError": "errors",
    "LayerIndexError": "errors",
    "NonFiniteError": "errors",
    "OutputError": "errors",
    "PlanMismatchError": "errors",
    "ProvenanceError": "errors",
    "PruningTargetError": "errors",
    "SublayerIndexError": "errors",
    "UnsupportedArchitectureError": "errors",
    "UnsupportedParallelismError": "errors",
    # model facts and calibration
    "ARCHITECTURES": "architectures",
    "count_parameters": "architectures",
    "get_architecture": "architectures",
    "get_decoder_layers": "architectures",
    "CalibrationData": "calibration",
    "prepare_calibration": "calibration",
    # pruning
    "DepthPruner": "pruner",
    "remove_layers": "blocks.surgery",
    "remove_sublayers": "sublayers.surgery",
    "convert_to_pruned_class": "sublayers.surgery",
    "register_pruned_classes": "modeling",
    "plot_sublayer_map": "sublayers.plot",
    # compensation
    "CompensationResult": "compensation",
    "compensate": "compensation",
    # training
    "DepthPruningCallback": "training.callback",
    "prepare_model_for_resume": "training.resume",
    "RecoveryConfig": "training.recovery",
    # evaluation
    "ComparisonResults": "evaluation.results",
    "EvaluationResults": "evaluation.results",
    "LatencyRecord": "evaluation.results",
    # publishing
    "save_pruned_model": "publishing.saving",
    "build_model_card": "publishing.cards",
    "push_to_hub": "publishing.hub",
    "plot_layer_scores": "publishing.plotting",
    # sparsity
    "SparsityConfig": "sparsity.config",
    "SparsityResult": "sparsity.report",
    "sparsify": "sparsity.runner",
    # pruned model classes
    **{
        name: "modeling"
        for name in (
            "PrunedGemma2Config",
            "PrunedGemma2ForCausalLM",
            "PrunedGemma3ForCausalLM",
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
        )
    },
}

__all__ = [
    "ARCHITECTURES",
    "CalibrationData",
    "CheckpointError",
    "ComparisonResults",
    "CompensationConfig",
    "CompensationResult",
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "DepthPruner",
    "DepthPruningCallback",
    "DepthPruningConfig",
    "EvaluationResults",
    "HubError",
    "LatencyRecord",
    "LayerIndexError",
    "LayerScores",
    "NonFiniteError",
    "OptimumDepthError",
    "OutputError",
    "PlanMismatchError",
    "ProvenanceError",
    "PrunedGemma2Config",
    "PrunedGemma2ForCausalLM",
    "PrunedGemma3ForCausalLM",
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
    "RecoveryConfig",
    "SparsityConfig",
    "SparsityResult",
    "SublayerIndexError",
    "UnsupportedArchitectureError",
    "UnsupportedParallelismError",
    "__version__",
    "build_model_card",
    "compensate",
    "convert_to_pruned_class",
    "count_parameters",
    "get_architecture",
    "get_decoder_layers",
    "plot_layer_scores",
    "plot_sublayer_map",
    "prepare_calibration",
    "prepare_model_for_resume",
    "push_to_hub",
    "register_pruned_classes",
    "remove_layers",
    "remove_sublayers",
    "save_pruned_model",
    "sparsify",
]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'optimum_depth' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # static analysers see the real names
    from .architectures import ARCHITECTURES, count_parameters, get_architecture, get_decoder_layers
    from .blocks.surgery import remove_layers
    from .calibration import CalibrationData, prepare_calibration
    from .compensation import CompensationResult, compensate
    from .config import CompensationConfig, DepthPruningConfig
    from .errors import (
        CheckpointError,
        ConfigError,
        DataError,
        DataNotFoundError,
        HubError,
        LayerIndexError,
        NonFiniteError,
        OptimumDepthError,
        OutputError,
        PlanMismatchError,
        ProvenanceError,
        PruningTargetError,
        SublayerIndexError,
        UnsupportedArchitectureError,
        UnsupportedParallelismError,
    )
    from .evaluation.results import ComparisonResults, EvaluationResults, LatencyRecord
    from .modeling import (
        PrunedGemma2Config,
        PrunedGemma2ForCausalLM,
        PrunedGemma3ForCausalLM,
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
        register_pruned_classes,
    )
    from .plan import PruningPlan
    from .pruner import DepthPruner
    from .publishing.cards import build_model_card
    from .publishing.hub import push_to_hub
    from .publishing.plotting import plot_layer_scores
    from .publishing.saving import save_pruned_model
    from .scores import LayerScores
    from .sparsity.config import SparsityConfig
    from .sparsity.report import SparsityResult
    from .sparsity.runner import sparsify
    from .sublayers.plot import plot_sublayer_map
    from .sublayers.surgery import convert_to_pruned_class, remove_sublayers
    from .training.callback import DepthPruningCallback
    from .training.recovery import RecoveryConfig
    from .training.resume import prepare_model_for_resume
