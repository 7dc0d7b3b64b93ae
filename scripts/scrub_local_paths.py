"""Replaces the local paths in committed results and records by their file or folder names, changing nothing else.

Committed JSON results (``benchmarks/results``, ``model_cards``) written before the library stopped recording paths
still name the author's folders (the absolute path of ``shared/data/calib``). This rewrites each such string value with
:func:`optimum_depth.privacy.public_name` (``calib``), in place and textually, so the files keep their layout and a
diff shows only the path values; no measured figure changes. Markdown files get the same treatment for the quoted
paths they list.

    .venv/bin/python scripts/scrub_local_paths.py benchmarks/results model_cards benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from optimum_depth.privacy import public_name

QUOTED_PATH = re.compile(r'"(/(?:work|tmp|home|root|Users|mnt|scratch|data)/[^"\s]*)"')


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def scrub_json(path: Path) -> int:
    """Rewrites every absolute-path string value of the JSON file ``path`` as its name; returns how many."""
    text = path.read_text(encoding="utf-8")
    local = sorted({s for s in _strings(json.loads(text)) if s.startswith("/")}, key=len, reverse=True)
    count = 0
    for value in local:
        quoted = json.dumps(value)
        count += text.count(quoted)
        text = text.replace(quoted, json.dumps(public_name(value)))
    if count:
        json.loads(text)  # still valid
        path.write_text(text, encoding="utf-8")
    return count


def scrub_markdown(path: Path) -> int:
    """Rewrites the quoted absolute paths of a markdown file as their names; returns how many."""
    text = path.read_text(encoding="utf-8")
    new, count = QUOTED_PATH.subn(lambda m: json.dumps(public_name(m.group(1))), text)
    if count:
        path.write_text(new, encoding="utf-8")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="Files or folders (JSON and markdown files are scrubbed).")
    args = parser.parse_args()
    for root in args.paths:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.suffix == ".json":
                count = scrub_json(path)
            elif path.suffix == ".md":
                count = scrub_markdown(path)
            else:
                continue
            if count:
                print(f"{path}: {count} path(s) replaced")


if __name__ == "__main__":
    main()
