"""Benchmark of the block-importance criteria and of the cached scoring engine against naive full recompute.

On SmolLM2-135M-Instruct (30 blocks) with 10 x 128 calibration tokens from ``../shared/data/calib``:

* every criterion's wall time, CPU time and peak resident memory, each in its own subprocess;
* for PPL and SLEB, ours (the cached engine with the best-first early exit, the default), ours without the early exit
  (``early_exit=False``: the engine alone, exact values for every candidate) and a naive reference implemented here
  (delete the candidate block(s) from the decoder's layer list and run the whole model, per candidate), in
  mirrored order (A B C C B A) so that all sides see the same machine load: decoder-block forwards (counted with
  forward hooks on the blocks, the same for every side), wall and CPU time, and whether the rankings / selections
  agree. Both criteria target ``--sleb-blocks`` blocks.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scoring.py [--sleb-blocks 8] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

CRITERIA = ["magnitude", "taylor", "block_influence", "angular", "ppl", "sleb"]
NUM_SAMPLES, SEQ_LEN, SEED = 10, 128, 0


# ----------------------------------------------------------------------------------------------- measurements
def resident_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Samples the resident set size every few milliseconds in a thread; ``peak`` is the maximum seen."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


class BlockCounter:
    """Counts decoder-block forwards (one block on one calibration batch) with forward hooks."""

    def __init__(self, blocks):
        self.count = 0
        self._handles = [block.register_forward_hook(self._hook) for block in blocks]

    def _hook(self, module, args, output) -> None:
        self.count += 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


# ------------------------------------------------------------------------------------------ naive references
@contextmanager
def blocks_deleted(model, removed: set[int]):
    """Leaves the blocks ``removed`` out of the decoder for the duration (as deleting them would)."""
    decoder = model.model
    layers, count = decoder.layers, model.config.num_hidden_layers
    decoder.layers = torch.nn.ModuleList([block for i, block in enumerate(layers) if i not in removed])
    model.config.num_hidden_layers = len(decoder.layers)
    try:
        yield
    finally:
        decoder.layers, model.config.num_hidden_layers = layers, count


@torch.no_grad()
def full_model_nll(model, batches) -> float:
    """Mean token NLL of the whole model (embeddings, every block, norm, LM head), batch by batch."""
    total, tokens = 0.0, 0
    for batch in batches:
        count = batch.shape[0] * (batch.shape[1] - 1)
        total += float(model(input_ids=batch, labels=batch, use_cache=False).loss) * count
        tokens += count
    return total / tokens


def naive_ppl(model, batches) -> dict:
    """PPL criterion by full recompute: one whole-model evaluation per candidate block."""
    values = []
    for block in range(model.config.num_hidden_layers):
        with blocks_deleted(model, {block}):
            values.append(math.exp(full_model_nll(model, batches)))
    return {"values": values, "removal_order": None}


def naive_sleb(model, batches, rounds: int) -> dict:
    """SLEB by full recompute: every round, every remaining block is tried by evaluating the whole pruned model."""
    removed: list[int] = []
    for _ in range(rounds):
        losses = {}
        for block in range(model.config.num_hidden_layers):
            if block not in removed:
                with blocks_deleted(model, {*removed, block}):
                    losses[block] = full_model_nll(model, batches)
        removed.append(min(losses, key=lambda b: (losses[b], b)))
    return {"values": None, "removal_order": removed}


# ------------------------------------------------------------------------------------------------------- jobs
def load():
    from optimum_depth.calibration import prepare_calibration
    from optimum_depth.data import default_data_dir
    from optimum_depth.loading import load_model_and_tokenizer

    data_dir = default_data_dir()
    if data_dir is None:
        raise SystemExit("No ../shared/data directory found (set OPTIMUM_DEPTH_DATA_DIR).")
    model, tokenizer = load_model_and_tokenizer()
    calibration = prepare_calibration(
        data_dir / "calib", tokenizer, model=model, num_samples=NUM_SAMPLES, seq_len=SEQ_LEN, seed=SEED
    )
    return model, calibration


def head_over_block_cost(model, calibration, batch_size: int, repeats: int = 5) -> float:
    """CPU time of one final norm + LM head + loss over that of one decoder block, on the same batch (interleaved)."""
    from optimum_depth.blocks.engine import BlockwiseEngine

    engine = BlockwiseEngine(model, calibration, batch_size=batch_size)
    batch = engine.capture_batch(engine.batches[0])
    middle = engine.num_blocks // 2
    block_time = head_time = 0.0
    with torch.no_grad():
        for _ in range(repeats):
            start = time.process_time()
            engine.run_block(middle, batch.hidden[middle], batch.calls[middle])
            block_time += time.process_time() - start
            start = time.process_time()
            engine.sequence_nll(batch.hidden[-1], batch.input_ids)
            head_time += time.process_time() - start
    return head_time / block_time


METHODS = {
    "ours": "engine + best-first early exit (default)",
    "ours_full": "engine only (early_exit=False)",
    "naive": "naive full recompute",
}


def run_job(method: str, criterion: str, sleb_blocks: int, batch_size: int) -> dict:
    """Runs one measurement in this process and returns its figures."""
    from optimum_depth import DepthPruningConfig
    from optimum_depth.criteria.scoring import score_blocks

    model, calibration = load()
    config = DepthPruningConfig(
        criterion=criterion,
        num_layers_to_remove=sleb_blocks,
        num_samples=NUM_SAMPLES,
        seq_len=SEQ_LEN,
        seed=SEED,
        batch_size=batch_size,
        protect_first=0,
        protect_last=0,
        early_exit=method != "ours_full",
    )
    with torch.no_grad():  # page in memory-mapped weights so that they count in the baseline, not the criterion
        for param in model.parameters():
            param.sum()
    baseline = resident_bytes()
    counter = BlockCounter(model.model.layers)
    with PeakMemory() as memory:
        wall, cpu = time.perf_counter(), time.process_time()
        if method != "naive":
            scores = score_blocks(model, config, calibration)
            result = {"values": scores.values, "removal_order": scores.removal_order, "extra": scores.extra}
            result["lower_bounds"] = scores.extra.get("lower_bound_candidates", [])
        elif criterion == "ppl":
            result = naive_ppl(model, calibration.batches(batch_size))
        else:
            result = naive_sleb(model, calibration.batches(batch_size), sleb_blocks)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    counter.remove()
    extra = result.pop("extra", {})
    if method == "ours_full" and criterion == "ppl":
        result["head_over_block"] = head_over_block_cost(model, calibration, batch_size)
    num_batches = len(calibration.batches(batch_size))
    if method == "naive":
        evaluations = (
            model.config.num_hidden_layers
            if criterion == "ppl"
            else sum(model.config.num_hidden_layers - r for r in range(sleb_blocks))
        )
        result["head_forwards"] = evaluations * num_batches
    else:
        result["head_forwards"] = extra.get("head_forwards", 0)
    return {
        "method": method,
        "criterion": criterion,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": memory.peak / 2**20,
        "rss_increase_mib": (memory.peak - baseline) / 2**20,
        "block_forwards": counter.count,
        "engine_block_forwards": extra.get("block_forwards"),
        **result,
    }


def spawn(method: str, criterion: str, args) -> dict:
    """Runs a job in a fresh interpreter (isolated peak memory) and parses its JSON line."""
    command = [sys.executable, __file__, "--job", method, criterion]
    command += ["--sleb-blocks", str(args.sleb_blocks), "--batch-size", str(args.batch_size)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    print(
        f"  {method:9s} {criterion:15s} wall {figures['wall_s']:8.1f}s  cpu {figures['cpu_s']:8.1f}s  "
        f"peak RSS {figures['peak_rss_mib']:7.0f} MiB (+{figures['rss_increase_mib']:.0f})  "
        f"block forwards {figures['block_forwards']}",
        flush=True,
    )
    return figures


def rank(values: list[float]) -> list[int]:
    return sorted(range(len(values)), key=lambda i: (values[i], i))


def compare_ppl(first: dict, reference: dict, wanted: int) -> tuple[bool, str]:
    """Full ranking (exact values) or, with lower bounds, the selected blocks, their order and the bounds' validity."""
    lower = set(first.get("lower_bounds", []))
    exact = [i for i in range(len(first["values"])) if i not in lower]
    worst = max(abs(first["values"][i] - reference["values"][i]) / reference["values"][i] for i in exact)
    if not lower:
        agree = rank(first["values"]) == rank(reference["values"])
        return agree, f"full ranking identical: {agree}; max relative PPL difference {worst:.2e}"
    selected, expected = rank(first["values"])[:wanted], rank(reference["values"])[:wanted]
    sound = all(first["values"][i] <= reference["values"][i] * (1 + 1e-6) for i in lower)
    agree = selected == expected and sound and worst < 1e-4
    return agree, (
        f"the {wanted} lowest blocks and their order identical: {selected == expected} ({selected}); "
        f"{len(lower)} blocks ruled out early, every bound <= the naive value: {sound}; max relative PPL "
        f"difference of the exact values {worst:.2e}"
    )


def compare(criterion: str, ours: list[dict], naive: list[dict], wanted: int) -> dict:
    """Ratios of means and agreement of the results."""

    def mean(runs, key):
        return sum(r[key] for r in runs) / len(runs)

    first, reference = ours[0], naive[0]
    if criterion == "ppl":
        agree, detail = compare_ppl(first, reference, wanted)
    else:
        agree = first["removal_order"] == reference["removal_order"]
        detail = (
            f"removal order identical: {agree} (ours {first['removal_order']}, naive {reference['removal_order']})"
        )
    return {
        "criterion": criterion,
        "block_forwards": (first["block_forwards"], reference["block_forwards"]),
        "head_forwards": (first["head_forwards"], reference["head_forwards"]),
        "block_forward_ratio": first["block_forwards"] / reference["block_forwards"],
        "wall_ratio": mean(ours, "wall_s") / mean(naive, "wall_s"),
        "cpu_ratio": mean(ours, "cpu_s") / mean(naive, "cpu_s"),
        "agree": agree,
        "detail": detail,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sleb-blocks", type=int, default=8, help="blocks PPL and SLEB remove (8 = 25%% of 30)")
    parser.add_argument("--batch-size", type=int, default=1, help="calibration sequences per forward (both sides)")
    parser.add_argument("--repeats", type=int, default=2, help="ABBA repetitions of the PPL comparison")
    parser.add_argument("--sleb-repeats", type=int, default=1, help="repetitions of the SLEB comparison (0: skip)")
    parser.add_argument("--json", help="also write all figures to this file")
    parser.add_argument("--job", nargs=2, metavar=("METHOD", "CRITERION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(run_job(args.job[0], args.job[1], args.sleb_blocks, args.batch_size)))
        return

    import transformers

    print("Settings:")
    print(f"  model SmolLM2-135M-Instruct (30 blocks, fp32), calibration {NUM_SAMPLES} x {SEQ_LEN} tokens from")
    print(
        f"  ../shared/data/calib, seed {SEED}, batch_size {args.batch_size}, no protection, SLEB removes "
        f"{args.sleb_blocks} blocks"
    )
    print(
        f"  OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch.set_num_threads(1), torch {torch.__version__}, "
        f"transformers {transformers.__version__}, python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print("Jobs (each in a fresh process):")
    runs: dict[tuple[str, str], list[dict]] = {}
    schedule = [("ours", c) for c in CRITERIA if c not in ("ppl", "sleb")]
    ppl = [("ours", "ppl"), ("ours_full", "ppl"), ("naive", "ppl")]
    for _ in range(args.repeats):
        schedule += ppl + ppl[::-1]
    for repeat in range(args.sleb_repeats):
        sleb = [("ours", "sleb"), ("ours_full", "sleb"), ("naive", "sleb")]
        schedule += sleb if repeat % 2 == 0 else sleb[::-1]
    for method, criterion in schedule:
        runs.setdefault((method, criterion), []).append(spawn(method, criterion, args))

    print("\nPer criterion (ours; mean over runs):")
    print(f"  {'criterion':15s} {'wall s':>8s} {'cpu s':>8s} {'peak RSS MiB':>13s} {'block fwd':>10s}")
    for criterion in CRITERIA:
        done = runs.get(("ours", criterion), [])
        if not done:
            continue
        wall = sum(r["wall_s"] for r in done) / len(done)
        cpu = sum(r["cpu_s"] for r in done) / len(done)
        peak = max(r["peak_rss_mib"] for r in done)
        print(f"  {criterion:15s} {wall:8.1f} {cpu:8.1f} {peak:13.0f} {done[0]['block_forwards']:10d}")

    print("\nEngine vs naive full recompute (target: <= 0.55x block forwards, <= 0.6x wall time, same ranking):")
    comparisons = []
    for criterion in ("ppl", "sleb"):
        for method in ("ours", "ours_full"):
            if ("naive", criterion) not in runs or (method, criterion) not in runs:
                continue
            result = compare(criterion, runs[(method, criterion)], runs[("naive", criterion)], args.sleb_blocks)
            result["method"] = method
            comparisons.append(result)
            ours_count, naive_count = result["block_forwards"]
            print(
                f"  {criterion:5s} {METHODS[method]}: block forwards {ours_count} vs {naive_count} = "
                f"{result['block_forward_ratio']:.3f}x; wall {result['wall_ratio']:.3f}x; cpu {result['cpu_ratio']:.3f}x; "
                f"{result['detail']}"
            )
    ppl_runs = runs.get(("ours_full", "ppl")) or [{"head_over_block": float("nan")}]
    ratio = sum(r["head_over_block"] for r in ppl_runs) / len(ppl_runs)
    print(
        f"\nOne LM head + loss costs {ratio:.1f} decoder blocks (CPU time, same batch). Every candidate needs one on"
    )
    print(
        "both sides unless the early exit skips it, so the expected wall ratio is (our blocks + h * our heads) / "
        "(naive blocks + h * naive heads):"
    )
    for result in comparisons:
        (ours_blocks, naive_blocks), (ours_heads, naive_heads) = result["block_forwards"], result["head_forwards"]
        floor = (ours_blocks + ratio * ours_heads) / (naive_blocks + ratio * naive_heads)
        result["predicted_cost_ratio"] = floor
        print(
            f"  {result['criterion']:5s} {result['method']:9s} heads {ours_heads} vs {naive_heads}; predicted cost "
            f"ratio {floor:.3f}x"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"runs": [r for rs in runs.values() for r in rs], "comparisons": comparisons}, handle, indent=1)


if __name__ == "__main__":
    main()
