"""One call for everything: perplexity, zero-shot accuracy and latency of a model, or of dense vs pruned.

This module only orchestrates; the measurements live in :mod:`.perplexity`, :mod:`.zero_shot` and :mod:`.latency`,
and what to measure is one :class:`~.settings.EvaluationSettings`. A section is measured only when its settings are
given; the others stay empty and render as "not measured".
"""

from __future__ import annotations

import dataclasses
import logging

from ..architectures import count_parameters, unwrap_model
from ..errors import ConfigError
from ..privacy import public_name
from .latency import measure_latency
from .perplexity import evaluate_perplexity
from .results import ComparisonResults, EvaluationResults
from .settings import EvaluationSettings
from .zero_shot import evaluate_zero_shot_documents

logger = logging.getLogger(__name__)

__all__ = ["compare_models", "evaluate_model"]


def _kwargs(settings) -> dict:
    """A settings dataclass as keyword arguments (shallow: corpus objects stay objects)."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def _model_name(model, name: str | None) -> str:
    """The model's name in the results: a Hub id, or a local folder's name (never its path)."""
    if name:
        return str(public_name(name))
    return str(public_name(getattr(unwrap_model(model).config, "_name_or_path", "") or type(model).__name__))


def _quality(model, tokenizer, name: str, settings: EvaluationSettings) -> EvaluationResults:
    results = EvaluationResults(model_name=name, num_parameters=count_parameters(unwrap_model(model)))
    if settings.perplexity is not None:
        results.perplexity, results.perplexity_settings = evaluate_perplexity(
            model, tokenizer, data_dir=settings.data_dir, **_kwargs(settings.perplexity)
        )
    if settings.zero_shot is not None:
        results.zero_shot, results.zero_shot_settings, results.zero_shot_documents = evaluate_zero_shot_documents(
            model, tokenizer, settings.zero_shot, data_dir=settings.data_dir
        )
    return results


def evaluate_model(
    model, tokenizer, settings: EvaluationSettings | None = None, name: str | None = None
) -> EvaluationResults:
    """Measures one model.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer.
        settings: What to measure and how (default: WikiText-2 perplexity on 128-token windows).
        name: Name in the results (default: the config's ``_name_or_path``).

    Returns:
        The :class:`EvaluationResults`.
    """
    settings = settings or EvaluationSettings()
    results = _quality(model, tokenizer, _model_name(model, name), settings)
    if settings.latency is not None:
        records, latency_settings = measure_latency(model, tokenizer, **_kwargs(settings.latency))
        results.latency, results.latency_settings = records["model"], latency_settings
        _warn(results.latency_cautions())
    return results


def compare_models(
    dense,
    pruned,
    tokenizer,
    settings: EvaluationSettings | None = None,
    dense_name: str | None = None,
    pruned_name: str | None = None,
) -> ComparisonResults:
    """Measures a dense model and its pruned version with identical settings; latency runs interleaved.

    Args:
        dense: The original model.
        pruned: The pruned model (sharing the tokenizer).
        tokenizer: Their tokenizer.
        settings: What to measure and how (default: WikiText-2 perplexity on 128-token windows).
        dense_name: Name of the dense model in the results.
        pruned_name: Name of the pruned model (default: ``"<dense name> (pruned)"``).

    Returns:
        The :class:`ComparisonResults` (speed-ups, ideal speed-up, PPL ratios, zero-shot retention).
    """
    settings = settings or EvaluationSettings()
    given = (dense_name, pruned_name)
    dense_name = _model_name(dense, dense_name)
    pruned_name = _model_name(pruned, pruned_name) if pruned_name else f"{dense_name} (pruned)"
    if dense_name == pruned_name and given[0] != given[1]:  # two folders of the same name
        pruned_name = f"{pruned_name} (pruned)"
    if dense_name == pruned_name:
        raise ConfigError(f"Dense and pruned models need distinct names, both are {dense_name!r}.")
    dense_results = _quality(dense, tokenizer, dense_name, settings)
    pruned_results = _quality(pruned, tokenizer, pruned_name, settings)
    if settings.latency is not None:
        records, latency_settings = measure_latency(
            {"dense": dense, "pruned": pruned}, tokenizer, **_kwargs(settings.latency)
        )
        dense_results.latency, pruned_results.latency = records["dense"], records["pruned"]
        dense_results.latency_settings = pruned_results.latency_settings = latency_settings
    comparison = ComparisonResults(dense=dense_results, pruned=pruned_results)
    _warn(comparison.latency_cautions())
    return comparison


def _warn(cautions: list[str]) -> None:
    """Logs each latency caution, so that a noisy or above-ideal figure is never only a number in a table."""
    for caution in cautions:
        logger.warning("Latency %s", caution)
