"""One call for everything: perplexity, zero-shot accuracy and latency of a model, or of dense vs pruned.

This module only orchestrates; the measurements live in :mod:`.perplexity`, :mod:`.zero_shot` and :mod:`.latency`.
A section is measured only when asked for (``perplexity_datasets``/``zero_shot_tasks``/``latency_batch_sizes`` not
empty); the others stay empty and render as "not measured".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from ..architectures import unwrap_model
from ..scoring import count_parameters
from .latency import measure_latency
from .perplexity import evaluate_perplexity
from .ppl_data import PerplexityText
from .results import ComparisonResults, EvaluationResults
from .zero_shot import evaluate_zero_shot

logger = logging.getLogger(__name__)


def _model_name(model, name: str | None) -> str:
    if name:
        return name
    return str(getattr(unwrap_model(model).config, "_name_or_path", "") or type(model).__name__)


def _quality(
    model,
    tokenizer,
    name: str,
    perplexity_datasets: Sequence[str | PerplexityText],
    perplexity_kwargs: dict[str, Any],
    zero_shot_tasks: Sequence[str],
    zero_shot_kwargs: dict[str, Any],
    data_dir: str | os.PathLike | None,
) -> EvaluationResults:
    results = EvaluationResults(model_name=name, num_parameters=count_parameters(unwrap_model(model)))
    if perplexity_datasets:
        results.perplexity, results.perplexity_settings = evaluate_perplexity(
            model, tokenizer, datasets=perplexity_datasets, data_dir=data_dir, **perplexity_kwargs
        )
    if zero_shot_tasks:
        results.zero_shot, results.zero_shot_settings = evaluate_zero_shot(
            model, tokenizer, tasks=zero_shot_tasks, data_dir=data_dir, **zero_shot_kwargs
        )
    return results


def evaluate_model(
    model,
    tokenizer,
    name: str | None = None,
    perplexity_datasets: Sequence[str | PerplexityText] = ("wikitext2",),
    zero_shot_tasks: Sequence[str] = (),
    latency_batch_sizes: Sequence[int] = (),
    latency_new_tokens: Sequence[int] = (128,),
    data_dir: str | os.PathLike | None = None,
    perplexity_kwargs: dict[str, Any] | None = None,
    zero_shot_kwargs: dict[str, Any] | None = None,
    latency_kwargs: dict[str, Any] | None = None,
) -> EvaluationResults:
    """Measures one model.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer.
        name: Name in the results (default: the config's ``_name_or_path``).
        perplexity_datasets: Corpora for :func:`~.perplexity.evaluate_perplexity` (empty to skip).
        zero_shot_tasks: Tasks for :func:`~.zero_shot.evaluate_zero_shot` (empty to skip; all seven are in
            ``optimum_depth.evaluation.ZERO_SHOT_TASKS``).
        latency_batch_sizes: Batch sizes for :func:`~.latency.measure_latency` (empty to skip).
        latency_new_tokens: Output lengths for the latency grid.
        data_dir: Local data directory for perplexity and zero-shot.
        perplexity_kwargs: More arguments of ``evaluate_perplexity`` (``seq_len``, ``bos``, ``max_windows``, ...).
        zero_shot_kwargs: More arguments of ``evaluate_zero_shot`` (``limit``, ``batch_size``, ``task_files``, ...).
        latency_kwargs: More arguments of ``measure_latency`` (``warmup``, ``repeats``, ``prompt_len``, ...).

    Returns:
        The :class:`EvaluationResults`.
    """
    name = _model_name(model, name)
    results = _quality(
        model,
        tokenizer,
        name,
        perplexity_datasets,
        perplexity_kwargs or {},
        zero_shot_tasks,
        zero_shot_kwargs or {},
        data_dir,
    )
    if latency_batch_sizes:
        records, settings = measure_latency(
            model, tokenizer, batch_sizes=latency_batch_sizes, new_tokens=latency_new_tokens, **(latency_kwargs or {})
        )
        results.latency, results.latency_settings = records["model"], settings
    return results


def compare_models(
    dense,
    pruned,
    tokenizer,
    dense_name: str | None = None,
    pruned_name: str | None = None,
    perplexity_datasets: Sequence[str | PerplexityText] = ("wikitext2",),
    zero_shot_tasks: Sequence[str] = (),
    latency_batch_sizes: Sequence[int] = (1,),
    latency_new_tokens: Sequence[int] = (128,),
    data_dir: str | os.PathLike | None = None,
    perplexity_kwargs: dict[str, Any] | None = None,
    zero_shot_kwargs: dict[str, Any] | None = None,
    latency_kwargs: dict[str, Any] | None = None,
) -> ComparisonResults:
    """Measures a dense model and its pruned version with identical settings; latency runs interleaved.

    Arguments are those of :func:`evaluate_model`, applied to both models (which share the tokenizer).

    Returns:
        The :class:`ComparisonResults` (speed-ups, ideal speed-up, PPL ratios, zero-shot retention).
    """
    dense_name = _model_name(dense, dense_name)
    pruned_name = pruned_name or f"{dense_name} (pruned)"
    if dense_name == pruned_name:
        raise ValueError(f"Dense and pruned models need distinct names, both are {dense_name!r}.")
    args = (perplexity_datasets, perplexity_kwargs or {}, zero_shot_tasks, zero_shot_kwargs or {}, data_dir)
    dense_results = _quality(dense, tokenizer, dense_name, *args)
    pruned_results = _quality(pruned, tokenizer, pruned_name, *args)
    if latency_batch_sizes:
        records, settings = measure_latency(
            {"dense": dense, "pruned": pruned},
            tokenizer,
            batch_sizes=latency_batch_sizes,
            new_tokens=latency_new_tokens,
            **(latency_kwargs or {}),
        )
        dense_results.latency, pruned_results.latency = records["dense"], records["pruned"]
        dense_results.latency_settings = pruned_results.latency_settings = settings
    return ComparisonResults(dense=dense_results, pruned=pruned_results)
