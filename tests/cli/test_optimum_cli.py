"""``optimum-cli depth`` is registered through optimum's command registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


def test_optimum_cli_depth_delegates_to_optimum_depth(tmp_path, stories_path):
    exe = shutil.which("optimum-cli") or os.path.join(os.path.dirname(sys.executable), "optimum-cli")
    if not os.path.exists(exe):
        pytest.skip("optimum-cli is not installed")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            exe,
            "depth",
            "prune",
            "--model",
            str(stories_path),
            "--num-layers-to-remove",
            "1",
            "--protect-first",
            "1",
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "model.safetensors").exists()
    bad = subprocess.run(
        [
            exe,
            "depth",
            "prune",
            "--model",
            str(stories_path),
            "--pruning-ratio",
            "2",
            "--output-dir",
            str(tmp_path / "bad"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "pruning_ratio" in bad.stderr and "Traceback" not in bad.stderr
