"""Table 3: FinerCut sublayer pruning vs whole-block pruning, matched on parameters and on sublayer count.

Block rows re-apply table 1's recorded plans for the PPL and SLEB criteria at 20% and 35% of the blocks (6 and 10
of 30 blocks, i.e. 12 and 20 sublayers), with ``remove_layers`` on a fresh copy of the dense model (no rescoring).
FinerCut rows come from **one** greedy FinerCut search (``DepthPruningConfig(granularity="sublayer",
criterion="finercut")``, JS distance) run down to the parameter count of the 10-block model; every FinerCut model is
a prefix of that greedy path (the greedy choice at step k does not depend on the target), planned with
``DepthPruner(config).plan(scores)`` for its own target:

* ``finercut-params-r*``: until the model has at most as many parameters as the block model of the same ratio;
* ``finercut-count-r*``: as many sublayers as the block model removes (2 per block).

The search is saved to ``--search-file`` (``LayerScores`` JSON) so an interrupted run does not repeat it. Every model
is evaluated as in table 1. Needs table 1's results files. Run from the repository root::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.paper_tables.table3_finercut
    python -m benchmarks.paper_tables.make_tables
"""

from __future__ import annotations

import argparse
import copy
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch

from optimum_depth import DepthPruner, DepthPruningConfig, LayerScores
from optimum_depth.persistence import write_text_atomically  # noqa: E402
from optimum_depth.plan import PruningPlan

from .context import DATA, ROOT, TableContext, add_common_arguments, calibration_settings
from .runner import EvalSettings, PlannedRun, fill_evaluation, new_record
from .table1_block_criteria import rebuild_table1_model, table1_record
from .tables import BLOCK_RATIOS, CRITERIA, block_run_id, table3_run_id

TABLE = "table3"
MODULE = "benchmarks.paper_tables.table3_finercut"
BLOCK_CRITERIA = ("ppl", "sleb")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (evaluation options from :class:`EvalSettings`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", default=str(DATA / "calib"))
    parser.add_argument("--num-samples", type=int, default=10, help="FinerCut calibration sequences (paper: 10).")
    parser.add_argument("--seq-len", type=int, default=64, help="FinerCut tokens per sequence (paper: 256).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distance", default="js")
    parser.add_argument("--search-file", default=str(ROOT / "benchmarks" / "results" / "table3_finercut_search.json"))
    return add_common_arguments(parser).parse_args(argv)


def block_targets(results_dir: str) -> dict[float, dict[str, int]]:
    """Per ratio: the parameters and sublayers removed of table 1's block models (equal for PPL and SLEB).

    Raises:
        ValueError: If PPL and SLEB removed different numbers of blocks (the matching would be ambiguous).
    """
    targets = {}
    for ratio in BLOCK_RATIOS:
        sources = [table1_record(results_dir, criterion, ratio) for criterion in BLOCK_CRITERIA]
        params = {s["metrics"]["num_parameters"] for s in sources}
        blocks = {s["method"]["num_blocks_removed"] for s in sources}
        if len(params) != 1 or len(blocks) != 1:
            raise ValueError(f"Table 1's PPL and SLEB runs at {ratio} differ in size: {params} params, {blocks}.")
        targets[ratio] = {"num_parameters": params.pop(), "num_sublayers": 2 * blocks.pop()}
    return targets


def finercut_config(args: argparse.Namespace, **target: int) -> DepthPruningConfig:
    """The FinerCut config of this table with ``target`` (``target_num_params`` or ``num_layers_to_remove``)."""
    return DepthPruningConfig(
        granularity="sublayer",
        criterion="finercut",
        distance=args.distance,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        seed=args.seed,
        calibration_dataset=args.calibration,
        **target,
    )


def greedy_search(dense, tokenizer, args: argparse.Namespace, min_params: int) -> LayerScores:
    """The greedy FinerCut path down to ``min_params`` parameters, read from ``--search-file`` when it matches."""
    config = finercut_config(args, target_num_params=min_params)
    path = Path(args.search_file)
    if path.exists():
        scores = LayerScores.from_pretrained(path)
        if scores.extra.get("table3_config") == config.to_dict():
            print(f"  FinerCut search read from {path}", flush=True)
            return scores
    torch.manual_seed(args.seed)
    pruner = DepthPruner(config)
    start = time.perf_counter()
    scores = pruner.score(dense, calibration=args.calibration, tokenizer=tokenizer)
    search_s = time.perf_counter() - start
    scores.extra.update(table3_config=config.to_dict(), table3_search_s=search_s)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, scores.to_json_string())
    print(f"  FinerCut search: {len(scores.removal_order or [])} removals in {search_s:.0f} s")
    return scores


def sublayer_method(plan: PruningPlan, config: DepthPruningConfig, matched_on: str, ratio: float) -> dict[str, Any]:
    """The ``method`` entry of a FinerCut run."""
    attention = sorted({*plan.removed_attention, *plan.removed_blocks})
    mlp = sorted({*plan.removed_mlp, *plan.removed_blocks})
    return {
        "name": "finercut",
        "label": "FinerCut (sublayers)",
        "matched_on": matched_on,
        "block_ratio": ratio,
        "removed_attention": attention,
        "removed_mlp": mlp,
        "removed_blocks": list(plan.removed_blocks),
        "num_sublayers_removed": len(attention) + len(mlp),
        "removal_order": list(plan.reason["removal_order"]),
        "recovery": "none",
        "config": config.to_dict(),
    }


def finercut_run(dense, tokenizer, search, matched_on: str, ratio: float, target, args, base) -> dict[str, Any]:
    """FinerCut matched on ``matched_on`` (``params`` or ``count``) to the block model of ``ratio``.

    ``target`` is that block model's entry of :func:`block_targets`.
    """
    if matched_on == "params":
        config = finercut_config(args, target_num_params=target["num_parameters"])
    else:
        config = finercut_config(args, num_layers_to_remove=target["num_sublayers"])
    scores = search()
    pruner = DepthPruner(config)
    plan = pruner.plan(scores)  # a prefix of the greedy path, up to this run's target
    pruned = pruner.apply(copy.deepcopy(dense), plan)
    method = sublayer_method(plan, config, matched_on, ratio)
    method["num_blocks_kept"] = int(pruned.config.num_hidden_layers)
    print(f"  finercut {matched_on} r={ratio}: {method['num_sublayers_removed']} sublayers", flush=True)
    record = new_record(TABLE, table3_run_id("finercut", matched_on, ratio), base["model"], method, base["settings"])
    fill_evaluation(record, pruned, tokenizer, EvalSettings.from_args(args), dense=dense)
    record["details"]["search"] = {
        "removal_order": [scores.candidate_name(i) for i in scores.removal_order or []],
        "values": [scores.values[i] for i in scores.removal_order or []],
        "search_s": scores.extra.get("table3_search_s"),
        "shared": "one greedy search serves every FinerCut row (see --search-file)",
    }
    record["timings"]["pruning_s"] = scores.extra.get("table3_search_s")
    return record


def block_run(dense, tokenizer, criterion: str, ratio: float, args, base) -> dict[str, Any]:
    """Table 1's ``criterion`` model at ``ratio`` rebuilt from its recorded plan and evaluated again."""
    pruned, removed = rebuild_table1_model(dense, table1_record(args.results_dir, criterion, ratio))
    method = {
        "name": criterion,
        "label": CRITERIA[criterion],
        "block_ratio": ratio,
        "removed_blocks": removed,
        "num_blocks_removed": len(removed),
        "num_blocks_kept": int(pruned.config.num_hidden_layers),
        "num_sublayers_removed": 2 * len(removed),
        "pruned_from": f"table1/{block_run_id(criterion, ratio)}",
        "recovery": "none",
    }
    print(f"  block {criterion} r={ratio}: removed {removed}", flush=True)
    record = new_record(TABLE, table3_run_id(f"block-{criterion}", "", ratio), base["model"], method, base["settings"])
    return fill_evaluation(record, pruned, tokenizer, EvalSettings.from_args(args), dense=dense)


def main(argv: list[str] | None = None) -> list[str]:
    """Runs every missing run of table 3; returns the run ids computed."""
    args = parse_args(argv)
    targets = block_targets(args.results_dir)  # fails early without table 1
    calibration = {
        **calibration_settings(args),
        "applies_to": "FinerCut search (block rows: table 1's plans, 10 x 128 tokens)",
    }
    context = TableContext.start(TABLE, MODULE, args, {"calibration": calibration})
    dense, tokenizer, base = context.dense, context.tokenizer, context.base
    search = cache(lambda: greedy_search(dense, tokenizer, args, min(t["num_parameters"] for t in targets.values())))
    runs = []
    for ratio in BLOCK_RATIOS:
        for criterion in BLOCK_CRITERIA:
            run_id = table3_run_id(f"block-{criterion}", "", ratio)
            runs.append(PlannedRun(run_id, lambda c=criterion, r=ratio: block_run(dense, tokenizer, c, r, args, base)))
        for matched_on in ("params", "count"):
            run_id = table3_run_id("finercut", matched_on, ratio)
            runs.append(
                PlannedRun(
                    run_id,
                    lambda m=matched_on, r=ratio: finercut_run(dense, tokenizer, search, m, r, targets[r], args, base),
                )
            )
    return context.run(runs)


if __name__ == "__main__":
    main()
