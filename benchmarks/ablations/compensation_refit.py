"""Ablation (validation only): after the least-squares map, re-fit the MLP down-projection of the next kept blocks.

The idea noted in issue 15 for reaching the 1.6x training-free target: once the cut is compensated by its map, the
``k`` kept blocks after the cut get their ``down_proj`` re-fitted by ridge least squares (ridge chosen on held-out
calibration sequences, shrunk towards the current weight; ``optimum_depth.compensation.linear_maps.refit_linear_weight``)
so that the pruned residual stream tracks the dense one block by block. Fold blocks are never re-fitted.

Usage (from the repository root; figures in ``benchmarks/results/ablations/compensation_refit_<size>.log``)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.ablations.compensation_refit b06 0,1

Arguments: the size (``b06``/``b11``: the compensation-aware plan of the quality benchmark), the comma-separated
``k`` to try, and optionally the calibration sequences (default 256). Prints one line per ``k`` with the validation
perplexity and score (geometric mean of the ratios to dense); no test set is read.
"""

from __future__ import annotations

import copy
import json
import sys
import time

import torch

from optimum_depth.architectures import as_facts
from optimum_depth.blocks.replay import call_block, capture_block_inputs
from optimum_depth.calibration import prepare_calibration
from optimum_depth.compensation.linear_maps import GramAccumulator, refit_linear_weight
from optimum_depth.loading import load_model_and_tokenizer

from ..quality.protocol import COMPENSATION_CALIBRATION, validation_perplexity, validation_score
from ..quality.training_free import build_model

HIDDEN = 576
BATCH = 8


def run(block, states, kwargs, hook_module=None):
    """``block`` on ``states`` in batches; with ``hook_module``, also that module's inputs."""
    out = torch.empty_like(states)
    inputs: list[torch.Tensor] = []
    handle = None
    if hook_module is not None:
        handle = hook_module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    for start in range(0, states.shape[0], BATCH):
        out[start : start + BATCH] = call_block(block, states[start : start + BATCH], kwargs)
    if handle is not None:
        handle.remove()
    return out, (torch.cat(inputs) if inputs else None)


def main() -> None:
    """Runs the ablation for the sizes and ``k`` given on the command line."""
    torch.set_num_threads(1)
    size = sys.argv[1]
    ks = [int(k) for k in sys.argv[2].split(",")]
    num_samples = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    dense, tok = load_model_and_tokenizer()
    dense.eval()
    with open(f"benchmarks/results/quality/selection/aware-{size}.json", encoding="utf-8") as handle:
        plan = json.load(handle)["plan"]
    with open("benchmarks/results/quality/selection/dense-validation.json", encoding="utf-8") as handle:
        dense_val = json.load(handle)
    removed = sorted(plan["removed_blocks"])
    base, fit, _ = build_model(dense, plan, "linear_ls", tok)
    print("maps", [(m["fold_block"], m["heldout_relative_error"]) for m in fit["maps"]], flush=True)
    data = prepare_calibration(
        COMPENSATION_CALIBRATION, tok, model=dense, num_samples=num_samples, seq_len=128, seed=1
    )
    held = max(1, round(0.2 * data.input_ids.shape[0]))
    captured = capture_block_inputs(dense, data.input_ids, BATCH)
    num_layers = dense.config.num_hidden_layers
    kept = [i for i in range(num_layers) if i not in removed]
    run_ends = [r for r in removed if r + 1 not in removed]
    for k in ks:
        t0 = time.process_time()
        model = copy.deepcopy(base)
        facts = as_facts(model)
        blocks = dict(zip(facts.original_indices, facts.layers, strict=True))
        refit = {i for end in run_ends for i in [j for j in kept if j > end][:k]}
        refit -= {i for i in kept if i + 1 in removed}
        dense_h = pruned = captured.hidden_states
        stats = []
        with torch.no_grad():
            for i in range(num_layers):
                kwargs = captured.block_kwargs[i]
                dense_h, _ = run(dense.model.layers[i], dense_h, kwargs)
                if i in removed:
                    continue
                block = blocks[i]
                if i in refit:
                    down = block.mlp.down_proj
                    out, x = run(block, pruned, kwargs, down)
                    rest = out - x @ down.weight.T
                    target = dense_h - rest
                    n = x.shape[0] - held
                    train, heldout = GramAccumulator(x.shape[-1], HIDDEN), GramAccumulator(x.shape[-1], HIDDEN)
                    train.update(x[:n], target[:n])
                    heldout.update(x[n:], target[n:])
                    chosen = refit_linear_weight(down, train, heldout)
                    error = chosen.heldout_errors[chosen.relative_ridge] / chosen.prior_error
                    stats.append((i, chosen.relative_ridge, error))
                pruned, _ = run(block, pruned, kwargs)
        fit_s = time.process_time() - t0
        val = validation_perplexity(model, tok)
        print(
            f"k={k} n={num_samples} refit={stats} fit_cpu={fit_s:.0f}s val={val} "
            f"score={validation_score(val, dense_val):.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
