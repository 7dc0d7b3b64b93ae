"""Import time of ``optimum_depth`` against transformers' own, measured side by side in fresh processes.

Each round starts two fresh interpreters one after the other (their order alternates between rounds): one runs
``import optimum_depth``, the reference runs ``import transformers; from transformers import AutoModelForCausalLM``.
The script prints both medians and their ratio (target: at most 1.3), and checks that ``import optimum_depth`` loads
none of the heavy optional stacks (peft, accelerate, bitsandbytes, lm-eval, matplotlib, datasets, the Trainer) and
prints no warning.

    OMP_NUM_THREADS=1 python benchmarks/bench_import.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

OURS = "import optimum_depth"
REFERENCE = "import transformers; from transformers import AutoModelForCausalLM"
HEAVY = ("peft", "accelerate", "bitsandbytes", "lm_eval", "matplotlib", "datasets", "transformers.trainer")
PROBE = f"import sys, json; import optimum_depth; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"


def timed(code: str) -> float:
    """Wall time of a fresh interpreter running ``code``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    timed(OURS), timed(REFERENCE)  # warm the filesystem cache for both
    ours, reference = [], []
    for round_index in range(args.rounds):
        pair = [(OURS, ours), (REFERENCE, reference)]
        for code, times in pair if round_index % 2 == 0 else reversed(pair):
            times.append(timed(code))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    probe = subprocess.run([sys.executable, "-c", PROBE], check=True, env=env, capture_output=True, text=True)
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])
    result = {
        "rounds": args.rounds,
        "optimum_depth_median_s": statistics.median(ours),
        "reference_median_s": statistics.median(reference),
        "ratio": statistics.median(ours) / statistics.median(reference),
        "paired_ratio_median": statistics.median(o / r for o, r in zip(ours, reference, strict=True)),
        "heavy_modules_loaded": loaded,
        "stderr_of_import": probe.stderr.strip(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"import optimum_depth: {result['optimum_depth_median_s']:.2f} s, reference: {result['reference_median_s']:.2f}"
        f" s, ratio {result['ratio']:.3f} (paired {result['paired_ratio_median']:.3f}; target <= 1.3); heavy modules "
        f"loaded: {loaded or 'none'}; warnings: {'none' if not probe.stderr.strip() else probe.stderr.strip()}"
    )


if __name__ == "__main__":
    main()
