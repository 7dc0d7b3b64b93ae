"""FinerCut on SmolLM2-135M-Instruct: our sublayer engine vs a naive greedy reference, side by side in one run.

Both sides run the same greedy FinerCut search (remove 25% of the 60 sublayers = 15) on the same calibration data:

* naive: every candidate of every step is scored by a full model forward on each calibration sequence (the removed
  sublayers' outputs are zeroed by hooks, which equals deleting them), then the LM head and the distance;
* ours: :class:`optimum_depth.sublayers.engine.SublayerEngine` (cached dense logits, cached hidden states up to the
  first changed sublayer, only the suffix runs) with and without the exact early-exit bound of
  :class:`optimum_depth.sublayers.search.GreedySearch`.

The steps are interleaved (naive step t, ours step t, ours-without-bound step t) so that machine load hits all
sides alike. Printed: wall time, forward-equivalents (parameter-weighted: one = every sublayer plus the LM head on
one calibration sequence; the naive side uses exactly one per candidate and sequence), sublayer runs and whether the
selections agree. The naive side is expensive: ``--naive-steps`` limits it to a prefix of the steps (ours continues
alone to ``--steps`` and its totals are printed separately).

Run (single-threaded; the figures in docs/finercut.md):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_finercut.py --samples 10 --seq-len 32 --steps 15 --naive-steps 15 \
        --suffix-steps 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_finercut.py --samples 10 --seq-len 256 --steps 1 --naive-steps 1
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from contextlib import contextmanager

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from optimum_depth import prepare_calibration  # noqa: E402
from optimum_depth.algorithms.output_distances import get_distance  # noqa: E402
from optimum_depth.data import default_data_dir  # noqa: E402
from optimum_depth.loading import load_model_and_tokenizer  # noqa: E402
from optimum_depth.sublayers.candidates import ATTENTION  # noqa: E402
from optimum_depth.sublayers.engine import SublayerEngine  # noqa: E402
from optimum_depth.sublayers.search import GreedySearch  # noqa: E402


@contextmanager
def sublayers_zeroed(model, engine: SublayerEngine, removed: set[int]):
    """Zeroes the outputs of the removed sublayers (the residual passes through unchanged)."""
    handles = []
    for position in removed:
        sublayer = engine.sublayers[position]
        block = model.model.layers[sublayer.block]
        if sublayer.kind == ATTENTION:
            handle = block.self_attn.register_forward_hook(
                lambda m, a, k, out: (torch.zeros_like(out[0]), None), with_kwargs=True
            )
        else:
            handle = block.mlp.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
        handles.append(handle)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class NaiveGreedy:
    """The reference: one full forward per candidate and calibration sequence."""

    def __init__(self, model, engine: SublayerEngine, batches: list[torch.Tensor], distance):
        self.model, self.engine, self.batches, self.distance = model, engine, batches, distance
        self.removed: set[int] = set()
        self.order: list[int] = []
        self.forwards = 0
        with torch.no_grad():
            self.references = [distance.reference(self._logits(ids)) for ids in batches]

    def _logits(self, ids: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.model(ids).logits

    def candidates(self) -> list[int]:
        attention = [i for i, s in enumerate(self.engine.sublayers) if s.kind == ATTENTION and i not in self.removed]
        return [c for c in range(self.engine.num_sublayers) if c not in self.removed and attention != [c]]

    @torch.no_grad()
    def step(self) -> int:
        totals = {}
        for index, candidate in enumerate(self.candidates()):
            if index % 20 == 0:
                print(f"    naive step {len(self.order) + 1}: candidate {index}", flush=True)
            with sublayers_zeroed(self.model, self.engine, self.removed | {candidate}):
                totals[candidate] = sum(
                    self.distance.batch_sum(ref, self._logits(ids))
                    for ids, ref in zip(self.batches, self.references, strict=True)
                )
        best = min(totals, key=lambda c: (totals[c], c))
        self.removed.add(best)
        self.order.append(best)
        return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10, help="calibration sequences (paper: 10)")
    parser.add_argument(
        "--seq-len", type=int, default=32, help="tokens per sequence (paper: 256; 32 keeps the run short)"
    )
    parser.add_argument("--steps", type=int, default=15, help="removals of our search (25%% of 60 = 15)")
    parser.add_argument(
        "--naive-steps", type=int, default=2, help="removals the naive reference runs (a prefix of --steps)"
    )
    parser.add_argument(
        "--suffix-steps", type=int, default=None, help="removals of the suffix-only variant (default: --naive-steps)"
    )
    parser.add_argument("--distance", default="js")
    args = parser.parse_args()
    if args.suffix_steps is None:
        args.suffix_steps = args.naive_steps
    if not 0 < args.suffix_steps <= args.naive_steps <= args.steps:
        parser.error("need 0 < --suffix-steps <= --naive-steps <= --steps")
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()

    model, tokenizer = load_model_and_tokenizer()
    model.eval()
    data_dir = default_data_dir()
    if data_dir is None:
        raise SystemExit("No data directory: set OPTIMUM_DEPTH_DATA_DIR to the shared data folder.")
    source = data_dir / "calib" / "wiki_demo_llamafactory.txt"
    calibration = prepare_calibration(source, tokenizer, model=model, num_samples=args.samples, seq_len=args.seq_len)
    distance = get_distance(args.distance)

    print("== FinerCut benchmark: ours (suffix engine) vs naive greedy (full forward per candidate)")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"{platform.processor() or platform.machine()}, cpu_count {os.cpu_count()}"
    )
    print(
        f"model SmolLM2-135M-Instruct ({model.config.num_hidden_layers} blocks, {model.config._attn_implementation} "
        f"attention, {model.dtype}); calibration {args.samples} x {args.seq_len} tokens from {source.name}, seed 0; "
        f"distance {args.distance}; batch size 1"
    )
    print(f"steps: ours {args.steps}, naive {args.naive_steps} (prefix); steps interleaved naive/ours/ours-no-bound")

    timings = {"naive": 0.0, "ours": 0.0, "suffix": 0.0}
    start = time.perf_counter()
    naive = NaiveGreedy(model, SublayerEngine(model, calibration, distance), calibration.batches(1), distance)
    timings["naive"] += time.perf_counter() - start
    engines, searches = {}, {}
    for name, bound in (("ours", True), ("suffix", False)):
        start = time.perf_counter()
        engines[name] = SublayerEngine(model, calibration, distance)
        engines[name].capture()
        searches[name] = GreedySearch(engines[name], set(), use_bound=bound)
        timings[name] += time.perf_counter() - start
    prefix_work = {}
    for step in range(args.steps):
        if step < args.naive_steps:
            start = time.perf_counter()
            naive.step()
            timings["naive"] += time.perf_counter() - start
        for name in ("ours", "suffix"):
            if name == "suffix" and step >= args.suffix_steps:
                continue
            start = time.perf_counter()
            searches[name].step()
            timings[name] += time.perf_counter() - start
        if step == args.suffix_steps - 1:
            suffix_work = {n: (e.work, e.sublayer_runs, e.head_runs, timings[n]) for n, e in engines.items()}
            suffix_naive = (naive.forwards, timings["naive"])
        if step == args.naive_steps - 1:
            prefix_work = {n: (e.work, e.sublayer_runs, e.head_runs, timings[n]) for n, e in engines.items()}
        done = searches["ours"].order[-1]
        print(
            f"  step {step + 1:2d}: ours removed {engines['ours'].sublayers[done].name:13s} "
            f"(js {searches['ours'].step_distances[-1]:.5f})"
            + (
                f", naive removed {engines['ours'].sublayers[naive.order[-1]].name}" if step < args.naive_steps else ""
            ),
            flush=True,
        )

    per_forward = engines["ours"].forward_work
    naive_fe = naive.forwards
    print(f"\n-- first {args.naive_steps} steps, side by side")
    print(
        f"{'method':28s} {'wall s':>9s} {'fwd-equiv':>10s} {'sublayer runs':>14s} {'head runs':>10s} {'x naive (time)':>15s} {'x naive (fwd)':>14s}"
    )
    print(
        f"{'naive (full forwards)':28s} {timings['naive']:9.1f} {naive_fe:10.1f} {naive_fe * engines['ours'].num_sublayers:14d} {naive_fe:10d} {1.0:15.3f} {1.0:14.3f}"
    )
    work, runs, heads, wall = prefix_work["ours"]
    fe = work / per_forward
    print(
        f"{'ours, suffix + bound':28s} {wall:9.1f} {fe:10.1f} {runs:14d} {heads:10d} {wall / timings['naive']:15.3f} {fe / naive_fe:14.3f}"
    )
    suffix_naive_fe, suffix_naive_wall = suffix_naive
    if args.suffix_steps != args.naive_steps:
        print(f"-- first {args.suffix_steps} steps: naive {suffix_naive_wall:.1f} s, {suffix_naive_fe} fwd-equiv")
    work, runs, heads, wall = suffix_work["suffix"]
    fe = work / per_forward
    print(
        f"{'ours, suffix only':28s} {wall:9.1f} {fe:10.1f} {runs:14d} {heads:10d} {wall / suffix_naive_wall:15.3f} "
        f"{fe / suffix_naive_fe:14.3f}"
    )
    agree = naive.order == searches["ours"].order[: args.naive_steps]
    agree = agree and searches["suffix"].order == naive.order[: args.suffix_steps]
    print(f"selections agree: {agree} (naive {[engines['ours'].sublayers[c].name for c in naive.order]})")
    ours = engines["ours"]
    print(
        f"\n-- ours alone, all {args.steps} steps: {timings['ours']:.1f} s, {ours.work / per_forward:.1f} forward-equivalents, "
        f"{searches['ours'].evaluations} evaluations ({searches['ours'].cut_short} cut short by the bound)"
    )
    total = engines["ours"].num_sublayers
    naive_estimate = sum((total - t) * args.samples for t in range(args.steps)) + args.samples
    print(
        f"   a naive run of all {args.steps} steps needs {naive_estimate} forwards (counted, not run): "
        f"ours = {ours.work / per_forward / naive_estimate:.3f} x naive in forward-equivalents"
    )
    print("   removal order:", [ours.sublayers[c].name for c in searches["ours"].order])


if __name__ == "__main__":
    main()
