"""Ablation (validation only): reconstruction training of the kept blocks next to each cut, after the linear maps.

Chooses the settings of ``CompensationConfig(method="reconstruct")``: the loss, the learning rate, the steps and which
blocks train. For a fixed plan, the model is first compensated with the library's least-squares maps (256 x 128
calibration tokens of C4, seed 1, as ``compensation="linear_ls"``); then, for each variant, the kept block(s) next to
each cut are trained with :func:`optimum_depth.compensation.reconstruction.train_chain` to reproduce the dense hidden
state after the cut (input: the pruned model's state entering the first trained block, on the same calibration
sequences; the last 20% are held out), and the model is scored on the *validation* texts of the quality benchmark
(held-out C4 documents + PTB valid; no test set is read).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.ablations.reconstruction \\
        --model smollm2-135m --removed 13,14,15,16,17,18 --variants loss=token_mse loss=mse lr=1e-3 before=2 [--plain]

Each variant is ``key=value`` pairs joined by commas over the defaults ``loss=final_norm_cosine,lr=1e-2,steps=400,
before=1,after=0,batch=8`` (``lr`` relative to each weight tensor's RMS; the first records of the results file, without
``lr_scale``, used absolute Adam rates and the defaults ``loss=token_mse,lr=5e-4``) (``before``: kept blocks trained before each cut; ``after``: kept blocks after it, which then join
the chain and move its target to the dense state after them). One JSON line per variant is printed and appended to
``benchmarks/results/ablations/reconstruction_<model>.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, PruningPlan
from optimum_depth.architectures import as_facts
from optimum_depth.blocks.replay import capture_block_inputs, run_block
from optimum_depth.calibration import prepare_calibration
from optimum_depth.compensation.cuts import plan_folds
from optimum_depth.compensation.reconstruction import ReconstructionSettings, train_chain
from optimum_depth.loading import load_model_and_tokenizer

from ..quality.protocol import COMPENSATION_CALIBRATION, validation_perplexity, validation_score

RESULTS = Path(__file__).resolve().parents[1] / "results" / "ablations"
DEFAULTS = {"loss": "final_norm_cosine", "lr": "1e-2", "steps": "400", "before": "1", "after": "0", "batch": "8"}
LR_SCALE = "relative to each weight tensor's RMS"
"""How ``lr`` is read since the library's learning rate became relative (records without ``lr_scale``, written
before, used an absolute Adam learning rate)."""
HELDOUT_FRACTION = 0.2
BATCH = 8


def parse_variant(text: str) -> dict[str, str]:
    """``"loss=mse,lr=1e-3"`` over the defaults."""
    variant = dict(DEFAULTS)
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown variant key {key!r}")
        variant[key] = value
    return variant


def dense_states(model, input_ids) -> tuple[list[torch.Tensor], list[dict]]:
    """The dense hidden state entering every block (and after the last), and every block's call arguments."""
    captured = capture_block_inputs(model, input_ids, BATCH)
    states = [captured.hidden_states]
    for index, block in enumerate(as_facts(model).layers):
        states.append(run_block(block, states[-1], captured.block_kwargs[index], BATCH))
    return states, captured.block_kwargs


def chains(removed: list[int], num_blocks: int, before: int, after: int) -> list[tuple[list[int], int, int]]:
    """Per cut: the trained blocks (original indices), the dense state index they aim at, and the removed count."""
    out = []
    folds = plan_folds(removed, num_blocks)
    fold_blocks = {f.block for f in folds}
    for fold in folds:
        chain = [fold.block]
        while len(chain) < before and chain[0] - 1 >= 0 and chain[0] - 1 not in removed:
            if chain[0] - 1 in fold_blocks:
                break
            chain.insert(0, chain[0] - 1)
        target = fold.target
        for _ in range(after):
            nxt = target + 1
            if nxt >= num_blocks or nxt in removed or nxt in fold_blocks:
                break
            chain.append(nxt)
            target = nxt
        out.append((chain, target + 1, len(fold.removed)))
    return out


def run_variant(base, dense, states, kwargs, removed, variant, heldout, final_norm) -> dict:
    """Trains the chains of one variant on a copy of ``base`` and returns its record."""
    model = copy.deepcopy(base)
    facts = as_facts(model)
    blocks = dict(zip(facts.original_indices, facts.layers, strict=True))
    num_blocks = len(states) - 1
    plan_chains = chains(removed, num_blocks, int(variant["before"]), int(variant["after"]))
    total_removed = sum(c[2] for c in plan_chains)
    start = time.process_time()
    position, hidden = 0, states[0]
    cuts = []
    for chain, target_index, count in plan_chains:
        while position < chain[0]:  # the pruned walk up to the chain
            if position in blocks:
                hidden = run_block(blocks[position], hidden, kwargs[position], BATCH)
            position += 1
        settings = ReconstructionSettings(
            steps=max(1, round(int(variant["steps"]) * count / total_removed)),
            learning_rate=float(variant["lr"]),
            loss=variant["loss"],
            batch_size=int(variant["batch"]),
        )
        trained = train_chain(
            [blocks[i] for i in chain], [kwargs[i] for i in chain], hidden, states[target_index], heldout, settings,
            final_norm,
        )  # fmt: skip
        for index, state in zip(chain, trained.states, strict=True):
            blocks[index].load_state_dict(state)
        cuts.append(
            {
                "blocks": chain,
                "steps": trained.steps,
                "best_step": trained.best_step,
                "heldout_before": round(trained.heldout_before, 5),
                "heldout_after": round(trained.heldout_after, 5),
                "history": [(s, round(v, 5)) for s, v in trained.history],
                "cpu_s": round(trained.seconds, 1),
            }
        )
    train_cpu_s = time.process_time() - start
    return {"model": model, "cuts": cuts, "train_cpu_s": round(train_cpu_s, 1)}


def main() -> None:
    """Runs the variants given on the command line and appends one JSON line per variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--removed", required=True, help="Comma-separated original blocks removed.")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--variants", nargs="+", default=[""])
    parser.add_argument("--plain", action="store_true", help="Also score the plan without compensation.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dense, tokenizer = load_model_and_tokenizer(args.model)
    dense.eval()
    removed = sorted(int(i) for i in args.removed.split(","))
    facts = as_facts(dense)
    plan = PruningPlan(
        granularity="block",
        removed_blocks=tuple(removed),
        source_num_hidden_layers=facts.num_layers,
        source_fingerprint=facts.fingerprint,
    )
    out = RESULTS / f"reconstruction_{args.model}.jsonl"
    dense_val = validation_perplexity(dense, tokenizer)
    if args.plain:
        plain = copy.deepcopy(dense)
        DepthPruner(DepthPruningConfig(criterion="sleb", num_layers_to_remove=len(removed))).apply(plain, plan)
        plain_val = validation_perplexity(plain.eval(), tokenizer)
        record = {"model": args.model, "removed": removed, "variant": "plain", "validation": plain_val}
        record["score"] = round(validation_score(plain_val, dense_val), 4)
        print(json.dumps(record), flush=True)
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        del plain
    start = time.process_time()
    base = copy.deepcopy(dense)
    config = DepthPruningConfig(criterion="sleb", num_layers_to_remove=len(removed), compensation=CompensationConfig())
    DepthPruner(config).apply(base, plan, calibration=COMPENSATION_CALIBRATION, tokenizer=tokenizer)
    fit_cpu_s = time.process_time() - start
    base.eval()
    base_val = validation_perplexity(base, tokenizer)
    print(json.dumps({"variant": "linear_ls", "removed": removed, "validation": base_val,
                      "score": validation_score(base_val, dense_val), "fit_cpu_s": round(fit_cpu_s, 1)}), flush=True)  # fmt: skip
    data = prepare_calibration(
        COMPENSATION_CALIBRATION, tokenizer, model=dense, num_samples=args.samples, seq_len=128, seed=1
    )
    heldout = max(1, round(HELDOUT_FRACTION * args.samples))
    with torch.no_grad():
        states, kwargs = dense_states(dense, data.input_ids)
    final_norm = dense.model.norm
    for text in args.variants:
        variant = parse_variant(text)
        result = run_variant(base, dense, states, kwargs, removed, variant, heldout, final_norm)
        result["model"].eval()
        val = validation_perplexity(result["model"], tokenizer)
        record = {
            "model": args.model,
            "removed": removed,
            "variant": variant,
            "validation": val,
            "score": round(validation_score(val, dense_val), 4),
            "linear_ls_score": round(validation_score(base_val, dense_val), 4),
            "train_cpu_s": result["train_cpu_s"],
            "linear_ls_fit_cpu_s": round(fit_cpu_s, 1),
            "cuts": result["cuts"],
            "samples": args.samples,
            "lr_scale": LR_SCALE,
        }
        line = json.dumps(record)
        print(line, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()
