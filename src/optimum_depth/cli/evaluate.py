"""``optimum-depth evaluate``: perplexity, zero-shot and latency of a model, or of a pruned model vs its dense parent."""

from __future__ import annotations

import argparse
import math

from .common import add_model_arguments, add_output_arguments, check_data_dir, check_output_dir, load_model

NAME = "evaluate"
HELP = "Measure perplexity, zero-shot accuracy (lm-eval) and latency; dense vs pruned with --dense-model."


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int_csv(text: str) -> list[int]:
    return [int(item) for item in _csv(text)]


def _limit(text: str) -> int | float:
    """``--limit``: a document count (``200``) or a fraction (``0.5``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0) or (value > 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"must be a document count >= 1 or a fraction in (0, 1], got {text!r}")
    return int(value) if value.is_integer() and value >= 1 else value


def _listed(values: list) -> str:
    return ",".join(str(v) for v in values) or "none"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    add_measurement_arguments(parser, perplexity=["wikitext2"], latency_batch_sizes=[])


def add_measurement_arguments(
    parser: argparse.ArgumentParser, perplexity: list[str], latency_batch_sizes: list[int]
) -> None:
    """The options of ``evaluate`` (and ``benchmark``), with what each command measures by default.

    Args:
        parser: The subcommand's parser.
        perplexity: The corpora measured when ``--perplexity`` is not given.
        latency_batch_sizes: The latency batch sizes measured when ``--latency-batch-sizes`` is not given.
    """
    add_model_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--dense-model", help="The dense parent, measured side by side (comparison results).")
    parser.add_argument(
        "--perplexity",
        type=_csv,
        default=perplexity,
        help=f"Comma-separated corpora among wikitext2, ptb, c4 (default {_listed(perplexity)}; '' skips perplexity).",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        default=128,
        help="Perplexity window: 128 (Shortened LLaMA, default) or 2048 (SparseGPT).",
    )
    parser.add_argument("--max-windows", type=int, default=None, help="At most this many windows per corpus.")
    parser.add_argument(
        "--zero-shot",
        type=_csv,
        default=[],
        help="Comma-separated lm-eval tasks among boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, "
        "openbookqa (default: none).",
    )
    parser.add_argument(
        "--limit", type=_limit, default=None, help="Zero-shot documents per task (e.g. 200), or a fraction (e.g. 0.5)."
    )
    parser.add_argument(
        "--latency-batch-sizes",
        type=_int_csv,
        default=latency_batch_sizes,
        help=f"Latency batch sizes, e.g. 1,8 (default {_listed(latency_batch_sizes)}; '' skips latency).",
    )
    parser.add_argument("--new-tokens", type=_int_csv, default=[128], help="Generated tokens for latency, e.g. 128.")
    parser.add_argument(
        "--data-dir", help="Local evaluation data (default: $OPTIMUM_DEPTH_DATA_DIR or ../shared/data)."
    )


def settings_from_args(args: argparse.Namespace):
    """The :class:`~optimum_depth.evaluation.EvaluationSettings` the options describe (checked before any work)."""
    from ..evaluation.settings import EvaluationSettings, LatencySettings, PerplexitySettings, ZeroShotSettings

    data_dir = check_data_dir(args.data_dir)
    return EvaluationSettings(
        perplexity=PerplexitySettings(
            datasets=tuple(args.perplexity), seq_len=args.seq_len, max_windows=args.max_windows
        )
        if args.perplexity
        else None,
        zero_shot=ZeroShotSettings(tasks=tuple(args.zero_shot), limit=args.limit) if args.zero_shot else None,
        latency=LatencySettings(batch_sizes=tuple(args.latency_batch_sizes), new_tokens=tuple(args.new_tokens))
        if args.latency_batch_sizes
        else None,
        data_dir=data_dir,
    )


def measure(args: argparse.Namespace):
    """Loads the model(s) and measures them; returns the results object."""
    from ..evaluation.evaluate import compare_models, evaluate_model

    settings = settings_from_args(args)
    check_output_dir(args)
    model, tokenizer = load_model(args)
    if args.dense_model is None:
        return evaluate_model(model, tokenizer, settings, name=args.model)
    dense, _ = load_model(args, args.dense_model)
    return compare_models(dense, model, tokenizer, settings, dense_name=args.dense_model, pruned_name=args.model)


def run(args: argparse.Namespace) -> int:
    """Writes ``evaluation_results.json`` and ``evaluation_results.md`` into the output folder."""
    from ..constants import RESULTS_MARKDOWN_NAME
    from ..evaluation.markdown import results_markdown
    from ..publishing.saving import save_pruning_records, write_into_directory

    results = measure(args)

    def write(staging) -> None:
        save_pruning_records(staging, results=results)
        (staging / RESULTS_MARKDOWN_NAME).write_text(results_markdown(results) + "\n", encoding="utf-8")

    out = write_into_directory(args.output_dir, write)
    print(results_markdown(results))
    print(f"\nResults written to {out}")
    return 0
