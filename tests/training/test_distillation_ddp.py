"""Compensation and distillation under real 2-process DDP (gloo on CPU, accelerate launch)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_callback_ddp import free_port  # tests/training is on sys.path (rootdir conftest)

SCRIPT = Path(__file__).with_name("ddp_distillation_script.py")


@pytest.mark.slow
def test_rank0_compensation_wins_and_kd_trains_identical_ranks(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(SCRIPT), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == 2 and rank0["wrapper"] == "DistributedDataParallel"
    # The ranks saw different calibration text, yet hold rank 0's maps: the fit was broadcast.
    assert rank0["calibration_sha256"] != rank1["calibration_sha256"]
    assert rank0["compensated_sha256"] == rank1["compensated_sha256"]
    assert rank0["maps"] == rank1["maps"]
    # Distillation under DDP: both ranks end with the same student; the teacher is untouched and frozen.
    assert rank0["student_sha256"] == rank1["student_sha256"]
    for report in (rank0, rank1):
        assert report["teacher_unchanged"] and not report["teacher_requires_grad"]
        assert len(report["losses"]) == 3 and all(math.isfinite(loss) for loss in report["losses"])
