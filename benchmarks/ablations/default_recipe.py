"""The default recipe of ``optimum-depth prune`` on a real model: its CPU cost per stage and its validation quality.

Runs what ``optimum-depth prune --model <model> --num-layers-to-remove <n>`` runs with its defaults (the CLI's own
config: ``criterion="auto"``, ``compensation="reconstruct"``, calibration from ``../shared/data/calib``), timing each
stage in CPU-seconds (process time, one thread): scoring + selection (``auto``: every candidate), the compensation
fit and the reconstruction. Then the validation perplexity of the quality benchmark (held-out C4 documents + PTB
valid; no test set is read) and its ratio to dense. Options override the recipe's settings, to compare variants at
equal cost.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.ablations.default_recipe --model smollm2-135m --blocks 6

Appends one JSON line to ``benchmarks/results/ablations/default_recipe.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from optimum_depth import DepthPruner
from optimum_depth.cli.common import (
    add_pruning_arguments,
    config_from_args,
    default_calibration_source,
    with_recommended_recipe,
)
from optimum_depth.loading import load_model_and_tokenizer

from ..quality.protocol import portable, validation_perplexity, validation_score

RESULTS = Path(__file__).resolve().parents[1] / "results" / "ablations" / "default_recipe.jsonl"


def main() -> None:
    """Prunes with the CLI defaults (plus the given options) and appends the costs and validation figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--blocks", type=int, required=True, help="Blocks to remove.")
    parser.add_argument("--label", default="default", help="Name of this variant in the results.")
    add_pruning_arguments(parser)
    args = parser.parse_args()
    args.num_layers_to_remove = args.blocks
    torch.set_num_threads(1)
    dense, tokenizer = load_model_and_tokenizer(args.model)
    dense.eval()
    config = config_from_args(args)
    calibration = config.calibration_dataset or default_calibration_source()
    config = with_recommended_recipe(config, args, calibration)
    pruner = DepthPruner(config)
    start = time.process_time()
    scores = pruner.score(dense, calibration=calibration, tokenizer=tokenizer)
    plan = pruner.plan(scores)
    scored = time.process_time()
    model = pruner.apply(dense, plan, calibration=calibration, tokenizer=tokenizer).eval()
    applied = time.process_time()
    compensation = model.config.pruning.get("compensation") or {}
    reconstruction_s = (compensation.get("reconstruction") or {}).get("cpu_seconds", 0.0)
    dense_model, _ = load_model_and_tokenizer(args.model)
    dense_val = validation_perplexity(dense_model.eval(), tokenizer)
    val = validation_perplexity(model, tokenizer)
    record = {
        "model": args.model,
        "label": args.label,
        "blocks": args.blocks,
        "config": {k: v for k, v in config.to_dict().items() if k not in ("record_type", "optimum_depth_version")},
        "removed_blocks": sorted(plan.removed_blocks),
        "auto": scores.extra.get("auto"),
        "cpu_seconds": {
            "scoring_and_selection": round(scored - start, 1),
            "compensation_fit": round(applied - scored - reconstruction_s, 1),
            "reconstruction": reconstruction_s,
            "total": round(applied - start, 1),
        },
        "compensation": {k: compensation.get(k) for k in ("maps", "reconstruction")},
        "validation": val,
        "dense_validation": dense_val,
        "validation_score": round(validation_score(val, dense_val), 4),
    }
    line = json.dumps(portable(record))
    print(line, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


if __name__ == "__main__":
    main()
