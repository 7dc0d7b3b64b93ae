"""``optimum-depth evaluate``: perplexity, zero-shot and latency of a model, or of a pruned model vs its dense parent."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError, add_model_arguments, add_output_arguments, check_output_dir, load_model, write_outputs

NAME = "evaluate"
HELP = "Measure perplexity, zero-shot accuracy (lm-eval) and latency; dense vs pruned with --dense-model."


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int_csv(text: str) -> list[int]:
    return [int(item) for item in _csv(text)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    add_model_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--dense-model", help="The dense parent, measured side by side (comparison results).")
    parser.add_argument(
        "--perplexity", type=_csv, default=["wikitext2"], help="Corpora: wikitext2,ptb,c4 ('' = skip)."
    )
    parser.add_argument(
        "--seq-len", type=int, default=128, help="Perplexity window (128 Shortened LLaMA, 2048 SparseGPT)."
    )
    parser.add_argument("--max-windows", type=int, default=None, help="At most this many windows per corpus.")
    parser.add_argument(
        "--zero-shot", type=_csv, default=[], help="lm-eval tasks, e.g. boolq,piqa,hellaswag ('' = skip)."
    )
    parser.add_argument("--limit", type=float, default=None, help="lm-eval limit (documents per task).")
    parser.add_argument("--latency-batch-sizes", type=_int_csv, default=[], help="Batch sizes, e.g. 1,8 ('' = skip).")
    parser.add_argument("--new-tokens", type=_int_csv, default=[128], help="Generated tokens, e.g. 128.")
    parser.add_argument(
        "--data-dir", help="Local evaluation data (default: $OPTIMUM_DEPTH_DATA_DIR or ../shared/data)."
    )


def measure(args: argparse.Namespace):
    """Loads the model(s) and measures them; returns the results object."""
    from ..evaluation.evaluate import compare_models, evaluate_model

    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir!r} is not a directory.")
    if not (args.perplexity or args.zero_shot or args.latency_batch_sizes):
        raise UsageError("Nothing to measure: give --perplexity, --zero-shot or --latency-batch-sizes.")
    check_output_dir(args)
    options = {
        "perplexity_datasets": args.perplexity,
        "zero_shot_tasks": args.zero_shot,
        "latency_batch_sizes": args.latency_batch_sizes,
        "latency_new_tokens": args.new_tokens,
        "data_dir": args.data_dir,
        "perplexity_kwargs": {"seq_len": args.seq_len, "max_windows": args.max_windows},
        "zero_shot_kwargs": {"limit": args.limit},
    }
    model, tokenizer = load_model(args)
    if args.dense_model is None:
        return evaluate_model(model, tokenizer, name=args.model, **options)
    dense_args = argparse.Namespace(**{**vars(args), "model": args.dense_model})
    dense, _ = load_model(dense_args)
    return compare_models(dense, model, tokenizer, dense_name=args.dense_model, pruned_name=args.model, **options)


def run(args: argparse.Namespace) -> int:
    """Writes ``evaluation_results.json`` and ``evaluation_results.md`` into the output directory."""
    results = measure(args)

    def write(tmp: Path) -> None:
        results.to_json(tmp / "evaluation_results.json")
        (tmp / "evaluation_results.md").write_text(results.to_markdown() + "\n", encoding="utf-8")

    out = write_outputs(args, write)
    print(results.to_markdown())
    print(f"\nResults written to {out}")
    return 0
