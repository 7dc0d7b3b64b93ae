"""What a user pays on first import, against transformers' own, measured side by side in fresh processes.

Two cases, each against its plain-transformers reference (target: ratio of medians at most 1.3):

* ``names``: ``from optimum_depth import DepthPruner, DepthPruningConfig, save_pruned_model`` and building a
  ``DepthPruner``, against ``import transformers; from transformers import AutoModelForCausalLM``;
* ``load``: ``import optimum_depth`` then ``AutoModelForCausalLM.from_pretrained`` of a sublayer-pruned checkpoint
  (SmolLM2-135M's shape with random weights and 8 attention sublayers removed, block 0's among them), against
  ``from_pretrained`` of the same checkpoint's native (unpruned) counterpart with plain transformers.

Each round starts one fresh interpreter per side; their order alternates between rounds, and both sides of a case
run back to back so that machine load hits both. The script prints every time, the medians, the ratio of medians
and the median of the per-round ratios, checks that the ``names`` import loads none of the heavy stacks (peft,
accelerate, bitsandbytes, lm-eval, matplotlib, datasets, the Trainer, any family's modeling code) and prints no
warning, and writes everything as JSON.

    OMP_NUM_THREADS=1 python benchmarks/bench_import.py --rounds 7 --json benchmarks/results/bench_import.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMES = (
    "from optimum_depth import DepthPruner, DepthPruningConfig, save_pruned_model; "
    "DepthPruner(DepthPruningConfig(criterion='block_influence', pruning_ratio=0.2))"
)
NAMES_REFERENCE = "import transformers; from transformers import AutoModelForCausalLM"
LOAD = "import sys, optimum_depth; from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained(sys.argv[1])"
LOAD_REFERENCE = (
    "import sys; from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained(sys.argv[1])"
)
HEAVY = ("peft", "accelerate", "bitsandbytes", "lm_eval", "matplotlib", "datasets", "transformers.trainer")
PROBE = (
    "import sys, json; "
    + NAMES
    + f"; print(json.dumps([m for m in sys.modules if m in {HEAVY!r} or (m.startswith('transformers.models.') "
    "and '.modeling_' in m and '.auto.' not in m)]))"
)


def timed(code: str, *args: str) -> float:
    """Wall time of a fresh interpreter running ``code`` (stdin closed: a prompt fails instead of waiting)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, *args], check=True, env=env, capture_output=True, stdin=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def make_checkpoints(folder: Path) -> tuple[str, str]:
    """A sublayer-pruned SmolLM2-shaped checkpoint and its native counterpart (random weights, same files)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from optimum_depth import remove_sublayers

    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1e5},
    )  # fmt: skip
    torch.manual_seed(0)
    native = AutoModelForCausalLM.from_config(config)
    native.save_pretrained(folder / "native")
    pruned = remove_sublayers(native, attention=[0, 4, 8, 12, 16, 20, 24, 28])
    pruned.save_pretrained(folder / "pruned")
    return str(folder / "pruned"), str(folder / "native")


def measure(rounds: int, ours: tuple[str, ...], reference: tuple[str, ...]) -> dict:
    """Alternating fresh-process timings of two commands (after one warm-up run each)."""
    timed(*ours), timed(*reference)
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    for round_index in range(rounds):
        pair = [("ours", ours), ("reference", reference)]
        for name, command in pair if round_index % 2 == 0 else reversed(pair):
            times[name].append(timed(*command))
    return {
        "ours_s": times["ours"],
        "reference_s": times["reference"],
        "ours_median_s": statistics.median(times["ours"]),
        "reference_median_s": statistics.median(times["reference"]),
        "ratio": statistics.median(times["ours"]) / statistics.median(times["reference"]),
        "paired_ratio_median": statistics.median(
            o / r for o, r in zip(times["ours"], times["reference"], strict=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    probe = subprocess.run([sys.executable, "-c", PROBE], check=True, env=env, capture_output=True, text=True)
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory(prefix="bench-import-") as folder:
        pruned, native = make_checkpoints(Path(folder))
        result = {
            "command": "OMP_NUM_THREADS=1 python benchmarks/bench_import.py --rounds " + str(args.rounds),
            "names": {
                "ours": NAMES,
                "reference": NAMES_REFERENCE,
                **measure(args.rounds, (NAMES,), (NAMES_REFERENCE,)),
            },
            "load": {
                "ours": LOAD.replace("sys.argv[1]", "<sublayer-pruned checkpoint>"),
                "reference": LOAD_REFERENCE.replace("sys.argv[1]", "<its native counterpart>"),
                **measure(args.rounds, (LOAD, pruned), (LOAD_REFERENCE, native)),
            },
            "heavy_modules_loaded_by_names": loaded,
            "stderr_of_names": probe.stderr.strip(),
            "load_average": os.getloadavg(),
            "python": sys.version.split()[0],
        }
    print(json.dumps(result, indent=2))
    for case in ("names", "load"):
        r = result[case]
        print(
            f"{case}: ours {r['ours_median_s']:.2f} s vs reference {r['reference_median_s']:.2f} s: ratio "
            f"{r['ratio']:.3f} (paired {r['paired_ratio_median']:.3f}; target <= 1.3)"
        )
    print(f"heavy modules loaded by the names: {loaded or 'none'}; warnings: {probe.stderr.strip() or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
