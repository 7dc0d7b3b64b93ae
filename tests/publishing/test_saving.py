"""Staged, safetensors-only saving that never touches the user's other files."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_depth import ConfigError, DepthPruner, DepthPruningConfig, OutputError, save_pruned_model
from optimum_depth.constants import MANIFEST_NAME, STAGING_MARKER
from optimum_depth.loading import load_pretrained_model
from optimum_depth.publishing.replacement import recover_interrupted_saves
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


USER_WEIGHT_LIKE_FILES = (
    "training_args.bin",
    "backup.ckpt",
    "sd_vae.safetensors",
    "optimizer.pt",
    "embeddings_cache.pt",
    "pytorch_model.bin",
    "model.ckpt",
)


def test_a_save_never_deletes_a_users_file_for_its_extension(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    for name in USER_WEIGHT_LIKE_FILES:
        (target / name).write_bytes(b"the user's own " + name.encode())
    save_pruned_model(make_tiny_model("llama"), target)
    save_pruned_model(make_tiny_model("qwen2"), target, max_shard_size="20KB")  # replaces the first checkpoint
    save_pruned_model(make_tiny_model("llama", num_hidden_layers=3), target)  # and again, unsharded
    for name in USER_WEIGHT_LIKE_FILES:
        assert (target / name).read_bytes() == b"the user's own " + name.encode(), name


def test_a_save_into_the_home_folder_keeps_its_weight_like_files(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "pytorch_model.bin").write_bytes(b"mine")
    (home / "model.ckpt").write_bytes(b"mine too")
    monkeypatch.setenv("HOME", str(home))
    save_pruned_model(make_tiny_model("llama"), "~")
    save_pruned_model(make_tiny_model("llama", num_hidden_layers=3), "~")
    assert (home / "pytorch_model.bin").read_bytes() == b"mine" and (home / "model.ckpt").read_bytes() == b"mine too"
    assert AutoModelForCausalLM.from_pretrained(home).config.num_hidden_layers == 3


def test_a_new_checkpoint_removes_what_the_earlier_save_wrote_and_nothing_else(tmp_path):
    target = tmp_path / "ckpt"
    model = make_tiny_model("qwen2")
    pruner = DepthPruner(DepthPruningConfig(criterion="magnitude", num_layers_to_remove=1, protect_first=0))
    pruner.prune(model)
    save_pruned_model(model, target, plan=pruner.last_plan, scores=pruner.last_scores, max_shard_size="20KB")
    shards = sorted(p.name for p in target.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (target / "model.safetensors.index.json").is_file()
    (target / "pruning_plan.json").write_text((target / "pruning_plan.json").read_text() + " ")  # the user edits it
    save_pruned_model(make_tiny_model("llama"), target)
    names = {p.name for p in target.iterdir()}
    assert "model.safetensors" in names
    assert not names & {*shards, "model.safetensors.index.json", "layer_scores.json"}  # the earlier save's
    assert "pruning_plan.json" in names  # changed since it was written: the user's now
    assert AutoModelForCausalLM.from_pretrained(target).config.num_hidden_layers == 6


def test_a_folder_without_manifest_loses_only_what_its_names_prove_ours(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        (target / name).write_bytes(b"old checkpoint")
    (target / "layer_scores.json").write_text(json.dumps({"record_type": "LayerScores"}))  # an older save's record
    (target / "pruning_plan.json").write_text(json.dumps({"my": "own notes"}))  # the user's file of that name
    (target / "README.md").write_text("my own readme")
    save_pruned_model(make_tiny_model("qwen2"), target)
    names = {p.name for p in target.iterdir()}
    assert {"model.safetensors", "README.md", "pytorch_model.bin", "pruning_plan.json"} <= names
    assert not names & {"model-00001-of-00002.safetensors", "model.safetensors.index.json", "layer_scores.json"}
    assert (target / "README.md").read_text() == "my own readme"


def test_writing_only_some_files_keeps_every_other_file_of_the_checkpoint(tmp_path):
    target = tmp_path / "ckpt"
    model = make_tiny_model("llama")
    pruner = DepthPruner(DepthPruningConfig(criterion="magnitude", num_layers_to_remove=1, protect_first=0))
    pruner.prune(model)
    save_pruned_model(model, target, plan=pruner.last_plan, scores=pruner.last_scores, config=pruner.config)
    before = _snapshot(target)
    write_into_directory(target, lambda staging: (staging / "README.md").write_text("card"))  # what `card` does
    after = _snapshot(target)
    assert after.pop("README.md") == b"card"
    assert {k: v for k, v in after.items() if k != MANIFEST_NAME} == {
        k: v for k, v in before.items() if k != MANIFEST_NAME
    }
    save_pruned_model(model, target)  # a whole new checkpoint: the earlier save's card and records go
    assert not {"README.md", "pruning_plan.json", "layer_scores.json"} & {p.name for p in target.iterdir()}


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


# ------------------------------------------------------------------------------------ replacing a checkpoint at once
def _old_and_new(tmp_path):
    """A folder holding a 6-block checkpoint (and a user file), and the 4-block model that will replace it."""
    target = tmp_path / "ckpt"
    old = make_tiny_model("llama", seed=0)
    save_pruned_model(old, target)
    (target / "notes.txt").write_text("mine")
    new = make_tiny_model("llama", seed=1, num_hidden_layers=4)
    return target, old, new


def _logits(model):
    with torch.no_grad():
        return model(random_ids(1, 6)).logits


@pytest.mark.parametrize("direction", ["in", "out"])
def test_a_failed_move_puts_the_old_checkpoint_back(tmp_path, monkeypatch, direction):
    target, old, new = _old_and_new(tmp_path)
    before = _snapshot(target)
    real_replace = os.replace
    refused = []

    def refusing(src, dst):
        moved = Path(dst) if direction == "in" else Path(src)
        if moved == target / "model.safetensors" and not refused:  # the first attempt only (not the roll-back)
            refused.append(moved)
            raise PermissionError(errno.EACCES, "Permission denied", str(moved))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refusing)
    with pytest.raises(OutputError, match="permission denied") as info:
        save_pruned_model(new, target)
    monkeypatch.undo()
    assert "\n" not in str(info.value) and "Nothing was changed" in str(info.value)
    assert _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(target)), _logits(old))


def test_a_full_disk_is_one_clear_error_and_changes_nothing(tmp_path, monkeypatch):
    target, _, new = _old_and_new(tmp_path)
    before = _snapshot(target)

    def full_disk(self, save_directory, **kwargs):
        (Path(save_directory) / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(new), "save_pretrained", full_disk)
    with pytest.raises(OutputError, match="no space left on the device"):
        save_pruned_model(new, target)
    assert _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_parent_that_cannot_be_written_stages_inside_the_target(tmp_path, monkeypatch):
    target, _, new = _old_and_new(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode))
    real_mkdir = Path.mkdir
    made = []

    def recording_mkdir(self, *args, **kwargs):
        made.append(self)
        if self.parent == tmp_path and STAGING_MARKER in self.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", recording_mkdir)
    save_pruned_model(new, target)
    monkeypatch.undo()
    assert any(p.parent == target and STAGING_MARKER in p.name for p in made)  # staged inside the target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert not any(STAGING_MARKER in p.name for p in target.iterdir())
    assert AutoModelForCausalLM.from_pretrained(target).config.num_hidden_layers == 4


def _kill_save_after(target, new, moves, tmp_path):
    """Saves ``new`` into ``target`` in a forked process, which is killed (SIGKILL) right after its ``moves``-th move.

    Returns:
        ``False`` when the save needed fewer moves (it completed), else ``True``.
    """
    marker = tmp_path / f"stopped-{moves}"
    pid = os.fork()
    if pid == 0:  # the child: count the moves into and out of the folder, stop after the chosen one
        try:
            real_replace, done = os.replace, []

            def replace(src, dst):
                real_replace(src, dst)
                if target in (Path(src).parent, Path(dst).parent):
                    done.append(dst)
                    if len(done) == moves:
                        marker.write_text("stopped")
                        time.sleep(600)

            os.replace = replace
            save_pruned_model(new, target)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 120
    while not marker.exists():
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return False
        assert time.monotonic() < deadline, "the save never reached its move"
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return True


def _loads_as(target, old, new):
    """What plain transformers makes of the folder: 'old', 'new' or 'none' (no config.json: nothing loads)."""
    if not (target / "config.json").is_file():
        return "none"
    loaded = AutoModelForCausalLM.from_pretrained(target)
    state = {6: "old", 4: "new"}[loaded.config.num_hidden_layers]
    torch.testing.assert_close(_logits(loaded), _logits(old if state == "old" else new))  # not a mix of both
    return state


def test_a_save_killed_between_any_two_moves_leaves_the_old_or_the_new_checkpoint(tmp_path):
    target, old, new = _old_and_new(tmp_path)
    before = _snapshot(target)
    seen = []
    for moves in range(1, 40):
        if moves > 1:  # start each round from the old checkpoint again
            shutil.rmtree(target)
            target.mkdir()
            for name, data in before.items():
                (target / name).write_bytes(data)
        if not _kill_save_after(target, new, moves, tmp_path):
            break
        state = _loads_as(target, old, new)  # right after the kill, nothing repaired yet
        seen.append(state)
        # The library's next load repairs the folder: the old checkpoint, or the new one once it was complete.
        repaired = load_pretrained_model(target)
        torch.testing.assert_close(_logits(repaired), _logits(new if state == "new" else old))
        assert (target / "notes.txt").read_text() == "mine"
        assert not any(STAGING_MARKER in p.name for p in tmp_path.iterdir())
        if state != "new":
            assert _snapshot(target) == before
    assert seen[-1] == "new" and seen.count("none") >= 5  # killed between every two moves, then after the last


def test_the_next_save_beside_a_killed_one_puts_its_old_checkpoint_back(tmp_path):
    target, old, new = _old_and_new(tmp_path)
    before = _snapshot(target)
    assert _kill_save_after(target, new, 5, tmp_path)  # the old files are out, one new file is in
    assert not (target / "config.json").exists()
    save_pruned_model(make_tiny_model("qwen2"), tmp_path / "another")  # a save into the same parent folder
    assert _snapshot(target) == before
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(target)), _logits(old))


def test_a_save_staged_by_another_machine_is_left_alone(tmp_path):
    """On a shared file system a pid means nothing across machines: another host's save is never rolled back."""
    target, _, new = _old_and_new(tmp_path)
    assert _kill_save_after(target, new, 5, tmp_path)
    staging = next(p for p in tmp_path.iterdir() if STAGING_MARKER in p.name)
    (staging / "host").write_text("another-machine")
    assert recover_interrupted_saves(target) == []
    assert staging.is_dir() and not (target / "config.json").exists()
    (staging / "host").unlink()  # this machine's after all (or an older save without the host file)
    assert recover_interrupted_saves(target) == [staging]
    assert (target / "config.json").is_file() and not staging.exists()
