"""Ablation (validation only): reconstruction vs end-to-end recovery at an equal CPU budget, from the same plan.

For a fixed plan, three models are compared on the quality benchmark's *validation* texts (held-out C4 documents +
PTB valid; no test set is read):

* ``linear_ls``: the plan with the library's least-squares maps (256 x 128 calibration tokens);
* ``reconstruct``: the same, then ``compensation="reconstruct"`` with the given settings (the library's path, its
  training CPU-seconds measured from the record);
* ``recovery``: the ``linear_ls`` model trained end to end with the quality benchmark's best recovery recipe
  (``lm-full-c4``: full fine-tuning, LM loss, lr 1e-4, C4 training documents, cosine over the budget) for the same
  CPU-seconds as the reconstruction took.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.ablations.reconstruction_vs_recovery \\
        --model smollm2-135m --removed 13,14,15,16,17,18 --reconstruct-steps 800 --reconstruct-lr 1e-3

Appends one JSON line to ``benchmarks/results/ablations/reconstruction_vs_recovery.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, PruningPlan
from optimum_depth.architectures import as_facts
from optimum_depth.loading import load_model_and_tokenizer

from ..quality.protocol import COMPENSATION_CALIBRATION, portable, validation_perplexity, validation_score
from ..quality.recovery import RECIPES, train_for_budget, training_data

RESULTS = Path(__file__).resolve().parents[1] / "results" / "ablations" / "reconstruction_vs_recovery.jsonl"


def pruned(dense, tokenizer, plan: PruningPlan, settings: CompensationConfig):
    """A copy of ``dense`` with ``plan`` applied and compensated with ``settings``."""
    model = copy.deepcopy(dense)
    config = DepthPruningConfig(criterion="sleb", num_layers_to_remove=len(plan.removed_blocks), compensation=settings)
    DepthPruner(config).apply(model, plan, calibration=COMPENSATION_CALIBRATION, tokenizer=tokenizer)
    return model.eval()


def main() -> None:
    """Runs the three models and appends their validation figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--removed", required=True, help="Comma-separated original blocks removed.")
    parser.add_argument("--reconstruct-steps", type=int, default=CompensationConfig().reconstruct_steps)
    parser.add_argument("--reconstruct-lr", type=float, default=CompensationConfig().reconstruct_lr)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dense, tokenizer = load_model_and_tokenizer(args.model)
    dense.eval()
    facts = as_facts(dense)
    removed = sorted(int(i) for i in args.removed.split(","))
    plan = PruningPlan(
        granularity="block",
        removed_blocks=tuple(removed),
        source_num_hidden_layers=facts.num_layers,
        source_fingerprint=facts.fingerprint,
    )
    dense_val = validation_perplexity(dense, tokenizer)
    linear = pruned(dense, tokenizer, plan, CompensationConfig())
    settings = CompensationConfig(
        method="reconstruct", reconstruct_steps=args.reconstruct_steps, reconstruct_lr=args.reconstruct_lr
    )
    reconstructed = pruned(dense, tokenizer, plan, settings)
    budget = reconstructed.config.pruning["compensation"]["reconstruction"]["cpu_seconds"]
    recipe = RECIPES["lm-full-c4"]
    train, provenance = training_data(recipe, tokenizer, dense, self_sequences=0)
    recovered, record = train_for_budget(copy.deepcopy(linear), tokenizer, dense, recipe, train, budget)
    rows = {}
    for name, model in (("linear_ls", linear), ("reconstruct", reconstructed), ("recovery", recovered)):
        val = validation_perplexity(model, tokenizer)
        rows[name] = {"validation": val, "validation_score": round(validation_score(val, dense_val), 4)}
    result = {
        "model": args.model,
        "removed": removed,
        "reconstruction": reconstructed.config.pruning["compensation"]["reconstruction"],
        "recovery": {"recipe": "lm-full-c4", "steps": record["steps"], "train_cpu_s": record["train_cpu_s"]},
        "training_data": provenance,
        "budget_cpu_s": budget,
        "rows": rows,
        "dense_validation": dense_val,
    }
    line = json.dumps(portable(result))
    print(line, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


if __name__ == "__main__":
    main()
