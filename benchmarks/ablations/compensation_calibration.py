"""Ablation (validation only): how much, and which, calibration text the least-squares compensation needs.

Refits the compensation of the quality benchmark's compensation-aware plan with other calibration sources and sizes
and prints the validation perplexity and score (geometric mean of the ratios to dense; no test set is read).

Usage (from the repository root; figures in ``benchmarks/results/ablations/compensation_calibration_<size>.log``)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.ablations.compensation_calibration \\
        b06 calib:256 calib:1024 c4:1024

Each variant is ``source:sequences``: ``c4`` (the benchmark's compensation calibration, 300 C4 documents),
``wiki`` (the shared Wikipedia calibration file) or ``calib`` (both files); sequences of 128 tokens.
"""

from __future__ import annotations

import copy
import json
import sys
import time

import torch

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, PruningPlan
from optimum_depth.loading import load_model_and_tokenizer

from ..quality.protocol import DATA, validation_perplexity, validation_score

SOURCES = {
    "c4": DATA / "calib" / "c4_demo_llamafactory.jsonl",
    "calib": DATA / "calib",
    "wiki": DATA / "calib" / "wiki_demo_llamafactory.txt",
}


def main() -> None:
    """Fits and evaluates each variant given on the command line."""
    torch.set_num_threads(1)
    size = sys.argv[1]
    dense, tok = load_model_and_tokenizer()
    dense.eval()
    with open(f"benchmarks/results/quality/selection/aware-{size}.json", encoding="utf-8") as handle:
        plan = PruningPlan.from_dict(json.load(handle)["plan"])
    with open("benchmarks/results/quality/selection/dense-validation.json", encoding="utf-8") as handle:
        dense_val = json.load(handle)
    for spec in sys.argv[2:]:
        source, samples = spec.split(":")
        config = DepthPruningConfig(
            criterion=plan.criterion,
            num_layers_to_remove=len(plan.removed_blocks),
            compensation=CompensationConfig(num_samples=int(samples)),
        )
        model = copy.deepcopy(dense)
        start = time.process_time()
        DepthPruner(config).apply(model, plan, calibration=str(SOURCES[source]), tokenizer=tok)
        fit_s = time.process_time() - start
        maps = [
            (m["fold_block"], m["relative_ridge"], m["heldout_relative_error"])
            for m in model.config.pruning["compensation"]["maps"]
        ]
        val = validation_perplexity(model.eval(), tok)
        print(
            f"{size} {spec} maps={maps} fit_cpu={fit_s:.0f}s val={val} score={validation_score(val, dense_val):.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
