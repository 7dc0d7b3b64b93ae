"""Atomic, safetensors-only checkpoint writing."""

from __future__ import annotations

import pytest

from optimum_depth import save_pruned_model
from optimum_depth.saving import atomic_directory_write

from tiny_models import make_tiny_model


def _listing(path):
    return sorted(p.name for p in path.iterdir())


def test_interrupted_write_leaves_the_previous_checkpoint_intact(tmp_path):
    target = tmp_path / "ckpt"
    save_pruned_model(make_tiny_model("llama"), target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def failing_write(tmp):
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_directory_write(target, failing_write)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert _listing(tmp_path) == ["ckpt"]  # no temporary directory left behind


def test_interrupted_first_write_leaves_nothing(tmp_path):
    def failing_write(tmp):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_directory_write(tmp_path / "new", failing_write)
    assert _listing(tmp_path) == []


def test_replaces_existing_directory_and_writes_only_safetensors(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old pickle")
    save_pruned_model(make_tiny_model("qwen2"), target)
    names = _listing(target)
    assert "stale.bin" not in names and "model.safetensors" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)


def test_refuses_a_file_as_target(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        save_pruned_model(make_tiny_model("llama"), tmp_path / "file")
