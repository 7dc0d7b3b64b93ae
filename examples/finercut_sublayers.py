"""FinerCut: remove single attention / MLP sublayers, save the model natively, reload it and plot what went.

FinerCut greedily removes the sublayer whose absence changes the next-token distributions least (Jensen-Shannon
divergence to the dense model by default), one at a time, until ``--pruning-ratio`` of the sublayers are gone. The
pruned model becomes a ``Pruned<Family>ForCausalLM`` that ``AutoModelForCausalLM.from_pretrained`` loads after
``import optimum_depth`` (or with ``trust_remote_code=True`` where optimum_depth is not installed).

    python examples/finercut_sublayers.py --output-dir finercut

Reduced run (5-block TinyStories model: 3 of its 10 sublayers, 4 calibration sequences of 64 tokens):
    python examples/finercut_sublayers.py --model ../shared/models/stories260K --pruning-ratio 0.3 \
        --num-samples 4 --seq-len 64 --output-dir finercut

Outputs in ``<output-dir>``: ``model/`` (checkpoint with ``pruning_plan.json`` and ``layer_scores.json``) and
``finercut_map.png`` (blocks x {attention, MLP}, removed sublayers in red numbered by removal step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from optimum_depth import DepthPruner, DepthPruningConfig, plot_sublayer_map, save_pruned_model
from optimum_depth.data import default_data_dir
from optimum_depth.loading import load_model_and_tokenizer


def parse_args() -> argparse.Namespace:
    data_dir = default_data_dir()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Path, Hub id or .gguf (default: SmolLM2-135M-Instruct).")
    parser.add_argument("--calibration", default=data_dir and str(data_dir / "calib" / "wiki_demo_llamafactory.txt"))
    parser.add_argument("--pruning-ratio", type=float, default=0.25, help="Fraction of the sublayers to remove.")
    parser.add_argument("--distance", default="js", choices=["js", "js_finercut", "kl", "angular", "norm"])
    parser.add_argument("--num-samples", type=int, default=10, help="Calibration sequences (paper: 10).")
    parser.add_argument("--seq-len", type=int, default=256, help="Tokens per calibration sequence (paper: 256).")
    parser.add_argument("--output-dir", required=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model_and_tokenizer(args.model)
    config = DepthPruningConfig(
        granularity="sublayer",
        criterion="finercut",
        distance=args.distance,
        pruning_ratio=args.pruning_ratio,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        protect_first_fraction=0.0,
    )
    pruner = DepthPruner(config)
    scores = pruner.score(model, args.calibration, tokenizer)  # the greedy search: one candidate per sublayer
    plan = pruner.plan(scores)  # JSON-able, original block numbering
    pruner.apply(model, plan)  # in place: the model is now a Pruned<Family>ForCausalLM
    removed = f"attention {list(plan.removed_attention)}, MLP {list(plan.removed_mlp)}"
    print(f"{type(model).__name__}; sublayers removed in original blocks: {removed}")

    plot_sublayer_map(model, output / "finercut_map.png", scores=scores)
    save_pruned_model(model, output / "model", tokenizer, plan=plan, scores=scores)

    reloaded = AutoModelForCausalLM.from_pretrained(output / "model").eval()
    ids = tokenizer("Once upon a time", return_tensors="pt").input_ids
    with torch.no_grad():
        difference = (reloaded(ids).logits - model.eval()(ids).logits).abs().max().item()
        generated = reloaded.generate(ids, max_new_tokens=16, do_sample=False)
    print(f"reloaded as {type(reloaded).__name__}; max |logit difference| {difference:.2e}")
    print("greedy sample:", tokenizer.decode(generated[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
