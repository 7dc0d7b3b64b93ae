"""FSDP2 with 2 processes vs one process, on the same global batch: the figures of docs/distributed.md.

Runs the scenarios of ``tests/training/fsdp_recovery_script.py`` (the ones ``tests/training/test_fsdp_distributed.py``
asserts on) once under ``accelerate launch --config_file examples/accelerate/fsdp2.yaml --num_processes 2`` (gloo on
CPU) and once in this process, then records for each the largest loss difference over the optimizer steps and the
largest logit difference between the two merged checkpoints; and runs the scenario in which rank 0 fails while
scoring, recording how far apart the two ranks failed (against the 60 s process-group timeout).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fsdp_equivalence.py --json benchmarks/results/fsdp_equivalence.json

About 5 minutes on 2 cores (each launch pays ~50 s of imports per process).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "training")]
import fsdp_recovery_script as scenarios  # noqa: E402

from tiny_models import make_tiny_model, random_ids  # noqa: E402

EQUIVALENCE = ["lora_prune", "full_kd", "lora_topk", "sublayer_full"]


def launch(out: Path, logits: Path, *names: str) -> subprocess.CompletedProcess:
    """The scenario script's own 2-process FSDP2 launch (the same command as its test)."""
    return scenarios.launch(out, logits, *names, timeout=1800)


def merged_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    import optimum_depth.modeling  # noqa: F401  (registers the pruned classes of the sublayer checkpoint)

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(ids).logits


def equivalence(work: Path, logits: Path) -> dict:
    """Largest loss and merged-logit differences, 2 FSDP2 processes vs one process, per scenario."""
    result = launch(work / "fsdp", logits, *EQUIVALENCE)
    if result.returncode != 0:
        raise SystemExit(f"The FSDP2 launch failed:\n{result.stderr[-6000:]}")
    ids = random_ids(2, 12, seed=9)
    measured = {}
    for name in EQUIVALENCE:
        rank0, rank1 = (json.loads((work / "fsdp" / f"{name}.rank{r}.json").read_text()) for r in (0, 1))
        reference = scenarios.run_scenario(name, work / "single" / name, logits)
        loss = max(abs(a - b) for a, b in zip(rank0["losses"], reference["losses"], strict=True))
        gap = merged_logits(Path(rank0["merged"]), ids) - merged_logits(Path(reference["merged"]), ids)
        measured[name] = {
            "steps": len(rank0["losses"]),
            "ranks_agree_on_losses": rank0["losses"] == rank1["losses"],
            "max_loss_difference": loss,
            "max_merged_logit_difference": float(gap.abs().max()),
            "world_size": rank0["world_size"],
            "distributed_type": rank0["distributed_type"],
        }
        print(f"{name}: loss {loss:.2e}, logits {measured[name]['max_merged_logit_difference']:.2e}", flush=True)
    return measured


def rank0_failure(work: Path, logits: Path) -> dict:
    """Rank 0 fails while scoring: when each rank raised, and whether anything was written."""
    started = time.time()
    result = launch(work / "fail", logits, "fail_rank0")
    failures = {r: float(t) for r, t in re.findall(r"RANK (\d) FAILED at ([\d.]+): ", result.stderr)}
    written = [p for p in (work / "fail").rglob("*") if p.is_file()] if (work / "fail").exists() else []
    return {
        "exit_code": result.returncode,
        "ranks_failed": sorted(failures),
        "seconds_between_rank_failures": abs(failures["0"] - failures["1"]) if len(failures) == 2 else None,
        "process_group_timeout_s": 60,
        "files_written": len(written),
        "launch_seconds": time.time() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="Write the figures to this (committed) file.")
    args = parser.parse_args()
    import accelerate
    import transformers

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-fsdp-") as tmp:
        work = Path(tmp)
        from optimum_depth.training import precompute_teacher_logits

        logits = precompute_teacher_logits(make_tiny_model("llama"), scenarios.training_data(), work / "logits", k=16)
        measured = equivalence(work, logits)
        failure = rank0_failure(work, logits)
    record = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fsdp_equivalence.py"
        + (f" --json {args.json}" if args.json and not os.path.isabs(args.json) else ""),
        "date": datetime.date.today().isoformat(),
        "setup": f"2 processes x {scenarios.GLOBAL_BATCH // 2} rows vs 1 process x {scenarios.GLOBAL_BATCH} rows, "
        f"{scenarios.STEPS} optimizer steps, tiny Llama, float32, gloo on CPU, examples/accelerate/fsdp2.yaml",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
        },
        "scenarios": measured,
        "rank0_failure": failure,
    }
    print(json.dumps(record, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
