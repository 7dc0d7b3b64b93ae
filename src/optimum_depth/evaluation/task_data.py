"""Local copies of the seven zero-shot benchmarks, converted to the record layout of lm-eval's Hub datasets.

lm-eval's task configs read the Hub datasets (``super_glue/boolq``, ``piqa``, ``Rowan/hellaswag``, ...). The local
copies come in their original release formats; each reader here turns one into records with the Hub field names, so
the task YAMLs in ``optimum_depth/tasks`` can keep lm-eval's prompts (``doc_to_text``/``doc_to_choice``/...)
unchanged. Files already in the Hub layout are accepted as well.

HellaSwag: the local copy is llama.cpp's pre-processed text (context line = ``activity_label: ctx`` with WikiHow
bracket tags removed, then the gold index and the 4 endings). It maps onto lm-eval's processed fields (``query``,
``choices``, ``label``) directly; the one known difference is that lm-eval capitalises the first letter of ``ctx_b``
inside the context, which the pre-processed text cannot recover. A HellaSwag ``.jsonl`` in the Hub layout is
processed exactly like lm-eval does.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import iter_jsonl
from ..errors import ConfigError, DataError, DataNotFoundError

Record = dict[str, Any]


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    for number, record in iter_jsonl(path):
        if not isinstance(record, dict):
            raise DataError(f"{str(path)!r} line {number} is not a JSON object.")
        records.append(record)
    if not records:
        raise DataError(f"{str(path)!r} holds no records.")
    return records


def _require(record: Record, keys: tuple[str, ...], path: Path, number: int) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataError(f"{str(path)!r} record {number} lacks field(s) {missing}.")


def _labels_beside(path: Path) -> list[str] | None:
    """Labels of ``X.jsonl`` from ``X-labels.lst`` (one per line), if that file exists."""
    labels_path = path.with_name(f"{path.stem}-labels.lst")
    if not labels_path.is_file():
        return None
    with open(labels_path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _attach_labels(records: list[Record], path: Path, key: str) -> None:
    labels = _labels_beside(path)
    if labels is None:
        if any(key not in r for r in records):
            raise DataError(f"{str(path)!r} has no `{key}` field and no {path.stem}-labels.lst beside it.")
        return
    if len(labels) != len(records):
        raise DataError(
            f"{path.stem}-labels.lst has {len(labels)} labels for {len(records)} records in {str(path)!r}."
        )
    for number, (record, label) in enumerate(zip(records, labels, strict=True), 1):
        if key in record and str(record[key]) != label:
            raise DataError(
                f"{str(path)!r} record {number}: `{key}`={record[key]!r} but the labels file says {label!r}."
            )
        record[key] = label


_BOOLQ_LABELS = {"1": 1, "0": 0, "true": 1, "false": 0}


def read_boolq(path: Path) -> list[Record]:
    """SuperGLUE BoolQ csv/jsonl (``question, passage, label`` with 1 = yes) -> lm-eval's ``boolq`` records."""
    if path.suffix == ".jsonl":
        rows = _read_jsonl(path)
    else:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    records = []
    for number, row in enumerate(rows, 1):
        _require(row, ("question", "passage", "label"), path, number)
        label = _BOOLQ_LABELS.get(str(row["label"]).strip().lower())
        if label is None:
            raise DataError(f"{str(path)!r} record {number}: label {row['label']!r} is not 0/1/true/false.")
        records.append({"question": row["question"], "passage": row["passage"], "label": label})
    return records


def read_piqa(path: Path) -> list[Record]:
    """PIQA ``goal, sol1, sol2`` jsonl with ``X-labels.lst`` beside it (or a ``label`` field)."""
    records = _read_jsonl(path)
    for number, record in enumerate(records, 1):
        _require(record, ("goal", "sol1", "sol2"), path, number)
    _attach_labels(records, path, "label")
    return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(r["label"])} for r in records]


def read_winogrande(path: Path) -> list[Record]:
    """WinoGrande ``sentence, option1, option2, answer`` jsonl (labels from ``X-labels.lst`` when present)."""
    records = _read_jsonl(path)
    for number, record in enumerate(records, 1):
        _require(record, ("sentence", "option1", "option2"), path, number)
        if "_" not in record["sentence"]:
            raise DataError(f"{str(path)!r} record {number}: the sentence has no `_` blank.")
    _attach_labels(records, path, "answer")
    return [
        {k: (str(r[k]) if k == "answer" else r[k]) for k in ("sentence", "option1", "option2", "answer")}
        for r in records
    ]


def _read_question_choices(path: Path, question_key: str) -> list[Record]:
    """ARC/OpenBookQA: original ``question.stem``/``question.choices`` or Hub ``question``+``choices`` layout."""
    records = []
    for number, record in enumerate(_read_jsonl(path), 1):
        _require(record, ("answerKey",), path, number)
        if isinstance(record.get("question"), dict):  # original AI2 release
            _require(record["question"], ("stem", "choices"), path, number)
            stem, choices = record["question"]["stem"], record["question"]["choices"]
            choices = {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]}
        else:  # Hub layout
            _require(record, (question_key, "choices"), path, number)
            stem, choices = record[question_key], record["choices"]
        if str(record["answerKey"]).strip() not in choices["label"]:
            raise DataError(f"{str(path)!r} record {number}: answerKey {record['answerKey']!r} is not a choice label.")
        records.append(
            {
                "id": record.get("id", str(number)),
                question_key: stem,
                "choices": choices,
                "answerKey": record["answerKey"],
            }
        )
    return records


def read_arc(path: Path) -> list[Record]:
    """AI2 ARC jsonl -> lm-eval's ``ai2_arc`` records (``question, choices{text,label}, answerKey``)."""
    return _read_question_choices(path, "question")


def read_openbookqa(path: Path) -> list[Record]:
    """OpenBookQA jsonl -> lm-eval's ``openbookqa`` records (``question_stem, choices{text,label}, answerKey``)."""
    return _read_question_choices(path, "question_stem")


def read_hellaswag(path: Path) -> list[Record]:
    """HellaSwag: llama.cpp's 6-line text format, or Hub-layout jsonl, -> lm-eval's processed ``query/choices/label``."""
    from lm_eval.tasks.hellaswag.utils import preprocess  # lm-eval's own cleaning, applied like lm-eval does

    if path.suffix == ".jsonl":
        records = []
        for number, doc in enumerate(_read_jsonl(path), 1):
            _require(doc, ("activity_label", "ctx_a", "ctx_b", "endings", "label"), path, number)
            ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
            query = preprocess(doc["activity_label"] + ": " + ctx)
            records.append(
                {"query": query, "choices": [preprocess(e) for e in doc["endings"]], "label": int(doc["label"])}
            )
        return records
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or len(lines) % 6:
        raise DataError(f"{str(path)!r} has {len(lines)} lines; the llama.cpp HellaSwag format has 6 per item.")
    records = []
    for start in range(0, len(lines), 6):
        context, gold, *endings = lines[start : start + 6]
        if gold.strip() not in ("0", "1", "2", "3"):
            raise DataError(f"{str(path)!r} line {start + 2}: gold index {gold!r} is not 0-3.")
        records.append({"query": preprocess(context), "choices": [preprocess(e) for e in endings], "label": int(gold)})
    return records


@dataclass(frozen=True)
class ZeroShotTaskSpec:
    """Where a task's local data lives and how it is read.

    Args:
        name: Canonical task name (lm-eval's), also the results key.
        local_file: Default file, relative to the data directory.
        read: Reader returning records in the lm-eval Hub layout.
        data_file: Name of the converted file the task YAML reads.
    """

    name: str
    local_file: str
    read: Callable[[Path], list[Record]]
    data_file: str

    @property
    def task(self) -> str:
        """Name of the shipped task config (``od_<name>``), distinct from lm-eval's own."""
        return f"od_{self.name}"


ZERO_SHOT_TASKS: dict[str, ZeroShotTaskSpec] = {
    spec.name: spec
    for spec in (
        ZeroShotTaskSpec("boolq", "boolq/super_glue_boolq_validation.csv", read_boolq, "boolq.jsonl"),
        ZeroShotTaskSpec("piqa", "piqa/valid.jsonl", read_piqa, "piqa.jsonl"),
        ZeroShotTaskSpec("hellaswag", "hellaswag/hellaswag_val_full.txt", read_hellaswag, "hellaswag.jsonl"),
        ZeroShotTaskSpec("winogrande", "winogrande/dev.jsonl", read_winogrande, "winogrande.jsonl"),
        ZeroShotTaskSpec("arc_easy", "arc/ARC-Easy-Test.jsonl", read_arc, "arc_easy.jsonl"),
        ZeroShotTaskSpec("arc_challenge", "arc/ARC-Challenge-Test.jsonl", read_arc, "arc_challenge.jsonl"),
        ZeroShotTaskSpec("openbookqa", "openbookqa/test.jsonl", read_openbookqa, "openbookqa.jsonl"),
    )
}


def resolve_task_files(
    tasks: list[str], data_dir: str | os.PathLike | None, task_files: dict[str, str | os.PathLike] | None
) -> dict[str, Path]:
    """The local file of each task: ``task_files[task]`` if given, else the default file under ``data_dir``.

    Raises:
        ValueError: On an unknown task name.
        FileNotFoundError: If a file is missing or no data directory is known.
    """
    from ..data import default_data_dir

    task_files = dict(task_files or {})
    unknown = sorted(set(tasks).union(task_files) - set(ZERO_SHOT_TASKS))
    if unknown:
        raise ConfigError(f"Unknown zero-shot task(s) {unknown}; expected names from {list(ZERO_SHOT_TASKS)}.")
    root = Path(data_dir) if data_dir is not None else None
    files = {}
    for task in tasks:
        if task in task_files:
            file = Path(task_files[task])
        else:
            root = root if root is not None else default_data_dir()
            if root is None:
                raise DataNotFoundError(
                    f"No data directory for task {task!r}: pass `data_dir=` or `task_files=`, or set $OPTIMUM_DEPTH_DATA_DIR."
                )
            file = root / ZERO_SHOT_TASKS[task].local_file
        if not file.is_file():
            raise DataNotFoundError(f"Data file of zero-shot task {task!r} not found: {str(file)!r}.")
        files[task] = file
    return files


def write_task_data(files: dict[str, Path], output_dir: str | os.PathLike) -> dict[str, int]:
    """Converts each task's local file into the jsonl its task YAML reads.

    Args:
        files: Task name -> local file (from :func:`resolve_task_files`).
        output_dir: Directory receiving ``<task>.jsonl`` files.

    Returns:
        Task name -> number of records written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for task, file in files.items():
        spec = ZERO_SHOT_TASKS[task]
        records = spec.read(file)
        with open(output_dir / spec.data_file, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        counts[task] = len(records)
    return counts
