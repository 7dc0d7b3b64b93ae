"""Generates the example model cards in ``model_cards/`` from real runs on SmolLM2-135M-Instruct.

For each criterion: prune 25% of the 30 blocks (calibrated on local C4 documents), measure dense and pruned models
with :mod:`optimum_depth.evaluation` (WikiText-2 perplexity, zero-shot accuracy with a per-task document limit, and
generation latency of both models interleaved in one run), then write the card with the library
(:func:`optimum_depth.publishing.cards.build_model_card`, what :func:`optimum_depth.publishing.hub.push_to_hub` uploads) beside the
importance plot, the plan, the scores and the results JSON.

Run (one CPU thread; on a shared 2-core machine the dense + ``block_influence`` part took 24 minutes and the ``ppl``
part 34, 20 of them scoring: ``ppl`` runs the calibration set once per removed-block candidate):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/make_example_card.py --criteria block_influence ppl

``--reuse-results`` re-renders the cards from the files already written (measures nothing): the pruned model is
rebuilt from the saved plan and scores, and the dense quality results of an earlier card are reused for a new
criterion (its latency is still measured, interleaved with the new pruned model).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from optimum_depth import DepthPruner, DepthPruningConfig, LayerScores, PruningPlan  # noqa: E402
from optimum_depth.architectures import count_parameters  # noqa: E402
from optimum_depth.constants import (
    PLAN_NAME,  # noqa: E402
    RESULTS_NAME,
    SCORES_NAME,  # noqa: E402
)
from optimum_depth.data import default_data_dir  # noqa: E402
from optimum_depth.evaluation import (  # noqa: E402  # noqa: E402
    ComparisonResults,
    EvaluationResults,
    EvaluationSettings,
    PerplexitySettings,
    ZeroShotSettings,
    results_markdown,
)
from optimum_depth.evaluation.evaluate import evaluate_model  # noqa: E402
from optimum_depth.evaluation.latency import measure_latency  # noqa: E402
from optimum_depth.loading import DEFAULT_MODEL_ID, load_model_and_tokenizer  # noqa: E402
from optimum_depth.publishing.cards import CardOptions, build_model_card  # noqa: E402
from optimum_depth.publishing.saving import save_pruning_records, write_into_directory  # noqa: E402

logger = logging.getLogger("make_example_card")

ROOT = Path(__file__).resolve().parents[1]
BASE_LICENSE = "apache-2.0"  # SmolLM2's license (its Hub card); the local GGUF copy has no card to inherit from
CALIBRATION = "calib/c4_demo_llamafactory.jsonl"


def quality(model, tokenizer, name: str, args) -> EvaluationResults:
    """Perplexity and zero-shot accuracy of one model, with the script's settings (latency is measured apart)."""
    settings = EvaluationSettings(
        perplexity=PerplexitySettings(
            datasets=("wikitext2",), seq_len=128, batch_size=8, max_windows=args.ppl_windows
        ),
        zero_shot=ZeroShotSettings(tasks=tuple(args.tasks), limit=args.limit, batch_size=8),
    )
    return evaluate_model(model, tokenizer, settings, name=name)


def with_latency(dense: EvaluationResults, pruned: EvaluationResults, dense_model, model, tokenizer, args):
    """Dense vs pruned results, the latency of both measured interleaved in one run."""
    records, settings = measure_latency(
        {"dense": dense_model, "pruned": model},
        tokenizer,
        batch_sizes=args.batch_sizes,
        new_tokens=args.new_tokens,
        prompt_len=args.prompt_len,
        repeats=args.repeats,
    )
    dense = copy.deepcopy(dense)
    dense.latency, pruned.latency = records["dense"], records["pruned"]
    dense.latency_settings = pruned.latency_settings = settings
    return ComparisonResults(dense=dense, pruned=pruned)


def prune(dense_model, tokenizer, criterion: str, folder: Path, args):
    """The pruned copy of the dense model, its plan and its scores (from the saved files when reusing)."""
    model = copy.deepcopy(dense_model)
    pruner = DepthPruner(
        DepthPruningConfig(criterion=criterion, pruning_ratio=args.ratio, num_samples=32, seq_len=128)
    )
    if args.reuse_results and (folder / PLAN_NAME).is_file() and (folder / SCORES_NAME).is_file():
        pruner.last_scores = LayerScores.from_pretrained(folder)  # recorded in config.pruning by apply
        plan = PruningPlan.from_pretrained(folder)
        pruner.apply(model, plan)
        return model, plan, pruner.last_scores
    pruner.prune(model, calibration=str(default_data_dir() / CALIBRATION), tokenizer=tokenizer)
    return model, pruner.last_plan, pruner.last_scores


def saved_dense_quality(output: Path) -> EvaluationResults | None:
    """The dense model's perplexity/zero-shot results from an earlier card of this script, without its latency."""
    for path in sorted(output.glob(f"*/{RESULTS_NAME}")):
        dense = ComparisonResults.from_pretrained(path).dense
        dense.latency, dense.latency_settings = [], {}
        return dense
    return None


def write_card_folder(folder: Path, model, comparison, plan, scores, options: CardOptions) -> None:
    """The records and the card of one example, as the Hub repository would show them (weights not kept here)."""

    def write(staging: Path) -> None:
        save_pruning_records(staging, plan=plan, scores=scores, results=comparison, plot=True)
        # The card describes the pushed repository, which also holds the weights, config and tokenizer.
        files = [p.name for p in staging.iterdir()] + ["model.safetensors", "config.json", "tokenizer.json"]
        build_model_card(model, comparison, plan, scores, options=options, files=files).save(staging / "README.md")

    write_into_directory(folder, write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criteria", nargs="+", default=["block_influence", "ppl"])
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--tasks", nargs="+", default=["piqa", "arc_easy", "winogrande", "hellaswag"])
    parser.add_argument("--limit", type=int, default=100, help="zero-shot documents per task")
    parser.add_argument("--ppl-windows", type=int, default=128, help="128-token WikiText-2 windows")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[32])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "model_cards")
    parser.add_argument("--reuse-results", action="store_true", help="re-render from the files already written")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(
        f"settings: torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_NUM_THREADS="
        f"{os.environ['OMP_NUM_THREADS']}, {platform.processor() or platform.machine()}, criteria {args.criteria}, "
        f"ratio {args.ratio}, tasks {args.tasks}, limit {args.limit}, ppl windows {args.ppl_windows}, latency batch "
        f"{args.batch_sizes} x new tokens {args.new_tokens}, prompt {args.prompt_len}, repeats {args.repeats}, "
        f"reuse {args.reuse_results}"
    )

    dense_model, tokenizer = load_model_and_tokenizer()
    dense = saved_dense_quality(args.output) if args.reuse_results else None
    for criterion in args.criteria:
        name = f"SmolLM2-135M-Instruct-depth-pruned-{round(100 * args.ratio)}pct-{criterion.replace('_', '-')}"
        folder = args.output / name
        folder.mkdir(parents=True, exist_ok=True)
        model, plan, scores = prune(dense_model, tokenizer, criterion, folder, args)
        if args.reuse_results and (folder / RESULTS_NAME).is_file():
            comparison = ComparisonResults.from_pretrained(folder)
            if comparison.pruned.num_parameters != count_parameters(model):
                raise RuntimeError(f"{folder / RESULTS_NAME} was measured on another model; rerun without reuse.")
        else:
            dense = dense or quality(dense_model, tokenizer, DEFAULT_MODEL_ID, args)
            pruned = quality(model, tokenizer, name, args)
            comparison = with_latency(dense, pruned, dense_model, model, tokenizer, args)
        options = CardOptions(repo_id=f"optimum-depth/{name}", base_model=DEFAULT_MODEL_ID, license=BASE_LICENSE)
        write_card_folder(folder, model, comparison, plan, scores, options)
        print(f"{criterion}: removed {list(plan.removed_blocks)} -> {folder / 'README.md'}")
        print(results_markdown(comparison))


if __name__ == "__main__":
    main()
