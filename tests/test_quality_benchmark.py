"""The quality benchmark's harness: portable records, BOS per training block, per-model sizes, the paired report."""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality import protocol, report  # noqa: E402
from benchmarks.quality.models import MODELS  # noqa: E402
from benchmarks.quality.recovery import with_bos_per_block  # noqa: E402

from optimum_depth.loading import cache_dir  # noqa: E402
from optimum_depth.training.recovery_data import IGNORE_INDEX, PackedDataset  # noqa: E402

QUALITY_RESULTS = ROOT / "benchmarks" / "results" / "quality"


def test_records_lose_every_machine_path():
    record = {
        "calibration": str(protocol.DATA / "calib" / "c4_demo_llamafactory.jsonl"),
        "nested": [{"path": f"{protocol.DATA}/ptb/ptb.test.txt"}, 3, None],
        "model": str(cache_dir() / "gemma-3-270m-Q4_K_M"),
        "message": f"read {protocol.ROOT}/benchmarks/x.json",
    }
    clean = protocol.portable(record)
    assert clean == {
        "calibration": "shared/data/calib/c4_demo_llamafactory.jsonl",
        "nested": [{"path": "shared/data/ptb/ptb.test.txt"}, 3, None],
        "model": "$OPTIMUM_DEPTH_CACHE/gemma-3-270m-Q4_K_M",
        "message": "read ./benchmarks/x.json",
    }
    assert protocol.data_name(protocol.C4_FILE) == "shared/data/c4/c4_validation_2k.jsonl"


def test_committed_quality_results_hold_no_absolute_path():
    roots = {str(protocol.ROOT), str(protocol.DATA), str(Path.home()), "/tmp/"}
    for path in QUALITY_RESULTS.rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        found = [root for root in roots if root in text]
        assert not found, f"{path.relative_to(ROOT)} holds machine paths {found}"


def test_bos_is_prepended_to_every_training_block_and_not_supervised():
    data = PackedDataset(torch.arange(12).view(3, 4), torch.arange(12).view(3, 4))
    with_bos = with_bos_per_block(data, bos_token_id=2)
    assert with_bos.input_ids.shape == (3, 5) and (with_bos.input_ids[:, 0] == 2).all()
    assert (with_bos.labels[:, 0] == IGNORE_INDEX).all()
    assert torch.equal(with_bos.input_ids[:, 1:], data.input_ids)


def test_block_counts_match_twenty_and_thirty_five_percent():
    assert MODELS["smollm2-135m"].block_targets == {"b06": 6, "b11": 11}
    gemma = MODELS["gemma3-270m"]
    assert gemma.table == "quality/gemma3-270m" and gemma.small == "b04"
    for percent, removed in zip((0.20, 0.35), gemma.block_targets.values(), strict=True):
        assert removed == round(percent * 18)  # 3.6 -> 4, 6.3 -> 6


def _run(run_id: str, accuracy: str | None, zero_shot: bool = True) -> dict:
    tasks = report.TASKS
    record = {
        "run_id": run_id,
        "method": {"name": run_id, "num_blocks_removed": 0},
        "metrics": {"perplexity": {"wikitext2": 10.0, "ptb": 20.0}},
        "details": {"validation_perplexity": {"c4": 1.0}},
    }
    if zero_shot:
        outcomes = accuracy or "1" * 100
        acc = outcomes.count("1") / len(outcomes)
        record["metrics"]["zero_shot"] = {t: {"acc": acc, "acc_stderr": 0.05} for t in tasks}
        if accuracy is not None:
            record["details"]["zero_shot_documents"] = {t: {"fingerprint": t, "acc": outcomes} for t in tasks}
    return record


def test_report_uses_the_paired_test_and_falls_back_to_independent_binomials():
    dense = _run("dense", "1" * 60 + "0" * 40)
    lost = _run("lost", "0" * 5 + "1" * 55 + "0" * 40)  # 5 of 100 lost in every task, none gained
    same = _run("same", "1" * 60 + "0" * 40)
    old = _run("old", None)
    assert report.paired_mean(lost, dense).verdict == "-"
    assert report._accuracy_cell(lost, dense).endswith("(-)")
    assert report._accuracy_cell(same, dense).endswith("(=)")
    assert report._difference_cell(same, dense) == "+0.0 ± 0.0"
    assert report._accuracy_cell(old, dense).endswith("indep.)")  # no outcomes: the old, independent test
    assert report._difference_cell(old, dense).startswith("not paired")
    # 5 losses out of 100 are within two independent standard errors (0.05 each), not within the paired one
    independent = copy.deepcopy(lost)
    del independent["details"]["zero_shot_documents"]
    assert report._accuracy_cell(independent, dense).endswith("(= indep.)")
    table = report.zero_shot_table({"dense": dense, "lost": lost})
    assert "(-)" in table[-1] and "(" not in table[-2].split("|")[2]


def test_report_calibration_cells():
    aware = {
        "method": {"name": "aware"},
        "details": {"compensation": {"settings": {"selection_samples": 64, "num_samples": 256}}},
    }
    ls = {"method": {"name": "linear_ls"}, "details": {"compensation": {"settings": {"num_samples": 256}}}}
    plain = {"method": {"name": "plain"}, "details": {"compensation": None}}
    assert report.calibration_cell(aware) == "64 select + 256 fit"
    assert report.calibration_cell(ls) == "10 score + 256 fit"
    assert report.calibration_cell(plain) == "10 score"


@pytest.mark.skipif(not (QUALITY_RESULTS / "dense.json").exists(), reason="no committed quality results")
def test_the_committed_report_is_what_the_files_give(tmp_path):
    shutil.copytree(QUALITY_RESULTS, tmp_path / "quality", ignore=shutil.ignore_patterns("*.lock", "*.partial"))
    text = report.write_report(tmp_path)
    assert text == (QUALITY_RESULTS / "README.md").read_text(encoding="utf-8")
    assert json.loads((QUALITY_RESULTS / "dense.json").read_text())["model"]["name"]
