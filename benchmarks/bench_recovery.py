"""WikiText-2 perplexity of SmolLM2-135M-Instruct: dense, pruned by 25% (Taylor+), and after a short LoRA recovery.

Everything runs in one process, one after the other: dense PPL -> Taylor+ scoring and block removal -> pruned PPL ->
LoRA recovery on Alpaca (Shortened LLaMA's adapter settings, shortened to a CPU budget) at each learning rate of
``--learning-rates``, each from the same pruned model -> recovered PPL -> merge, save, reload with plain
``AutoModelForCausalLM.from_pretrained`` and check the reloaded logits. Prints the exact settings, machine-independent
counts (tokens trained on, optimizer steps, windows scored) and wall times, and writes them to ``--json``.

The learning rate is **chosen on validation text** (held-out C4 documents and PTB valid, 64 windows each: the quality
benchmark's protocol, ``benchmarks/quality/protocol.py``), never on WikiText-2 test, which is only reported.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_recovery.py --json benchmarks/results/bench_recovery.json
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from optimum_depth import DepthPruner, DepthPruningConfig  # noqa: E402
from optimum_depth.architectures import count_parameters  # noqa: E402
from optimum_depth.data import default_data_dir  # noqa: E402
from optimum_depth.evaluation.perplexity import evaluate_perplexity  # noqa: E402
from optimum_depth.loading import load_model_and_tokenizer  # noqa: E402
from optimum_depth.training import (  # noqa: E402
    RecoveryConfig,
    build_recovery_dataset,
    build_recovery_trainer,
    save_recovered_model,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.quality.protocol import validation_perplexity, validation_score  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=None, help="Model path (default: SmolLM2-135M-Instruct from the model zoo)."
    )
    parser.add_argument("--pruning-ratio", type=float, default=0.25)
    parser.add_argument("--criterion", default="taylor", help="taylor = Taylor+ (first 4 / last 2 blocks kept).")
    parser.add_argument("--calibration", default="calib/c4_demo_llamafactory.jsonl", help="Relative to the data dir.")
    parser.add_argument("--alpaca", default="alpaca/alpaca_small_antelofski.json", help="Relative to the data dir.")
    parser.add_argument("--ppl-windows", type=int, default=64, help="First N WikiText-2 windows of 128 tokens.")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument(
        "--learning-rates",
        default="1e-3,2e-4",
        help="LoRA learning rates to try, comma-separated; the best on validation text is reported.",
    )
    parser.add_argument("--json", default=None, help="Write settings and results to this JSON file.")
    return parser.parse_args()


def perplexity(model, tokenizer, windows: int) -> tuple[float, float]:
    model.eval()
    start = time.perf_counter()
    ppl, _ = evaluate_perplexity(model, tokenizer, ["wikitext2"], seq_len=128, batch_size=8, max_windows=windows)
    return ppl["wikitext2"], time.perf_counter() - start


def recover(model, data, tokenizer, args, learning_rate: float, tmp: str, dense_validation: dict) -> dict:
    """LoRA recovery of ``model`` at one learning rate; its validation and test perplexity, merged-reload check."""
    recovery = RecoveryConfig(
        method="lora",
        max_steps=args.steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        warmup_steps=0,
    )
    output_dir = os.path.join(tmp, f"lr{learning_rate:g}")
    trainer = build_recovery_trainer(
        model, data, recovery, output_dir=output_dir, tokenizer=tokenizer, logging_steps=5, save_strategy="no"
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    validation = validation_perplexity(trainer.model.eval(), tokenizer)
    recovered_ppl, seconds = perplexity(trainer.model, tokenizer, args.ppl_windows)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    probe = torch.tensor([data[0]["input_ids"][:64].tolist()])
    with torch.no_grad():
        expected = trainer.model.eval()(probe).logits
    path = save_recovered_model(trainer.model, os.path.join(output_dir, "merged"), tokenizer=tokenizer, in_place=True)
    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        gap = (reloaded(probe).logits - expected).abs().max().item()
    result = {
        "learning_rate": learning_rate,
        "recovery": recovery.to_dict(),
        "ppl": recovered_ppl,
        "validation_perplexity": validation,
        "validation_score": validation_score(validation, dense_validation),
        "optimizer_steps": trainer.state.global_step,
        "train_tokens": trainer.state.global_step * args.batch * args.block_size,
        "train_seconds": train_seconds,
        "loss_first_last": [losses[0], losses[-1]] if losses else [],
        "merged_reload_max_logit_gap": gap,
        "merged_blocks": reloaded.config.num_hidden_layers,
    }
    print(
        f"recovered at lr {learning_rate:g}: PPL {recovered_ppl:.2f} ({seconds:.0f}s), validation "
        f"{result['validation_score']:.3f}x dense, trained {train_seconds:.0f}s",
        flush=True,
    )
    return result


def main() -> None:
    args = parse_args()
    learning_rates = [float(value) for value in args.learning_rates.split(",")]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data_dir = default_data_dir()
    if data_dir is None:
        raise SystemExit("No local data directory (../shared/data or $OPTIMUM_DEPTH_DATA_DIR).")
    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(args.model)
    settings = {
        "model": Path(args.model).name if args.model else "SmolLM2-135M-Instruct (fp32)",
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpu": platform.processor() or platform.machine(),
        "criterion": args.criterion,
        "pruning_ratio": args.pruning_ratio,
        "calibration": args.calibration,
        "ppl": f"WikiText-2 test, first {args.ppl_windows} non-overlapping windows of 128 tokens, BOS once",
        "validation": "held-out C4 documents 1900..1999 and PTB valid, 64 windows of 128 tokens each "
        "(benchmarks/quality/protocol.py); the learning rate is chosen on it",
        "recovery": {
            "method": "lora",
            "steps": args.steps,
            "batch": args.batch,
            "learning_rates": learning_rates,
            "data": args.alpaca,
            "block_size": args.block_size,
            "packing": True,
        },
    }
    print("settings:", json.dumps(settings, indent=2), flush=True)
    results: dict = {}

    dense_ppl, seconds = perplexity(model, tokenizer, args.ppl_windows)
    dense_validation = validation_perplexity(model, tokenizer)
    results["dense"] = {
        "ppl": dense_ppl,
        "validation_perplexity": dense_validation,
        "blocks": model.config.num_hidden_layers,
        "params": count_parameters(model),
    }
    print(f"dense: PPL {dense_ppl:.2f} ({seconds:.0f}s)", flush=True)

    config = DepthPruningConfig(
        criterion=args.criterion, pruning_ratio=args.pruning_ratio, num_samples=10, seq_len=128
    )
    pruner = DepthPruner(config)
    start = time.perf_counter()
    pruner.prune(model, calibration=str(data_dir / args.calibration), tokenizer=tokenizer)
    scoring_seconds = time.perf_counter() - start
    pruned_ppl, seconds = perplexity(model, tokenizer, args.ppl_windows)
    pruned_validation = validation_perplexity(model, tokenizer)
    results["pruned"] = {
        "ppl": pruned_ppl,
        "validation_perplexity": pruned_validation,
        "validation_score": validation_score(pruned_validation, dense_validation),
        "blocks": model.config.num_hidden_layers,
        "params": count_parameters(model),
        "removed": list(pruner.last_plan.removed_blocks) if pruner.last_plan else [],
        "scoring_seconds": scoring_seconds,
    }
    print(f"pruned: PPL {pruned_ppl:.2f} ({seconds:.0f}s), removed {results['pruned']['removed']}", flush=True)

    data = build_recovery_dataset(str(data_dir / args.alpaca), tokenizer, block_size=args.block_size)
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        runs = [
            recover(copy.deepcopy(model), data, tokenizer, args, rate, tmp, dense_validation)
            for rate in learning_rates
        ]
    chosen = min(runs, key=lambda run: run["validation_score"])
    results["recovered_runs"] = runs
    results["recovered"] = chosen
    results["chosen_learning_rate"] = {
        "value": chosen["learning_rate"],
        "chosen_on": "validation_score (geometric mean of the validation perplexity ratios to dense)",
        "validation_scores": {f"{run['learning_rate']:g}": run["validation_score"] for run in runs},
    }
    dense, pruned, recovered = (results[k]["ppl"] for k in ("dense", "pruned", "recovered"))
    results["ratios"] = {
        "pruned_over_dense": pruned / dense,
        "recovered_over_dense": recovered / dense,
        "recovered_over_pruned": recovered / pruned,
        "params_kept": results["pruned"]["params"] / results["dense"]["params"],
    }
    results["wall_seconds"] = time.perf_counter() - started
    print("results:", json.dumps(results, indent=2))
    if args.json:
        public = [Path(a).name if os.path.isabs(a) else a for a in sys.argv[1:]]
        command = " ".join(["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_recovery.py", *public])
        payload = {"command": command, "settings": settings, "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
