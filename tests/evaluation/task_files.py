"""Tiny task files in the layout of ../shared/data, written by the zero-shot tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

PIQA = [
    ("How do you dry wet shoes?", "Stuff them with newspaper.", "Put them in the oven at full heat.", 0),
    ("How to cool a drink fast?", "Leave it in the sun.", "Put it in ice water with salt.", 1),
    ("To open a jar", "twist the lid.", "freeze the jar.", 0),
    ("Keep bread fresh", "store it in a bag.", "soak it in water.", 0),
    ("Light a dark room", "close the curtains.", "turn on a lamp.", 1),
    ("Clean a window", "use a cloth and soap.", "use mud.", 0),
]
WINOGRANDE = [
    ("The ball did not fit in the box because _ was too big.", "ball", "box", "1"),
    ("Tom helped Sam because _ was kind.", "Tom", "Sam", "1"),
    ("The cat chased the mouse until _ was tired.", "cat", "mouse", "1"),
]
ARC = [
    ("What do plants need to grow?", ["light", "rocks", "plastic", "sand"], ["A", "B", "C", "D"], "A"),
    ("Which is a liquid?", ["ice", "water", "wood"], ["1", "2", "3"], "2"),
    ("What melts ice?", ["heat", "cold", "dark", "wind"], ["A", "B", "C", "D"], "A"),
]


def _jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def _lines(path: Path, lines) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _arc_records(items):
    return [
        {
            "id": f"q{i}",
            "question": {
                "stem": q,
                "choices": [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)],
            },
            "answerKey": key,
        }
        for i, (q, texts, labels, key) in enumerate(items)
    ]


def write_task_files(root: Path) -> Path:
    """Writes tiny copies of the seven tasks under ``root`` with the default file names; returns ``root``."""
    (root / "boolq").mkdir(parents=True)
    with open(root / "boolq" / "super_glue_boolq_validation.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "passage", "idx", "label"])
        writer.writerow(["is the sky blue", "The sky is blue on a clear day.", 0, 1])
        writer.writerow(["is fire cold", "Fire is hot, it burns.", 1, 0])
        writer.writerow(["can fish swim", "Fish live in water and swim.", 2, 1])
    _jsonl(root / "piqa" / "valid.jsonl", [{"goal": g, "sol1": a, "sol2": b} for g, a, b, _ in PIQA])
    _lines(root / "piqa" / "valid-labels.lst", [label for *_, label in PIQA])
    (root / "hellaswag").mkdir()
    _lines(
        root / "hellaswag" / "hellaswag_val_full.txt",
        [
            "Cooking: A man puts a pan on the stove. he",
            "2",
            "flies away.",
            "sings a song to the moon.",
            "adds oil to the pan.",
            "reads the newspaper.",
            "Running: A girl ties her shoes. she",
            "0",
            "starts running down the road.",
            "eats her shoes.",
            "falls asleep in the shoes.",
            "paints the shoes green.",
        ],
    )
    _jsonl(
        root / "winogrande" / "dev.jsonl",
        [{"sentence": s, "option1": a, "option2": b, "answer": k} for s, a, b, k in WINOGRANDE],
    )
    _lines(root / "winogrande" / "dev-labels.lst", [k for *_, k in WINOGRANDE])
    _jsonl(root / "arc" / "ARC-Easy-Test.jsonl", _arc_records(ARC))
    _jsonl(root / "arc" / "ARC-Challenge-Test.jsonl", _arc_records(ARC[::-1]))
    obqa = _arc_records(ARC)
    _jsonl(root / "openbookqa" / "test.jsonl", obqa)
    return root
