"""Zero-shot accuracy with lm-eval (0.4.x) as a library, on the seven tasks of the depth-pruning papers.

The tasks (BoolQ, PIQA, HellaSwag, WinoGrande, ARC-Easy, ARC-Challenge, OpenBookQA) are defined by YAML configs
shipped in ``optimum_depth/tasks`` (``od_<task>``), which keep lm-eval's own prompts and metrics and read local files.
A run:

1. resolves the local files (``data_dir`` / ``task_files``) and converts them to lm-eval's Hub record layout
   (:mod:`.task_data`) in a work directory;
2. renders the shipped YAMLs into that directory with the data path filled in;
3. calls ``lm_eval.simple_evaluate`` with an in-memory ``HFLM`` and ``TaskManager(include_path=<work dir>,
   include_defaults=False)`` (fast: lm-eval's thousands of task configs are not indexed). No Hub access is needed.

``source="hub"`` instead runs lm-eval's stock tasks of the same names (downloads the datasets).

Besides the accuracies, :func:`evaluate_zero_shot_documents` keeps every document's outcome (right or wrong, per
metric, in document order, with a fingerprint of the documents), which the paired comparison of a dense and a pruned
model needs (:mod:`.paired`). Models that need a BOS token at the start of every sequence (:mod:`.bos`) get one in
every lm-eval request whatever their tokenizer's default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..privacy import data_identity
from .bos import needs_bos_every_sequence
from .settings import ZeroShotSettings
from .task_data import ZERO_SHOT_TASKS, resolve_task_files, write_task_data

logger = logging.getLogger(__name__)

TASK_DATA_PLACEHOLDER = "__OPTIMUM_DEPTH_TASK_DATA__"
DEFAULT_TASKS = tuple(ZERO_SHOT_TASKS)


def shipped_tasks_dir() -> Path:
    """Directory of the task YAMLs shipped in the package (``optimum_depth/tasks``)."""
    return Path(str(resources.files("optimum_depth") / "tasks"))


def render_task_configs(tasks: Sequence[str], data_dir: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Writes the shipped ``od_<task>.yaml`` configs with the converted-data directory filled in.

    Args:
        tasks: Canonical task names.
        data_dir: Directory holding the converted ``<task>.jsonl`` files.
        output_dir: Where the rendered YAMLs go (used as lm-eval's ``include_path``).

    Returns:
        ``output_dir``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    quoted = json.dumps(str(Path(data_dir).resolve()))[1:-1]  # a JSON string body is a valid YAML "..." body
    for task in tasks:
        name = f"{ZERO_SHOT_TASKS[task].task}.yaml"
        text = (shipped_tasks_dir() / name).read_text(encoding="utf-8")
        (output_dir / name).write_text(text.replace(TASK_DATA_PLACEHOLDER, quoted), encoding="utf-8")
    return output_dir


def parse_lm_eval_results(output: dict[str, Any], task_names: dict[str, str]) -> dict[str, dict[str, float]]:
    """Turns ``simple_evaluate`` output into ``task -> {"acc": ..., "acc_stderr": ..., "acc_norm": ...}``.

    Args:
        output: What ``lm_eval.simple_evaluate`` returned.
        task_names: lm-eval task name -> name to report (e.g. ``"od_piqa" -> "piqa"``).

    Returns:
        Numeric metrics per task (lm-eval's ``"N/A"`` stderrs are left out).
    """
    parsed: dict[str, dict[str, float]] = {}
    for lm_eval_name, name in task_names.items():
        metrics = output["results"].get(lm_eval_name)
        if metrics is None:
            raise KeyError(f"lm-eval returned no results for task {lm_eval_name!r}.")
        parsed[name] = {
            key.split(",", 1)[0]: float(value)
            for key, value in metrics.items()
            if "," in key and isinstance(value, (int, float)) and not isinstance(value, bool)
        }
    return parsed


OUTCOME_METRICS = ("acc", "acc_norm")
"""Per-document metrics kept by :func:`document_outcomes` (0 or 1 for every document)."""


def document_outcomes(output: dict[str, Any], task_names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every document's outcome from ``simple_evaluate(log_samples=True)`` output.

    Args:
        output: What ``lm_eval.simple_evaluate`` returned (with ``samples``).
        task_names: lm-eval task name -> name to report.

    Returns:
        Task -> ``{"documents": n, "fingerprint": sha256 of the documents' hashes in order, "acc": "0110...",
        "acc_norm": ...}``: one character per document, in document-id order (``"1"`` right, ``"0"`` wrong).
    """
    samples = output.get("samples") or {}
    outcomes: dict[str, dict[str, Any]] = {}
    for lm_eval_name, name in task_names.items():
        logged = sorted(samples.get(lm_eval_name, []), key=lambda sample: sample["doc_id"])
        if not logged:
            continue
        fingerprint = hashlib.sha256("".join(str(s.get("doc_hash", s["doc_id"])) for s in logged).encode())
        record: dict[str, Any] = {"documents": len(logged), "fingerprint": fingerprint.hexdigest()}
        for metric in OUTCOME_METRICS:
            if all(metric in sample for sample in logged):
                record[metric] = "".join("1" if float(sample[metric]) > 0.5 else "0" for sample in logged)
        outcomes[name] = record
    return outcomes


def _build_lm(model, tokenizer, batch_size: int, max_length: int | None):
    from lm_eval.models.huggingface import HFLM

    # None keeps the tokenizer's own default; models that need BOS get it in every request.
    add_bos = True if needs_bos_every_sequence(model, tokenizer) else None
    return HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        backend="causal",
        add_bos_token=add_bos,
    )


def _prepare_tasks(task_manager_class, tasks: list[str], files: dict, root: Path, source: str):
    """The lm-eval task manager, ``{lm-eval task name: our task name}`` and the documents per local file."""
    if source != "local":
        return task_manager_class(), {t: t for t in tasks}, {}
    data_counts = write_task_data(files, root / "data")
    render_task_configs(tasks, root / "data", root / "tasks")
    task_manager = task_manager_class(include_path=str(root / "tasks"), include_defaults=False)
    return task_manager, {ZERO_SHOT_TASKS[t].task: t for t in tasks}, data_counts


def evaluate_zero_shot(
    model,
    tokenizer,
    settings: ZeroShotSettings | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Zero-shot accuracy of ``model`` with lm-eval: :func:`evaluate_zero_shot_documents` without the documents.

    Returns:
        ``(zero_shot, settings)`` (see :func:`evaluate_zero_shot_documents`).
    """
    scores, recorded, _ = evaluate_zero_shot_documents(
        model, tokenizer, settings, data_dir=data_dir, work_dir=work_dir
    )
    return scores, recorded


def evaluate_zero_shot_documents(
    model,
    tokenizer,
    settings: ZeroShotSettings | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Any], dict[str, dict[str, Any]]]:
    """Zero-shot accuracy of ``model`` with lm-eval, and every document's outcome.

    Args:
        model: A causal LM (dense or pruned), evaluated in memory.
        tokenizer: Its tokenizer.
        settings: Tasks, limit, batch size, few-shot, seed, task files, source (default: the seven tasks, every
            document); see :class:`~.settings.ZeroShotSettings`.
        data_dir: Directory with the local files (default: :func:`optimum_depth.data.default_data_dir`).
        work_dir: Where converted data and rendered configs go (default: a temporary directory, removed after).

    Returns:
        ``(zero_shot, settings, documents)``: task -> metrics (with their standard errors), the settings (limit,
        num_fewshot, lm-eval version, data files, documents evaluated per task, BOS), ready for
        :class:`~optimum_depth.evaluation.EvaluationResults`, and task -> per-document outcomes
        (:func:`document_outcomes`).

    Raises:
        ConfigError: On unknown tasks.
        DataError: On malformed data files.
        DataNotFoundError: If a task's data file is missing.
        ImportError: If lm-eval is not installed (``pip install optimum-depth[eval]``).
    """
    settings = settings or ZeroShotSettings()
    tasks, limit, seed, source = list(settings.tasks), settings.limit, settings.seed, settings.source
    batch_size, num_fewshot = settings.batch_size, settings.num_fewshot
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ImportError("Zero-shot evaluation needs lm-eval: pip install 'optimum-depth[eval]'.") from err

    files = resolve_task_files(tasks, data_dir, settings.task_files) if source == "local" else {}
    with tempfile.TemporaryDirectory(prefix="optimum-depth-zero-shot-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        task_manager, task_names, data_counts = _prepare_tasks(TaskManager, tasks, files, root, source)
        logger.info("Running lm-eval on %s (limit=%s)", list(task_names), limit)
        output = lm_eval.simple_evaluate(
            model=_build_lm(model, tokenizer, batch_size, settings.max_length),
            tasks=list(task_names),
            task_manager=task_manager,
            num_fewshot=num_fewshot,
            limit=limit,
            log_samples=True,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    if output is None:
        raise RuntimeError("lm-eval returned no results (non-zero rank in a distributed run?).")
    zero_shot = parse_lm_eval_results(output, task_names)
    documents = document_outcomes(output, task_names)
    samples = output.get("n-samples", {})
    recorded = {
        "limit": limit,
        "num_fewshot": num_fewshot,
        "batch_size": batch_size,
        "source": source,
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "lm_eval_tasks": dict(task_names),
        "data_files": {t: data_identity(f) for t, f in files.items()},  # names and hashes, not local paths
        "bos_every_sequence": needs_bos_every_sequence(model, tokenizer),
        "documents": {t: data_counts.get(t) for t in tasks},
        "evaluated_documents": {name: samples.get(key, {}).get("effective") for key, name in task_names.items()},
        "seed": seed,
    }
    return zero_shot, recorded, documents
