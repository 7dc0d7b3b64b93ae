"""Dense vs 25%-depth-pruned SmolLM2-135M-Instruct: latency, WikiText-2 perplexity and 7-task zero-shot accuracy.

Protocol (docs/evaluation.md):
* pruning: ``DepthPruner(DepthPruningConfig(criterion="magnitude", pruning_ratio=0.25))`` (30 -> 22 blocks);
* latency: Shortened LLaMA's, ``generate`` with forced output length, batch 1 and 8, 128 new tokens, warm-up runs,
  median of repeats, dense and pruned interleaved in one process; the ideal speed-up is the parameter ratio.
  Machine-independent counts (model forward calls and decoder-block calls per ``generate``) are printed as well.
  Peak memory: the process RSS sampled during one ``generate``, each model loaded alone in a fresh subprocess
  (from a saved checkpoint), so the other model does not count;
* perplexity: WikiText-2 test, windows of 128 tokens, BOS before the stream (``--ppl-max-windows`` for a subset);
* zero-shot: the seven tasks with lm-eval, first ``--zero-shot-limit`` documents of each.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_evaluation.py --output benchmarks/bench_evaluation_results.json``
(about 2.5 h on a shared 2-core CPU, most of it the full WikiText-2 perplexity; ``--ppl-max-windows 256`` for a subset).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

import transformers  # noqa: E402

from optimum_depth import DepthPruner, DepthPruningConfig, get_decoder_layers  # noqa: E402
from optimum_depth.architectures import count_parameters  # noqa: E402
from optimum_depth.evaluation import (  # noqa: E402
    ComparisonResults,
    EvaluationResults,
    PeakMemoryMonitor,
    ZeroShotSettings,
    evaluate_perplexity,
    evaluate_zero_shot,
    measure_latency,
    results_markdown,
)
from optimum_depth.evaluation.latency import make_prompt_ids, timed_generate  # noqa: E402
from optimum_depth.loading import load_model_and_tokenizer  # noqa: E402
from optimum_depth.persistence import write_text_atomically  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sections", nargs="+", default=["latency", "ppl", "zero_shot"], choices=["latency", "ppl", "zero_shot"]
    )
    parser.add_argument("--pruning-ratio", type=float, default=0.25)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[128])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ppl-seq-len", type=int, default=128)
    parser.add_argument("--ppl-max-windows", type=int, default=None, help="Default: the whole WikiText-2 test set.")
    parser.add_argument("--ppl-batch-size", type=int, default=8)
    parser.add_argument("--zero-shot-limit", type=int, default=50)
    parser.add_argument("--output", default=None, help="JSON file receiving the ComparisonResults.")
    parser.add_argument(
        "--memory-probe", nargs=3, metavar=("MODEL_DIR", "BATCH", "NEW_TOKENS"), help=argparse.SUPPRESS
    )
    return parser.parse_args()


def memory_probe(model_dir: str, batch_size: int, new_tokens: int) -> None:
    """Subprocess entry: load one model alone, one warm-up + one measured ``generate``; prints the peak RSS (MiB)."""
    model, tokenizer = load_model_and_tokenizer(model_dir)
    input_ids = make_prompt_ids(tokenizer, batch_size)
    timed_generate(model, input_ids, new_tokens, tokenizer.pad_token_id)
    with PeakMemoryMonitor("cpu") as monitor:
        timed_generate(model, input_ids, new_tokens, tokenizer.pad_token_id)
    print(json.dumps({"peak_memory_mb": monitor.peak_mb, "method": monitor.method}))


def run_memory_probe(model_dir: Path, batch_size: int, new_tokens: int) -> float | None:
    command = [sys.executable, __file__, "--memory-probe", str(model_dir), str(batch_size), str(new_tokens)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_memory_mb"]


def count_calls(model, tokenizer, batch_size: int, new_tokens: int) -> dict[str, int]:
    """Model forward calls and decoder-block calls during one ``generate`` (machine-independent work)."""
    counts = {"model_forward_calls": 0, "decoder_block_calls": 0}

    def on_model(*_):
        counts["model_forward_calls"] += 1

    def on_block(*_):
        counts["decoder_block_calls"] += 1

    handles = [model.register_forward_pre_hook(on_model)]
    handles += [block.register_forward_pre_hook(on_block) for block in get_decoder_layers(model)]
    try:
        timed_generate(model, make_prompt_ids(tokenizer, batch_size), new_tokens, tokenizer.pad_token_id)
    finally:
        for handle in handles:
            handle.remove()
    return counts


def main() -> None:
    args = parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe[0], int(args.memory_probe[1]), int(args.memory_probe[2]))
        return

    settings = {
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "args": {k: v for k, v in vars(args).items() if k != "memory_probe"},
    }
    print("Settings:", json.dumps(settings, indent=2), flush=True)

    dense, tokenizer = load_model_and_tokenizer()
    pruner = DepthPruner(DepthPruningConfig(criterion="magnitude", pruning_ratio=args.pruning_ratio))
    pruned = pruner.prune(copy.deepcopy(dense))
    name = "SmolLM2-135M-Instruct"
    results = ComparisonResults(
        dense=EvaluationResults(model_name=name, num_parameters=count_parameters(dense)),
        pruned=EvaluationResults(
            model_name=f"{name} (magnitude, -{args.pruning_ratio:.0%} blocks)", num_parameters=count_parameters(pruned)
        ),
        extra={"benchmark_settings": settings, "surviving_layers": pruned.config.surviving_layers},
    )
    print(
        f"blocks: {dense.config.num_hidden_layers} -> {pruned.config.num_hidden_layers}; kept {pruned.config.surviving_layers}"
    )
    print(
        f"parameters: {results.dense.num_parameters:,} -> {results.pruned.num_parameters:,}; ideal speed-up {results.ideal_speedup:.4f}x",
        flush=True,
    )

    if "latency" in args.sections:
        counts = {}
        for batch_size in args.batch_sizes:
            for new_tokens in args.new_tokens:
                key = f"batch{batch_size}_new{new_tokens}"
                counts[key] = {
                    "dense": count_calls(dense, tokenizer, batch_size, new_tokens),
                    "pruned": count_calls(pruned, tokenizer, batch_size, new_tokens),
                }
                block_ratio = (
                    counts[key]["dense"]["decoder_block_calls"] / counts[key]["pruned"]["decoder_block_calls"]
                )
                print(f"{key}: calls {counts[key]} -> decoder-block call ratio {block_ratio:.4f}", flush=True)
        start = time.perf_counter()
        records, latency_settings = measure_latency(
            {"dense": dense, "pruned": pruned},
            tokenizer,
            args.batch_sizes,
            args.new_tokens,
            warmup=args.warmup,
            repeats=args.repeats,
        )
        print(f"latency grid took {time.perf_counter() - start:.0f} s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            dirs = {"dense": Path(tmp) / "dense", "pruned": Path(tmp) / "pruned"}
            for key, model in (("dense", dense), ("pruned", pruned)):
                model.save_pretrained(dirs[key])
                tokenizer.save_pretrained(dirs[key])
            for key in ("dense", "pruned"):
                for record in records[key]:
                    record.peak_memory_mb = run_memory_probe(dirs[key], record.batch_size, record.new_tokens)
        latency_settings["memory"] = "sampled process RSS during one generate, each model alone in a fresh process"
        latency_settings["load_average_after"] = os.getloadavg()
        latency_settings["call_counts"] = counts
        results.dense.latency, results.pruned.latency = records["dense"], records["pruned"]
        results.dense.latency_settings = results.pruned.latency_settings = latency_settings

    if "zero_shot" in args.sections:
        for target, model in ((results.dense, dense), (results.pruned, pruned)):
            start = time.perf_counter()
            target.zero_shot, target.zero_shot_settings = evaluate_zero_shot(
                model, tokenizer, ZeroShotSettings(limit=args.zero_shot_limit, batch_size=8)
            )
            print(f"zero-shot {target.model_name}: {time.perf_counter() - start:.0f} s", flush=True)

    if "ppl" in args.sections:
        for target, model in ((results.dense, dense), (results.pruned, pruned)):
            start = time.perf_counter()
            target.perplexity, target.perplexity_settings = evaluate_perplexity(
                model,
                tokenizer,
                ("wikitext2",),
                seq_len=args.ppl_seq_len,
                batch_size=args.ppl_batch_size,
                max_windows=args.ppl_max_windows,
            )
            print(f"PPL {target.model_name}: {target.perplexity} ({time.perf_counter() - start:.0f} s)", flush=True)

    settings["load_average_at_end"] = os.getloadavg()
    print(results_markdown(results))
    for row in results.speedups():
        print(
            f"batch {row['batch_size']}, {row['new_tokens']} new tokens: speed-up {row['speedup']:.4f}x = "
            f"{row['fraction_of_ideal']:.3f} of ideal {results.ideal_speedup:.4f}x (target >= 0.95); "
            f"paired (median of per-round ratios) {row['paired_speedup']:.4f}x = {row['paired_fraction_of_ideal']:.3f} of ideal"
        )
    if args.output:
        write_text_atomically(args.output, results.to_json_string())
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
