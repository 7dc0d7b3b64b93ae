"""The test session itself leaves nothing behind in the temporary folder (its Hugging Face home is removed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_a_test_session_removes_its_temporary_folders(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "base")]
    command.append(f"{TESTS / 'test_config.py'}::test_defaults_follow_shortened_llama_plus_heuristic")
    result = subprocess.run(command, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(temp.iterdir()) == []
