"""Staged, safetensors-only saving that never touches the user's other files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_depth import ConfigError, save_pruned_model
from optimum_depth.constants import STAGING_MARKER
from optimum_depth.publishing.saving import write_into_directory

from tiny_models import make_tiny_model, random_ids


def _snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _user_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    os.chmod(folder, 0o755)


def test_saving_into_a_folder_keeps_the_users_files_and_permissions(tmp_path):
    target = tmp_path / "ckpt"
    _user_files(target)
    model = make_tiny_model("llama")
    save_pruned_model(model, target)
    assert (target / "notes.txt").read_text() == "my notes"
    assert (target / "sub" / "data.csv").read_text() == "a,b\n1,2\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    ids = random_ids(1, 6)
    with torch.no_grad():
        reloaded = AutoModelForCausalLM.from_pretrained(target)
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
    assert not any(STAGING_MARKER in p.name for p in tmp_path.iterdir())


def test_saving_into_the_working_folder_keeps_its_files(tmp_path, monkeypatch):
    _user_files(tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    save_pruned_model(make_tiny_model("qwen2"), ".")
    assert (tmp_path / "work" / "notes.txt").read_text() == "my notes"
    assert (tmp_path / "work" / "model.safetensors").is_file()


def test_a_new_folder_gets_the_default_permissions(tmp_path):
    save_pruned_model(make_tiny_model("llama"), tmp_path / "a" / "b")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o777 & ~umask


def test_interrupted_write_leaves_the_previous_checkpoint_intact(tmp_path):
    target = tmp_path / "ckpt"
    save_pruned_model(make_tiny_model("llama"), target)
    (target / "notes.txt").write_text("keep")
    before = _snapshot(target)

    def failing_write(staging):
        (staging / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_into_directory(target, failing_write, replaces_checkpoint=True)
    assert _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging folder left behind


def test_interrupted_first_write_leaves_nothing(tmp_path):
    def failing_write(staging):
        (staging / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_into_directory(tmp_path / "new", failing_write)
    assert list(tmp_path.iterdir()) == []


def test_a_new_checkpoint_replaces_the_old_weights_and_records_but_nothing_else(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        (target / name).write_bytes(b"old checkpoint")
    (target / "layer_scores.json").write_text("{}")  # a record of the old checkpoint
    (target / "README.md").write_text("my own readme")
    save_pruned_model(make_tiny_model("qwen2"), target)
    names = {p.name for p in target.iterdir()}
    assert "model.safetensors" in names and "README.md" in names
    assert not names & {"model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin"}
    assert "layer_scores.json" not in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)


def test_refuses_a_file_as_target_or_on_its_path_before_writing(tmp_path):
    (tmp_path / "afile").write_text("x")
    model = make_tiny_model("llama")
    with pytest.raises(ConfigError, match="not a directory"):
        save_pruned_model(model, tmp_path / "afile")
    with pytest.raises(ConfigError, match="'afile' is a file|afile.*is a file"):
        save_pruned_model(model, tmp_path / "afile" / "sub")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert (tmp_path / "afile").read_text() == "x"


def test_refuses_pickled_weights(tmp_path):
    def pickled(staging):
        torch.save({"w": torch.zeros(1)}, staging / "pytorch_model.bin")

    with pytest.raises(RuntimeError, match="pickled"):
        write_into_directory(tmp_path / "out", pickled)
    assert list(tmp_path.iterdir()) == []


def test_a_staging_folder_of_a_killed_save_is_removed_by_the_next_save(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".ckpt{STAGING_MARKER}{int(dead.stdout)}-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    alive = tmp_path / f".other{STAGING_MARKER}{os.getpid()}-cafecafe"  # a save still running: left alone
    alive.mkdir()
    save_pruned_model(make_tiny_model("llama"), tmp_path / "ckpt")
    assert not stale.exists() and alive.exists()
