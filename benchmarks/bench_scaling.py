"""Sizing guide (docs/scaling.md): what each stage of depth pruning costs for Llama-3-8B, Qwen2.5-32B and
Llama-3-70B, in peak memory per device, FLOPs, and hours on 1, 8 and 64 GPUs.

Two parts, both written to the JSON output:

1. **Measured here** (CPU, float32, one thread, median CPU time of repeated runs): the cost of one decoder block of two small Llama configs, forward,
   forward + backward with trainable weights (full training) and with frozen weights (LoRA: gradients for the
   activations only), turned into achieved FLOP/s with the FLOP model below. Two sizes check that the FLOP model
   predicts the time (the same FLOP/s at both sizes); the measured backward/forward ratios are the training
   multipliers used in part 2. The scoring engine's forward counts per criterion are counted with hooks on tiny
   models and checked against the closed forms used in part 2.
2. **Derived** for the three architectures (configs inline, nothing downloaded): FLOP counts from the architecture
   times the measured multipliers, divided by an assumed GPU throughput (``ASSUMPTIONS``: H100 SXM 80 GB, bf16 dense
   peak, model FLOP utilisation per stage), and memory from bytes per parameter and activation sizes. Every
   assumption is printed and stored.

Usage (from the repository root; ~1 minute)::

    OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py --json benchmarks/results/bench_scaling.json --markdown
    python benchmarks/bench_scaling.py --tables-from benchmarks/results/bench_scaling.json   # the docs' tables again
    python benchmarks/bench_scaling.py --derive-from benchmarks/results/bench_scaling.json \
        --json benchmarks/results/bench_scaling.json --markdown   # same measurements, cost model changed
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling_model import (  # noqa: E402
    ARCHS,
    ASSUMPTIONS,
    Arch,
    block_flops_per_token,
    build_table,
    markdown,
    scoring_forwards,
)

MEASURED_CONFIGS = {  # small Llamas: (hidden, intermediate, heads, kv heads)
    "llama_h256": Arch("llama_h256", hidden=256, intermediate=688, layers=2, heads=4, kv_heads=2, vocab=512),
    "llama_h512": Arch("llama_h512", hidden=512, intermediate=1376, layers=2, heads=8, kv_heads=2, vocab=512),
}
MEASURE_SEQ, MEASURE_BATCH = 256, 2


# ------------------------------------------------------------------------------------------- 1. measurements
def _block_and_call(arch: Arch):
    """A Llama decoder block and the exact arguments the model passes to it (captured from a real forward)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=arch.hidden,
        intermediate_size=arch.intermediate,
        num_hidden_layers=1,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        vocab_size=arch.vocab,
        max_position_embeddings=MEASURE_SEQ,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    block = model.model.layers[0]
    captured: dict = {}

    def hook(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        captured["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(torch.randint(0, arch.vocab, (MEASURE_BATCH, MEASURE_SEQ)), use_cache=False)
    handle.remove()
    return block, captured["hidden"].detach(), captured["kwargs"]


def _median_seconds(fn, repeats: int) -> float:
    """Median CPU time of this process (one thread): robust to other jobs sharing the machine, unlike wall time."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def measure_block(arch: Arch, repeats: int) -> dict:
    """Seconds per token of one block: forward, forward+backward (trainable), forward+backward (frozen weights)."""
    block, hidden, kwargs = _block_and_call(arch)
    tokens = MEASURE_BATCH * MEASURE_SEQ

    def forward():
        with torch.no_grad():
            block(hidden, **kwargs)

    def train_step(trainable: bool):
        block.requires_grad_(trainable)
        block.zero_grad(set_to_none=True)
        x = hidden.clone().requires_grad_(True)
        out = block(x, **kwargs)
        (out[0] if isinstance(out, tuple) else out).float().pow(2).mean().backward()

    fwd = _median_seconds(forward, repeats)
    full = _median_seconds(lambda: train_step(True), repeats)
    frozen = _median_seconds(lambda: train_step(False), repeats)
    flops = block_flops_per_token(arch, MEASURE_SEQ) * tokens
    return {
        "tokens": tokens,
        "forward_s": fwd,
        "forward_backward_full_s": full,
        "forward_backward_frozen_s": frozen,
        "forward_flops": flops,
        "forward_gflops_per_s": flops / fwd / 1e9,
        "full_over_forward": full / fwd,
        "frozen_over_forward": frozen / fwd,
    }


def count_scoring_forwards(num_layers: int, k: int) -> dict:
    """Block / sublayer / head forwards per calibration batch of each criterion (``early_exit=False``), counted."""
    from optimum_depth import DepthPruner, DepthPruningConfig
    from optimum_depth.calibration import CalibrationData

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import make_tiny_model, random_ids

    counted = {}
    for criterion in ("magnitude", "taylor", "block_influence", "angular", "ppl", "sleb", "finercut"):
        model = make_tiny_model("llama", num_hidden_layers=num_layers)
        counts = {"block": 0, "sublayer": 0, "head": 0}

        def counter(key, counts=counts):
            def hook(*args):
                counts[key] += 1

            return hook

        for layer in model.model.layers:
            layer.register_forward_hook(counter("block"))
            layer.self_attn.register_forward_hook(counter("sublayer"))
            layer.mlp.register_forward_hook(counter("sublayer"))
        model.lm_head.register_forward_hook(counter("head"))
        sublayer = criterion == "finercut"
        config = DepthPruningConfig(
            criterion=criterion,
            granularity="sublayer" if sublayer else "block",
            num_layers_to_remove=2 * k if sublayer else k,
            protect_first=0,
            protect_last=0,
            num_samples=2,
            seq_len=8,
            batch_size=2,  # one calibration batch
            early_exit=False,
        )
        DepthPruner(config).score(model, calibration=CalibrationData(random_ids(2, 8)))
        formula = scoring_forwards(criterion, num_layers, 2 * k if sublayer else k)
        measured = {"sublayer_equivalent_blocks": counts["sublayer"] / 2, "head": counts["head"]}
        if not sublayer:
            measured = {"block": counts["block"], "head": counts["head"]}
        key = "sublayer_equivalent_blocks" if sublayer else "block"
        if measured[key] == formula[key] and measured["head"] == formula["head"]:
            check = "exact"
        elif measured[key] <= formula[key] and measured["head"] <= formula["head"]:
            check = "upper bound"
        else:
            check = "MISMATCH"
        counted[criterion] = {"counted": measured, "formula": formula, "check": check}
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="Write everything to this JSON file.")
    parser.add_argument("--markdown", action="store_true", help="Print the docs/scaling.md tables.")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--tables-from", default=None, help="Print the tables of an earlier JSON (no measuring).")
    parser.add_argument(
        "--derive-from",
        default=None,
        help="Keep the measurements of an earlier JSON and derive the assumptions and tables again with the current "
        "cost model (no measuring); written to --json.",
    )
    args = parser.parse_args()
    if args.tables_from:
        print(markdown(json.loads(Path(args.tables_from).read_text())["table"]))
        return
    if args.derive_from:
        result = json.loads(Path(args.derive_from).read_text())
        result.update(assumptions=ASSUMPTIONS, table=build_table(result["multipliers_used"]))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1, default=float) + "\n")
        if args.markdown:
            print(markdown(result["table"]))
        return

    measured = {name: measure_block(arch, args.repeats) for name, arch in MEASURED_CONFIGS.items()}
    multipliers = {
        "full_over_forward": measured["llama_h512"]["full_over_forward"],
        "frozen_over_forward": measured["llama_h512"]["frozen_over_forward"],
    }
    counts = {f"{n}_layers_{k}_removed": count_scoring_forwards(n, k) for n, k in ((8, 2), (10, 3))}
    table = build_table(multipliers)
    result = {
        "machine": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "measured_blocks": {"seq_len": MEASURE_SEQ, "batch": MEASURE_BATCH, "dtype": "float32", **measured},
        "multipliers_used": multipliers,
        "scoring_forward_counts": counts,
        "assumptions": ASSUMPTIONS,
        "architectures": {name: arch.summary() for name, arch in ARCHS.items()},
        "table": table,
    }
    text = json.dumps(result, indent=1, default=float)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(json.dumps({"measured_blocks": result["measured_blocks"], "multipliers_used": multipliers}, indent=1))
    if args.markdown:
        print(markdown(table))


if __name__ == "__main__":
    main()
