"""The repository itself (README, docs, examples, model cards, committed results, code) holds no machine path."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACHINE_FOLDERS = ("work", "tmp", "home", "root", "Users", "mnt", "scratch")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:" + "|".join(MACHINE_FOLDERS) + r")/[\w.-]")
TEXT_SUFFIXES = {".md", ".json", ".py", ".txt", ".yaml", ".yml", ".toml", ".cfg", ".sh", ".log", ".csv", ".jsonl"}


def _tracked_files() -> list[Path]:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode == 0 and result.stdout.strip():
        return [ROOT / line for line in result.stdout.splitlines()]
    roots = ["README.md", "docs", "examples", "model_cards", "benchmarks", "src", "tests", "scripts"]
    return [p for name in roots for p in ([ROOT / name] if (ROOT / name).is_file() else (ROOT / name).rglob("*"))]


def test_no_tracked_file_names_a_folder_of_the_machine_it_was_made_on():
    leaks = []
    for path in _tracked_files():
        if not path.is_file() or not (path.suffix in TEXT_SUFFIXES or path.name in {"run", "Makefile"}):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                leaks.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert leaks == [], "\n".join(leaks[:40]) + (f"\n... {len(leaks)} in all" if len(leaks) > 40 else "")


def test_the_pattern_finds_what_it_must():
    assert MACHINE_PATH.search('"source": "/' + 'work/shared/data/calib"')
    assert MACHINE_PATH.search("--output-dir /" + "tmp/rec")
    assert not MACHINE_PATH.search("https://huggingface.co/root/x")  # a URL path is no machine path
    assert not MACHINE_PATH.search("../shared/data/calib") and not MACHINE_PATH.search("~/pruned")
