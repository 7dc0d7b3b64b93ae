"""Training-free rows: the best plain criterion, the same plan compensated, and compensation-aware selection.

* ``plain-<size>``: the plan of the plain criterion (six of them, table 1's calibration) with the lowest *validation*
  perplexity (:mod:`.protocol`); every criterion's plan and validation figures are kept in
  ``<table>/selection/plain-<size>.json``;
* ``linear_ls-<size>`` / ``linear_cosine-<size>``: that plan, compensated (``CompensationConfig(method=...)``, the
  library defaults: 256 x 128 calibration tokens, ridge chosen on held-out calibration rows);
* ``aware-<size>``: blocks chosen by SLEB's greedy rounds with every candidate scored *after* its own fitted map
  (``CompensationConfig(selection="aware")``), then compensated the same way;
* ``reconstruct-<size>``: the plain plan with ``CompensationConfig(method="reconstruct")`` (least-squares maps, then
  the kept block before each cut trained on cached calibration activations; the library defaults);
* ``default-<size>``: ``optimum-depth prune``'s default recipe for blocks with calibration text, run as the command
  runs it (:func:`default_recipe_config`, the command line's defaults read at run time: ``criterion="auto"``, the
  block criteria and the aware selection tried within its CPU budget, each plan with its maps, compared on held-out
  calibration sequences, and ``compensation="reconstruct"``), calibration from the shared ``calib/`` folder; its
  whole pruning CPU time is recorded.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, PruningPlan

from .models import QualityModel
from .protocol import (
    COMPENSATION_CALIBRATION,
    SCORING_CALIBRATION,
    read_json,
    validation_perplexity,
    validation_score,
    write_json,
)

PLAIN_CRITERIA = ("magnitude", "taylor", "ppl", "block_influence", "angular", "sleb")
COMPENSATIONS = ("linear_ls", "linear_cosine", "reconstruct")


def selection_dir(results_dir: Path, spec: QualityModel) -> Path:
    """Where the selection records of ``spec`` go (``<table>/selection``)."""
    return results_dir / spec.table / "selection"


def dense_validation(dense, tokenizer, results_dir: Path, spec: QualityModel) -> dict[str, float]:
    """The dense model's validation perplexity (cached in ``<table>/selection/dense-validation.json``)."""
    path = selection_dir(results_dir, spec) / "dense-validation.json"
    cached = read_json(path)
    if cached is None:
        cached = validation_perplexity(dense, tokenizer, spec.ppl_batch_size)
        write_json(path, cached)
    return cached


def _plain_config(criterion: str, num_blocks: int, compensation: CompensationConfig | None = None):
    return DepthPruningConfig(
        criterion=criterion,
        num_layers_to_remove=num_blocks,
        num_samples=SCORING_CALIBRATION["num_samples"],
        seq_len=SCORING_CALIBRATION["seq_len"],
        seed=SCORING_CALIBRATION["seed"],
        calibration_dataset=SCORING_CALIBRATION["source"],
        compensation=compensation,
    )


def plain_selection(dense_model, tokenizer, spec: QualityModel, size: str, results_dir: Path) -> dict[str, Any]:
    """Every plain criterion's plan for ``size`` with its validation perplexity, and the chosen one (cached)."""
    path = selection_dir(results_dir, spec) / f"plain-{size}.json"
    selection = read_json(path) or {"criteria": {}}
    dense = dense_validation(dense_model, tokenizer, results_dir, spec)
    for criterion in PLAIN_CRITERIA:
        if criterion in selection["criteria"]:
            continue
        torch.manual_seed(SCORING_CALIBRATION["seed"])
        pruner = DepthPruner(_plain_config(criterion, spec.block_targets[size]))
        start = time.process_time()
        model = pruner.prune(copy.deepcopy(dense_model), SCORING_CALIBRATION["source"], tokenizer)
        scoring_cpu_s = time.process_time() - start
        validation = validation_perplexity(model, tokenizer, spec.ppl_batch_size)
        selection["criteria"][criterion] = {
            "removed_blocks": sorted(pruner.last_plan.removed_blocks),
            "plan": pruner.last_plan.to_dict(),
            "validation_perplexity": validation,
            "validation_score": validation_score(validation, dense),
            "scoring_cpu_s": scoring_cpu_s,
        }
        print(f"  [{size}] {criterion}: {selection['criteria'][criterion]['removed_blocks']} {validation}", flush=True)
        write_json(path, selection)
    selection["dense_validation"] = dense
    selection["chosen"] = min(selection["criteria"], key=lambda c: selection["criteria"][c]["validation_score"])
    selection["chosen_by"] = "lowest geometric mean of validation perplexity ratios (held-out C4, PTB valid)"
    write_json(path, selection)
    return selection


def aware_plan(dense, tokenizer, spec: QualityModel, size: str, results_dir: Path) -> dict[str, Any]:
    """The compensation-aware plan for ``size`` (cached in ``<table>/selection/aware-<size>.json``)."""
    path = selection_dir(results_dir, spec) / f"aware-{size}.json"
    cached = read_json(path)
    if cached is not None:
        return cached
    config = _plain_config("sleb", spec.block_targets[size], CompensationConfig(selection="aware"))
    pruner = DepthPruner(config)
    start = time.process_time()
    scores = pruner.score(dense, COMPENSATION_CALIBRATION, tokenizer)
    plan = pruner.plan(scores)
    record = {
        "removed_blocks": sorted(plan.removed_blocks),
        "plan": plan.to_dict(),
        "config": config.to_dict(),
        "scoring_cpu_s": time.process_time() - start,
        "rounds": scores.extra.get("rounds"),
    }
    write_json(path, record)
    return record


def build_model(dense, plan_dict: dict[str, Any], compensation: str | None, tokenizer):
    """A copy of ``dense`` with ``plan_dict`` applied and, unless ``compensation`` is None, compensated.

    Returns:
        ``(model, compensation record or None, fit CPU seconds)``.
    """
    plan = PruningPlan.from_dict(plan_dict)
    settings = CompensationConfig(method=compensation) if compensation else None
    config = DepthPruningConfig(
        criterion=plan.criterion, num_layers_to_remove=len(plan.removed_blocks), compensation=settings
    )
    model = copy.deepcopy(dense)
    start = time.process_time()
    DepthPruner(config).apply(model, plan, calibration=COMPENSATION_CALIBRATION, tokenizer=tokenizer)
    fit_cpu_s = time.process_time() - start
    return model.eval(), model.config.pruning.get("compensation"), fit_cpu_s


def cli_defaults() -> dict[str, str]:
    """``optimum-depth prune``'s defaults for blocks with calibration text (``cli/common.py``), read at run time."""
    from optimum_depth.cli import common

    return {
        "criterion": common.RECOMMENDED_BLOCK_CRITERION,
        "compensation": common.RECOMMENDED_COMPENSATION,
    }


def default_recipe_config(num_blocks: int) -> DepthPruningConfig:
    """The config ``optimum-depth prune --num-layers-to-remove N`` uses with the shared ``calib/`` folder."""
    defaults = cli_defaults()
    return DepthPruningConfig(
        criterion=defaults["criterion"],
        num_layers_to_remove=num_blocks,
        compensation=CompensationConfig(method=defaults["compensation"]),
        calibration_dataset=SCORING_CALIBRATION["source"],
    )


def default_recipe_model(dense, tokenizer, num_blocks: int):
    """``dense`` pruned by the default recipe, as the command line does it.

    Returns:
        ``(model, plan dict, config dict, pruning CPU seconds)``: scoring, the auto candidates, the compensation fit
        and the reconstruction, all in one process-time measurement.
    """
    config = default_recipe_config(num_blocks)
    pruner = DepthPruner(config)
    model = copy.deepcopy(dense)
    start = time.process_time()
    model = pruner.prune(model, SCORING_CALIBRATION["source"], tokenizer)
    cpu_s = time.process_time() - start
    return model.eval(), pruner.last_plan.to_dict(), config.to_dict(), cpu_s
