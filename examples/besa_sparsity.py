"""BESA: learn how much of each linear layer to prune (weight sparsity), optionally after removing whole blocks.

BESA (Xu et al., 2024) learns, block by block, one sparsity per output row of every attention and MLP linear so that
each block reaches the target on average with the smallest reconstruction error; ``--method wanda`` and
``--method magnitude`` run the uniform baselines on the same pipeline. ``--remove-blocks N`` first removes N whole
blocks (Block Influence) and learns the sparsity of the surviving ones. The weights keep exact zeros in dense
tensors: the checkpoint loads anywhere with ``from_pretrained`` but is not faster by itself (see docs/besa.md).

    python examples/besa_sparsity.py --output-dir besa

Reduced run (5-block TinyStories model, 4 calibration sequences of 64 tokens, 1 block removed first):
    python examples/besa_sparsity.py --model ../shared/models/stories260K --num-samples 4 --seq-len 64 \
        --remove-blocks 1 --output-dir besa

Outputs in ``<output-dir>``: ``model/`` (``config.sparsity`` holds the learned sparsity of every layer),
``sparsity_result.json`` (per block and layer: sparsity, reconstruction error) and ``layer_sparsity.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from optimum_depth import DepthPruningConfig, save_pruned_model
from optimum_depth.data import default_data_dir
from optimum_depth.loading import load_model_and_tokenizer
from optimum_depth.sparsity import SparsityConfig, sparsify


def parse_args() -> argparse.Namespace:
    data_dir = default_data_dir()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Path, Hub id or .gguf (default: SmolLM2-135M-Instruct).")
    parser.add_argument("--calibration", default=data_dir and str(data_dir / "c4" / "c4_validation_2k.jsonl"))
    parser.add_argument("--method", default="besa", choices=["besa", "wanda", "magnitude"])
    parser.add_argument("--sparsity", type=float, default=0.5, help="Target fraction of zero weights.")
    parser.add_argument("--num-samples", type=int, default=32, help="Calibration sequences (paper: 128).")
    parser.add_argument("--seq-len", type=int, default=256, help="Tokens per calibration sequence (paper: 2048).")
    parser.add_argument("--remove-blocks", type=int, default=0, help="Blocks to remove before sparsifying.")
    parser.add_argument("--output-dir", required=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model_and_tokenizer(args.model)
    depth = None
    if args.remove_blocks:
        depth = DepthPruningConfig(criterion="block_influence", num_layers_to_remove=args.remove_blocks)
    config = SparsityConfig(
        method=args.method,
        sparsity=args.sparsity,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        depth_pruning=depth,
    )
    result = sparsify(model, config, args.calibration, tokenizer)
    result.save_pretrained(output)  # sparsity_result.json
    result.plot(output / "layer_sparsity.png")
    save_pruned_model(result.model, output / "model", tokenizer)

    for block in result.blocks:
        print(f"block {block.block}: sparsity {block.sparsity:.3f}, reconstruction error {block.reconstruction}")
    print(f"achieved sparsity {result.achieved_sparsity:.4f} (target {args.sparsity}); saved to {output / 'model'}")


if __name__ == "__main__":
    main()
