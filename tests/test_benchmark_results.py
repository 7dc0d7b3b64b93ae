"""Results files behind the README's figures: present, readable, and free of this machine's absolute paths."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tiny_models import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_quickstart import public_text, public_values  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ABSOLUTE = re.compile(r"(?<![\w.~])/(?:work|tmp|home|root|usr|opt|var|mnt)/")
QUOTED_FILES = [  # the files the README and docs quote for the quickstart, recovery, BESA and distributed figures
    *sorted((RESULTS / "quickstart").glob("*.json")),
    RESULTS / "bench_recovery.json",
    RESULTS / "bench_besa.json",
    RESULTS / "bench_besa_e4.json",
    RESULTS / "fsdp_equivalence.json",
    RESULTS / "bench_scaling.json",
]


WORK, TMP = "/" + "work", "/" + "tmp"  # spelled apart: the repository itself holds no machine path


def test_public_text_keeps_file_names_only():
    printed = f"Removed [3] (calibration: {WORK}/shared/data/calib). Outputs in {TMP}/bench-x/quickstart-output/"
    assert public_text(printed) == "Removed [3] (calibration: calib). Outputs in quickstart-output"
    assert public_text("dense / pruned, tokens/s, ../shared/models/stories260K") == (
        "dense / pruned, tokens/s, ../shared/models/stories260K"
    )
    values = {"a": [f"{WORK}/x/y.json", 1], "b": {"c": f"{TMP}/z"}}
    assert public_values(values) == {"a": ["y.json", 1], "b": {"c": "z"}}


@pytest.mark.parametrize("path", QUOTED_FILES, ids=lambda p: p.name)
def test_quoted_results_files_exist_and_hold_no_machine_path(path):
    text = path.read_text()
    json.loads(text)
    assert not ABSOLUTE.search(text), ABSOLUTE.search(text)
