"""The compensation fitted on rank 0 reaches every rank through ``optimum_depth.ranks.decide_on_main_rank``."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from main_rank_script import own_result  # tests/compensation is on sys.path (rootdir conftest)

# the module, not the function the package exports under the same name
compensate_module = importlib.import_module("optimum_depth.compensation.compensate")

SCRIPT = Path(__file__).with_name("main_rank_script.py")


def test_every_rank_gets_rank0_maps_and_trained_blocks_and_its_error(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT)]
    ranks = [
        subprocess.Popen([*command, str(r), str(tmp_path / "store"), str(tmp_path)], env=env, stderr=subprocess.PIPE)
        for r in (0, 1)
    ]
    for process in ranks:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    failures = (rank0.pop("failure"), rank1.pop("failure"))
    assert rank0 == rank1  # maps, trained blocks (bf16 and integer tensors, dtypes kept) and record of rank 0
    assert rank0["record"]["calibration"] == {"source": "rank 0"} and rank0["record"]["settings"]["seed"] == 0
    assert rank0["dtypes"] == ["torch.float64"] * 2
    assert [s for s, _ in rank1["states"][0].values()] == ["torch.bfloat16", "torch.int64"]
    assert rank1["states"][0]["steps"][1] == [0, 7] and rank1["record"]["reconstruction"]["steps"] == 10
    assert failures == (
        "ConfigError: rank 0 cannot fit",
        "RuntimeError: Rank 0 failed while fitting the compensation: ConfigError: rank 0 cannot fit",
    )


def test_compensation_uses_the_one_rank_helper(monkeypatch):
    """No broadcast of its own: the one low-level helper of optimum_depth.ranks serves compensation too."""
    calls = []

    def spy(decide, to_json, from_json, action, tensors=None):
        calls.append(action)
        result = decide()
        return from_json(json.loads(json.dumps(to_json(result))), [t.clone() for t in tensors(result)])

    monkeypatch.setattr(compensate_module, "decide_on_main_rank", spy)
    sent = own_result(0)
    received = compensate_module.on_main_rank(lambda: sent)
    assert calls == ["fitting the compensation"]
    assert received.record() == sent.record() and received is not sent
    assert all(torch.equal(a.transform, b.transform) for a, b in zip(received.maps, sent.maps, strict=True))
    for got, want in zip(received.trained[0].states, sent.trained[0].states, strict=True):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
