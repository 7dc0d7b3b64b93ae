"""Pieces shared by the table runners: settings, environment, evaluation, speed-up, and the resumable run loop.

Every metric is measured with the library's own API (``optimum_depth.evaluation``): ``evaluate_perplexity``,
``evaluate_zero_shot`` and ``measure_latency`` (dense and pruned interleaved; speed-up from
``ComparisonResults.speedups``). Nothing is recomputed here.

Resumability: a run whose results file exists is skipped; a run being computed holds ``<file>.lock`` (with its pid),
so two runner processes can share one list of runs, and a lock left by a dead process is taken over.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from optimum_depth.architectures import count_parameters
from optimum_depth.evaluation import (
    ComparisonResults,
    EvaluationResults,
    ZeroShotSettings,
    evaluate_perplexity,
    evaluate_zero_shot,
    measure_latency,
)
from optimum_depth.version import __version__

from .results_format import FORMAT, ResultsFormatError, run_path, write_run


@dataclass
class EvalSettings:
    """How every model of a table is evaluated (recorded in each results file)."""

    ppl_datasets: tuple[str, ...] = ("wikitext2", "ptb")
    ppl_seq_len: int = 128
    ppl_max_windows: int | None = 64
    ppl_batch_size: int = 8
    zero_shot_limit: int | None = 20
    zero_shot_batch_size: int = 8
    zero_shot_seed: int = 1234
    latency_batch_size: int = 1
    latency_new_tokens: int = 32
    latency_warmup: int = 1
    latency_repeats: int = 3

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds one ``--option`` per field to ``parser``."""
        defaults = cls()
        parser.add_argument("--ppl-datasets", nargs="+", default=list(defaults.ppl_datasets))
        parser.add_argument("--ppl-seq-len", type=int, default=defaults.ppl_seq_len)
        parser.add_argument(
            "--ppl-max-windows", type=int, default=defaults.ppl_max_windows, help="0: every window of the corpus."
        )
        parser.add_argument("--ppl-batch-size", type=int, default=defaults.ppl_batch_size)
        parser.add_argument(
            "--zero-shot-limit", type=int, default=defaults.zero_shot_limit, help="0: every document of each task."
        )
        parser.add_argument("--zero-shot-batch-size", type=int, default=defaults.zero_shot_batch_size)
        parser.add_argument("--latency-new-tokens", type=int, default=defaults.latency_new_tokens)
        parser.add_argument("--latency-warmup", type=int, default=defaults.latency_warmup)
        parser.add_argument("--latency-repeats", type=int, default=defaults.latency_repeats)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvalSettings:
        """Builds the settings from parsed :meth:`add_arguments` options."""
        return cls(
            ppl_datasets=tuple(args.ppl_datasets),
            ppl_seq_len=args.ppl_seq_len,
            ppl_max_windows=args.ppl_max_windows or None,
            ppl_batch_size=args.ppl_batch_size,
            zero_shot_limit=args.zero_shot_limit or None,
            zero_shot_batch_size=args.zero_shot_batch_size,
            latency_new_tokens=args.latency_new_tokens,
            latency_warmup=args.latency_warmup,
            latency_repeats=args.latency_repeats,
        )


def utc_now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def set_threads() -> int:
    """Sets torch's thread count from ``$OMP_NUM_THREADS`` (1 when unset) and returns it."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    return threads


def machine_settings() -> dict[str, Any]:
    """Threads and machine facts the timings depend on."""
    return {
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "device": "cpu",
        "machine": platform.machine(),
    }


def versions() -> dict[str, str | None]:
    """Versions of the libraries the figures depend on."""
    import transformers

    try:
        import lm_eval

        lm_eval_version = getattr(lm_eval, "__version__", None)
    except ImportError:  # pragma: no cover - the eval extra is installed for the benchmarks
        lm_eval_version = None
    return {
        "optimum_depth": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lm_eval": lm_eval_version,
        "python": platform.python_version(),
    }


def command_line(module: str) -> str:
    """The command that was run, as ``python -m <module> <args>``."""
    return " ".join(["python -m", module, shlex.join(sys.argv[1:])]).strip()


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN/infinite float (e.g. an undefined stderr) replaced by ``None``, recursively."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_quality(
    model, tokenizer, settings: EvalSettings
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Perplexity and zero-shot accuracy of ``model``.

    Returns:
        ``(metrics, details, timings)``: the metrics of the results format (``perplexity``, ``zero_shot``), the
        evaluation functions' own settings records, and the wall seconds of each.
    """
    start = time.perf_counter()
    perplexity, ppl_settings = evaluate_perplexity(
        model,
        tokenizer,
        settings.ppl_datasets,
        seq_len=settings.ppl_seq_len,
        batch_size=settings.ppl_batch_size,
        max_windows=settings.ppl_max_windows,
    )
    ppl_s = time.perf_counter() - start
    start = time.perf_counter()
    zero_shot, zs_settings = evaluate_zero_shot(
        model,
        tokenizer,
        ZeroShotSettings(
            limit=settings.zero_shot_limit, batch_size=settings.zero_shot_batch_size, seed=settings.zero_shot_seed
        ),
    )
    zs_s = time.perf_counter() - start
    print(f"  PPL {perplexity} ({ppl_s:.0f} s); zero-shot {zs_s:.0f} s", flush=True)
    metrics = {"perplexity": perplexity, "zero_shot": finite_or_none(zero_shot)}
    details = {"perplexity_settings": ppl_settings, "zero_shot_settings": zs_settings}
    return metrics, details, {"perplexity_s": ppl_s, "zero_shot_s": zs_s}


def measure_speedup(dense, pruned, tokenizer, settings: EvalSettings) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Batch-1 generation latency of ``pruned`` against ``dense``, interleaved in this process.

    Returns:
        ``(latency metrics, latency settings, wall seconds)``; the metrics hold both medians, the speed-up
        (dense / pruned), the paired speed-up (median of per-round ratios), the ideal speed-up (parameter ratio)
        and every timed repeat.
    """
    start = time.perf_counter()
    records, latency_settings = measure_latency(
        {"dense": dense, "pruned": pruned},
        tokenizer,
        batch_sizes=(settings.latency_batch_size,),
        new_tokens=(settings.latency_new_tokens,),
        warmup=settings.latency_warmup,
        repeats=settings.latency_repeats,
        measure_memory=False,
    )
    seconds = time.perf_counter() - start
    comparison = ComparisonResults(
        dense=EvaluationResults("dense", num_parameters=count_parameters(dense), latency=records["dense"]),
        pruned=EvaluationResults("pruned", num_parameters=count_parameters(pruned), latency=records["pruned"]),
    )
    (row,) = comparison.speedups()
    dense_record, pruned_record = records["dense"][0], records["pruned"][0]
    metrics = {
        "batch_size": pruned_record.batch_size,
        "new_tokens": pruned_record.new_tokens,
        "prompt_len": pruned_record.prompt_len,
        "latency_s": pruned_record.latency_s,
        "dense_latency_s": dense_record.latency_s,
        "speedup": row["speedup"],
        "paired_speedup": row.get("paired_speedup"),
        "ideal_speedup": comparison.ideal_speedup,
        "latencies_s": pruned_record.latencies_s,
        "dense_latencies_s": dense_record.latencies_s,
    }
    latency_settings["load_average_after"] = list(os.getloadavg())
    print(f"  speed-up {row['speedup']:.3f}x (ideal {comparison.ideal_speedup:.3f}x, {seconds:.0f} s)", flush=True)
    return metrics, latency_settings, seconds


def new_record(
    table: str, run_id: str, model: dict[str, Any], method: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """A results record with the bookkeeping fields filled; the runner adds metrics, timings and ``finished_at``."""
    return {
        "format": FORMAT,
        "table": table,
        "run_id": run_id,
        "model": model,
        "method": method,
        "settings": settings,
        "metrics": {},
        "timings": {},
        "versions": versions(),
        "command": "",
        "started_at": utc_now(),
        "finished_at": "",
        "load_average_at_start": list(os.getloadavg()),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def claim(path: Path) -> Iterator[bool]:
    """Holds ``<path>.lock`` while a run is computed; yields ``False`` if a live process already holds it."""
    lock = path.with_suffix(".json.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and _pid_alive(holder):
                yield False
                return
            lock.unlink(missing_ok=True)  # left by a dead process
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        try:
            yield True
        finally:
            lock.unlink(missing_ok=True)
        return
    yield False


@dataclass
class PlannedRun:
    """One run of a table: its id and the function computing its record."""

    run_id: str
    compute: Callable[[], dict[str, Any]]


def run_all(table: str, runs: list[PlannedRun], results_dir: Path, command: str, force: bool = False) -> list[str]:
    """Computes every run whose results file is missing (all with ``force``); returns the run ids computed.

    Each record gets ``command``, ``finished_at`` and ``timings.total_s`` here, and is written atomically as soon
    as it is done, so an interrupted table resumes where it stopped.
    """
    computed = []
    for planned in runs:
        path = run_path(results_dir, table, planned.run_id)
        if path.exists() and not force:
            print(f"[{table}] {planned.run_id}: results exist, skipped", flush=True)
            continue
        with claim(path) as mine:
            if not mine:
                print(f"[{table}] {planned.run_id}: being computed by another process, skipped", flush=True)
                continue
            if path.exists() and not force:  # finished by another process meanwhile
                continue
            started_at = utc_now()
            print(f"[{table}] {planned.run_id}: running ({started_at})", flush=True)
            start = time.perf_counter()
            record = planned.compute()
            record["started_at"] = started_at  # the compute function's record may be created after pruning
            record["timings"]["total_s"] = time.perf_counter() - start
            record["command"] = command
            record["finished_at"] = utc_now()
            record["load_average_at_end"] = list(os.getloadavg())
            try:
                write_run(path, record)
            except ResultsFormatError:
                keep = path.with_suffix(".json.invalid")
                keep.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
                print(f"[{table}] {planned.run_id}: record rejected, kept in {keep}", flush=True)
                raise
            print(f"[{table}] {planned.run_id}: wrote {path} ({record['timings']['total_s']:.0f} s)", flush=True)
            computed.append(planned.run_id)
    return computed


def settings_dict(settings: EvalSettings) -> dict[str, Any]:
    """The evaluation settings as a JSON-friendly dict."""
    data = asdict(settings)
    data["ppl_datasets"] = list(settings.ppl_datasets)
    return data


def train_and_merge(model, tokenizer, train, recovery, callbacks_for=None) -> tuple[Any, float, list[dict[str, Any]]]:
    """Trains ``model`` with func:`optimum_depth.training.build_recovery_trainer` and merges LoRA adapters.

    Args:
        model: The model to train (consumed).
        tokenizer: Its tokenizer.
        train: The packed training dataset.
        recovery: A ``RecoveryConfig``.
        callbacks_for: Optional ``trainer -> [callbacks]`` (e.g. a ``DepthPruningCallback`` given the trainer).

    Returns:
        ``(merged model in eval mode, training wall seconds, the Trainer's log history)``.
    """
    import tempfile

    from optimum_depth.training import build_recovery_trainer

    with tempfile.TemporaryDirectory(prefix="paper-tables-") as tmp:
        trainer = build_recovery_trainer(
            model, train, recovery, output_dir=tmp, tokenizer=tokenizer, logging_steps=4, save_strategy="no"
        )
        for callback in callbacks_for(trainer) if callbacks_for is not None else []:
            trainer.add_callback(callback)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        trained = trainer.model
        merged = trained.merge_and_unload() if hasattr(trained, "merge_and_unload") else trained
    return merged.eval(), seconds, list(trainer.state.log_history)


def fill_evaluation(record: dict[str, Any], model, tokenizer, settings: EvalSettings, dense=None) -> dict[str, Any]:
    """Evaluates ``model`` into ``record``: parameters, perplexity, zero-shot and, given ``dense``, the speed-up.

    Sets ``metrics`` and ``details`` and adds to ``timings``; callers add their own details and timings afterwards.

    Returns:
        ``record``.
    """
    metrics, details, timings = evaluate_quality(model, tokenizer, settings)
    record["metrics"] = {"num_parameters": count_parameters(model), **metrics}
    record["details"] = details
    record["timings"].update(timings)
    if dense is not None:
        latency, latency_settings, latency_s = measure_speedup(dense, model, tokenizer, settings)
        record["metrics"]["latency"] = latency
        record["details"]["latency_settings"] = latency_settings
        record["timings"]["latency_s"] = latency_s
    return record


def dense_run(table: str, dense, tokenizer, base: dict[str, Any], settings: EvalSettings) -> dict[str, Any]:
    """The dense baseline's record of ``table`` (perplexity, zero-shot, parameters; every block kept)."""
    method = {"name": "dense", "num_blocks_kept": int(dense.config.num_hidden_layers)}
    record = new_record(table, "dense", base["model"], method, base["settings"])
    return fill_evaluation(record, dense, tokenizer, settings)
