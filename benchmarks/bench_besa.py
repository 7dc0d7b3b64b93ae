"""BESA vs Wanda vs magnitude at 50% unstructured sparsity on SmolLM2-135M-Instruct (CPU, one thread).

Measures, in one run and on the same calibration and evaluation data: WikiText-2 perplexity of the dense model and of
each sparsified model, the wall time of each sparsification, and machine-independent work counts (decoder-block
forwards over calibration sequences, and BESA's optimisation steps, each a block forward + backward).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_besa.py --json benchmarks/results/bench_besa.json

``--json`` writes the settings, one row per method and the ordering into a results file meant to be committed (no
absolute path in it); ``--output-dir`` additionally keeps each method's full sparsity record and BESA's plot.

Defaults: calibration 32 x 256 tokens of C4 (validation documents, seed 0; the paper uses 128 x 2048), BESA row-wise,
Prodigy, one epoch; WikiText-2 test (rows joined with "\\n\\n"), non-overlapping 512-token windows, the first 64 of
them (pass ``--eval-windows 0`` for the whole test set, about 20 minutes per model on one core).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from optimum_depth.architectures import get_decoder_layers  # noqa: E402
from optimum_depth.calibration import prepare_calibration  # noqa: E402
from optimum_depth.data import default_data_dir  # noqa: E402
from optimum_depth.evaluation.perplexity import evaluate_perplexity  # noqa: E402
from optimum_depth.loading import load_model_and_tokenizer  # noqa: E402
from optimum_depth.persistence import write_text_atomically  # noqa: E402
from optimum_depth.sparsity import SparsityConfig, measure_weight_sparsity, sparsify  # noqa: E402

torch.set_num_threads(1)


class BlockForwardCounter:
    """Counts calibration sequences pushed through decoder blocks (one block, one sequence = 1)."""

    def __init__(self, model):
        self.count = 0
        self.handles = [
            block.register_forward_pre_hook(self._hook, with_kwargs=True) for block in get_decoder_layers(model)
        ]

    def _hook(self, _module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self.count += int(hidden.shape[0])

    def remove(self):
        for handle in self.handles:
            handle.remove()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=None, help="Model path (default: SmolLM2-135M-Instruct from the model zoo)."
    )
    parser.add_argument("--methods", default="besa,wanda,magnitude")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--allocation", default="row", choices=("row", "layer"))
    parser.add_argument("--optimizer", default="prodigy", choices=("prodigy", "adam"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-seq-len", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=64, help="0 = the whole WikiText-2 test set.")
    parser.add_argument("--eval-batch-size", type=int, default=4)
    parser.add_argument("--skip-dense", action="store_true", help="Do not evaluate the dense model.")
    parser.add_argument("--output-dir", default=None, help="Where to write results.json and the BESA plot.")
    parser.add_argument("--json", default=None, help="Write settings, rows and ordering to this (committed) file.")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    logging.basicConfig(level=logging.WARNING)
    data_dir = default_data_dir()
    if data_dir is None:
        raise SystemExit("No local data directory found (set $OPTIMUM_DEPTH_DATA_DIR).")
    c4_path = data_dir / "c4" / "c4_validation_2k.jsonl"
    max_windows = args.eval_windows or None
    settings = {
        "model": Path(args.model).name if args.model else "SmolLM2-135M-Instruct (model zoo, fp32)",
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpu": platform.processor() or platform.machine(),
        "sparsity": args.sparsity,
        "calibration": f"{args.num_samples} x {args.seq_len} tokens, {c4_path.relative_to(data_dir)}, seed 0",
        "besa": f"allocation={args.allocation}, optimizer={args.optimizer}, epochs={args.epochs}, batch 1",
        "eval": f"WikiText-2 test, windows of {args.eval_seq_len} tokens, first {max_windows or 'all'}",
    }
    print("Settings:", json.dumps(settings, indent=2))

    model, tokenizer = load_model_and_tokenizer(args.model)
    calibration = prepare_calibration(
        str(c4_path), tokenizer, model=model, num_samples=args.num_samples, seq_len=args.seq_len, seed=0
    )

    def perplexity(m) -> float:
        ppl, _ = evaluate_perplexity(
            m,
            tokenizer,
            ("wikitext2",),
            seq_len=args.eval_seq_len,
            batch_size=args.eval_batch_size,
            max_windows=max_windows,
        )
        return ppl["wikitext2"]

    rows = []
    if not args.skip_dense:
        start = time.perf_counter()
        rows.append(
            {"method": "dense", "ppl": perplexity(model), "sparsify_seconds": 0.0, "sparsify_cpu_seconds": 0.0}
            | {"block_forwards": 0, "steps": 0}
        )
        print(f"dense: PPL {rows[0]['ppl']:.3f} (eval {time.perf_counter() - start:.0f}s)", flush=True)
    del model

    results = {}
    for method in args.methods.split(","):
        model, _ = load_model_and_tokenizer(args.model)
        config = SparsityConfig(
            method=method,
            sparsity=args.sparsity,
            allocation=args.allocation,
            num_samples=args.num_samples,
            seq_len=args.seq_len,
            optimizer=args.optimizer,
            epochs=args.epochs,
        )
        counter = BlockForwardCounter(model)
        start, cpu_start = time.perf_counter(), time.process_time()
        # Magnitude is data-free: it gets no calibration, as in the papers.
        result = sparsify(
            model, config, calibration if method != "magnitude" else None, tokenizer, show_progress=False
        )
        elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
        counter.remove()
        measured = measure_weight_sparsity(model)
        total = sum(sum(b.layer_params.values()) for b in result.blocks)
        zeros = sum(measured[b.block][n] * p for b in result.blocks for n, p in b.layer_params.items()) / total
        results[method] = result
        row = {
            "method": method,
            "ppl": perplexity(model),
            "sparsify_seconds": elapsed,
            "sparsify_cpu_seconds": cpu_elapsed,
            "block_forwards": counter.count,
            "steps": sum(len(b.loss_history) for b in result.blocks),
            "achieved": result.achieved_sparsity,
            "exact_zeros": zeros,
            "mean_block_reconstruction": (
                sum(b.reconstruction for b in result.blocks if b.reconstruction is not None) / len(result.blocks)
                if result.blocks[0].reconstruction is not None
                else None
            ),
        }
        rows.append(row)
        print(
            f"{method}: PPL {row['ppl']:.3f}, sparsify {elapsed:.1f}s wall / {cpu_elapsed:.1f}s CPU, achieved {row['achieved']:.4f} "
            f"(exact zeros {zeros:.4f}), "
            f"block forwards {row['block_forwards']}, steps {row['steps']}",
            flush=True,
        )
        if args.output_dir:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            write_text_atomically(
                Path(args.output_dir) / f"{method}_result.json", json.dumps(result.to_dict(), indent=2) + "\n"
            )
            if method == "besa":
                result.plot(Path(args.output_dir) / "besa_layer_sparsity.png")
        del model

    print(
        "\n| method | WikiText-2 PPL | sparsify wall (s) | sparsify CPU (s) | block forwards | BESA steps "
        "| achieved sparsity | mean block recon. error |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        recon = row.get("mean_block_reconstruction")
        print(
            f"| {row['method']} | {row['ppl']:.2f} | {row['sparsify_seconds']:.1f} | {row['sparsify_cpu_seconds']:.1f} "
            f"| {row['block_forwards']} | "
            f"{row['steps']} | {row.get('achieved', 0.0):.4f} | {'-' if recon is None else f'{recon:.4f}'} |"
        )
    by_method = {row["method"]: row for row in rows}
    summary: dict = {}
    if all(m in by_method for m in ("besa", "wanda", "magnitude")):
        besa, wanda, mag = (by_method[m]["ppl"] for m in ("besa", "wanda", "magnitude"))
        holds = besa < wanda < mag
        summary = {"ordering_besa_lt_wanda_lt_magnitude": holds, "besa_over_wanda_ppl": besa / wanda}
        print(
            f"\nOrdering BESA < Wanda < magnitude: {'HOLDS' if holds else 'DOES NOT HOLD'} ({besa:.2f} / {wanda:.2f} / {mag:.2f})"
        )
        print(
            f"PPL ratio BESA / Wanda: {besa / wanda:.3f}; sparsify time ratio BESA / Wanda: "
            f"{by_method['besa']['sparsify_seconds'] / by_method['wanda']['sparsify_seconds']:.1f}x wall, "
            f"{by_method['besa']['sparsify_cpu_seconds'] / by_method['wanda']['sparsify_cpu_seconds']:.1f}x CPU; "
            f"block-forward ratio {by_method['besa']['block_forwards'] / by_method['wanda']['block_forwards']:.2f}x "
            f"(+ {by_method['besa']['steps']} backward passes)"
        )
    if args.output_dir:
        path = Path(args.output_dir) / "results.json"
        path.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
        print(f"Wrote {path}")
    if args.json:
        public = [Path(a).name if os.path.isabs(a) else a for a in sys.argv[1:]]
        command = " ".join(["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_besa.py", *public])
        record = {"command": command, "settings": settings, "rows": rows, "summary": summary}
        record["wall_seconds"] = time.perf_counter() - started
        write_text_atomically(args.json, json.dumps(record, indent=1) + "\n")
        print(f"Wrote {args.json}")


if __name__ == "__main__":
    main()
