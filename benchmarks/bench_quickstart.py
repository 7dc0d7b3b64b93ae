"""Runs ``optimum-depth quickstart`` as a user would and records what the README quotes: wall time, CPU time, the
perplexities and the latency (median, spread, cautions), into ``benchmarks/results/quickstart/<name>.json``.

The quickstart runs in a child process, exactly the user's command (``optimum-depth quickstart --output-dir ...``
plus any options given after ``--``), with one thread and the Hub offline; its outputs go to a temporary folder that
is deleted afterwards (``--keep`` keeps it). Wall time is the child's, from start to exit (imports, model loading,
scoring, compensation, evaluation, writing); CPU time is the child's user + system time. The recipe that actually
ran (criterion, compensation, removed blocks) is read back from the files the quickstart wrote, so re-running after
the default recipe changed needs no edit here: the results file is named after that recipe unless ``--name`` says
otherwise. No absolute path of this machine is written: the printed output is kept with paths reduced to file names.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quickstart.py                     # the default recipe
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quickstart.py -- --criterion ppl --compensation none
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "quickstart"
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[\w.+-]+/)*([\w.+-]+)/?")


def public_text(text: str) -> str:
    """``text`` with every absolute path reduced to its last component (results files are published)."""
    return ABSOLUTE_PATH.sub(r"\1", text)


def public_values(value: Any) -> Any:
    """:func:`public_text` applied to every string inside ``value`` (dicts and lists walked)."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {key: public_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_values(item) for item in value]
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", help="Results file name without .json (default: <criterion>-<compensation>).")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="Where the JSON goes.")
    parser.add_argument("--keep", help="Keep the quickstart's outputs in this folder (default: a deleted temp dir).")
    parser.add_argument("quickstart_args", nargs="*", help="Options for `optimum-depth quickstart`, after `--`.")
    return parser.parse_args()


def run_quickstart(output_dir: Path, extra: list[str]) -> dict[str, Any]:
    """Runs the quickstart in a child process; returns its wall and CPU seconds, exit code and printed output."""
    executable = Path(sys.executable).with_name("optimum-depth")
    command = [str(executable), "quickstart", "--output-dir", str(output_dir), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()
    start = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "exit_code": completed.returncode,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        "stdout": completed.stdout,
        "stderr": completed.stderr,
    }


def read_outputs(output_dir: Path) -> dict[str, Any]:
    """The recipe, the perplexities and the latency the quickstart wrote into ``output_dir``."""
    from optimum_depth.constants import CONFIG_NAME, PLAN_NAME
    from optimum_depth.evaluation import ComparisonResults, load_results, results_markdown

    comparison = load_results(output_dir)
    if not isinstance(comparison, ComparisonResults):
        raise SystemExit(f"The quickstart wrote {type(comparison).__name__}, not a dense vs pruned comparison.")
    config = json.loads((output_dir / CONFIG_NAME).read_text())
    plan = json.loads((output_dir / PLAN_NAME).read_text())
    compensation = config.get("compensation")
    return {
        "recipe": {
            "criterion": config["criterion"],
            "granularity": config.get("granularity"),
            "pruning_ratio": config.get("pruning_ratio"),
            "compensation": compensation["method"] if isinstance(compensation, dict) else compensation,
            "removed_blocks": plan.get("removed_blocks"),
            "num_samples": config.get("num_samples"),
            "seq_len": config.get("seq_len"),
        },
        "parameters": {
            "dense": comparison.dense.num_parameters,
            "pruned": comparison.pruned.num_parameters,
            "ideal_speedup": comparison.ideal_speedup,
        },
        "perplexity": {
            "dense": comparison.dense.perplexity,
            "pruned": comparison.pruned.perplexity,
            "pruned_over_dense": comparison.perplexity_ratios(),
            "windows": {
                name: (details or {}).get("num_windows")
                for name, details in (comparison.pruned.perplexity_settings.get("datasets") or {}).items()
            },
        },
        "latency": {
            "speedups": comparison.speedups(),
            "cautions": comparison.latency_cautions(),
            "dense_repeats_s": [r.latencies_s for r in comparison.dense.latency],
            "pruned_repeats_s": [r.latencies_s for r in comparison.pruned.latency],
            "settings": comparison.pruned.latency_settings,
        },
        "markdown": results_markdown(comparison),
    }


def main() -> None:
    args = parse_args()
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    output_dir = scratch / "quickstart-output"
    if output_dir.exists():
        raise SystemExit(f"{output_dir} already exists: give --keep a fresh folder.")
    try:
        run = run_quickstart(output_dir, args.quickstart_args)
        if run["exit_code"] != 0:
            sys.stderr.write(run["stderr"][-4000:])
            raise SystemExit(f"The quickstart failed with exit code {run['exit_code']}.")
        measured = read_outputs(output_dir)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    import torch
    import transformers

    import optimum_depth

    recipe = measured["recipe"]
    name = args.name or f"{recipe['criterion']}-{recipe['compensation'] or 'none'}"
    result = {
        "command": " ".join(
            ["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quickstart.py"]
            + (["--"] + args.quickstart_args if args.quickstart_args else [])
        ),
        "quickstart_command": " ".join(
            ["optimum-depth quickstart --output-dir quickstart-output", *args.quickstart_args]
        ),
        "date": datetime.date.today().isoformat(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "omp_num_threads": 1,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "optimum_depth": optimum_depth.__version__,
        },
        "wall_seconds": run["wall_seconds"],
        "cpu_seconds": run["cpu_seconds"],
        "wall_minutes": run["wall_seconds"] / 60,
        "cpu_minutes": run["cpu_seconds"] / 60,
        "load_average_1min": run["load_average_1min"],
        **measured,
        "printed_output": run["stdout"].splitlines(),
        "warnings": [line for line in run["stderr"].splitlines() if line.startswith("WARNING")],
    }
    text = json.dumps(public_values(result), indent=1)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(text + "\n")
    print(measured["markdown"])
    print(
        f"\nwall {result['wall_minutes']:.1f} min, CPU {result['cpu_minutes']:.1f} min; recipe {recipe}; "
        f"written to {path.name}"
    )


if __name__ == "__main__":
    main()
