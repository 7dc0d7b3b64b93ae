"""Where the command line writes: the user's files survive, a place that cannot be written is one line and exit 2.

On the real TinyStories checkpoint: ``prune --overwrite`` into a folder of weight-like files, ``card`` on a pruned
checkpoint, a read-only output folder, a writable one inside a read-only parent, a full disk, ``~/pruned``.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest
from transformers import AutoModelForCausalLM, PreTrainedModel

from optimum_depth.cli import main
from optimum_depth.constants import MANIFEST_NAME, STAGING_MARKER

from unprivileged import run_cli_respecting_permissions

WEIGHT_LIKE = ("training_args.bin", "backup.ckpt", "sd_vae.safetensors", "optimizer.pt", "embeddings_cache.pt")


def _snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _one_line(err: str) -> str:
    ours = [line for line in err.splitlines() if line.startswith("optimum-depth")]
    assert "Traceback" not in err and len(ours) == 1, err
    return ours[0]


def _prune(model, out, *extra):
    return [
        "prune",
        "--model",
        str(model),
        "--criterion",
        "magnitude",
        "--protect-first",
        "0",
        "--protect-last",
        "0",
        "--compensation",
        "none",
        "--no-plot",
        "--output-dir",
        str(out),
        *extra,
    ]


def test_prune_overwrite_keeps_the_users_weight_like_files(stories_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in WEIGHT_LIKE:
        (out / name).write_bytes(name.encode())
    assert main(_prune(stories_path, out, "--num-layers-to-remove", "1", "--overwrite")) == 0
    assert main(_prune(stories_path, out, "--num-layers-to-remove", "2", "--overwrite")) == 0
    for name in WEIGHT_LIKE:
        assert (out / name).read_bytes() == name.encode(), name
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 3


def test_card_keeps_every_record_of_the_checkpoint(stories_path, tmp_path):
    out = tmp_path / "out"
    with_plot = [a for a in _prune(stories_path, out, "--num-layers-to-remove", "1") if a != "--no-plot"]
    assert main(with_plot) == 0
    before = {k: v for k, v in _snapshot(out).items() if k != MANIFEST_NAME}
    assert {"pruning_plan.json", "layer_scores.json", "layer_scores.png", "depth_pruning_config.json"} <= set(before)
    assert main(["card", str(out)]) == 0
    after = {k: v for k, v in _snapshot(out).items() if k != MANIFEST_NAME}
    card = after.pop("README.md").decode()
    assert after == before
    assert "`pruning_plan.json`" in card and MANIFEST_NAME not in card


def test_a_read_only_output_folder_is_one_line_and_left_alone(stories_path, tmp_path):
    out = tmp_path / "read-only"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    os.chmod(out, 0o555)
    try:
        result = run_cli_respecting_permissions(
            _prune(stories_path, out, "--num-layers-to-remove", "1", "--overwrite")
        )
    finally:
        os.chmod(out, 0o755)
    assert result.returncode == 2, result.stderr[-3000:]
    line = _one_line(result.stderr)
    assert str(out) in line and "permission denied" in line
    assert _snapshot(out) == {"notes.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["read-only"]


def test_a_writable_output_folder_inside_a_read_only_parent_is_written(stories_path, tmp_path):
    parent = tmp_path / "locked"
    out = parent / "out"
    out.mkdir(parents=True)
    os.chmod(parent, 0o555)
    try:
        result = run_cli_respecting_permissions(_prune(stories_path, out, "--num-layers-to-remove", "1"))
    finally:
        os.chmod(parent, 0o755)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in parent.iterdir()) == ["out"]
    assert not any(STAGING_MARKER in p.name for p in out.iterdir())
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4
    assert stat.S_IMODE(parent.stat().st_mode) == 0o755


def test_a_missing_output_folder_under_a_read_only_parent_is_refused_before_any_work(stories_path, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    os.chmod(parent, 0o555)
    try:
        result = run_cli_respecting_permissions(_prune(stories_path, parent / "out", "--num-layers-to-remove", "1"))
    finally:
        os.chmod(parent, 0o755)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "is not writable" in _one_line(result.stderr)
    assert list(parent.iterdir()) == []


def test_a_full_disk_is_one_line_and_leaves_the_output_as_it_was(stories_path, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(_prune(stories_path, out, "--num-layers-to-remove", "1")) == 0
    before = _snapshot(out)

    def full_disk(self, save_directory, **kwargs):
        (save_directory / "model.safetensors").write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    capsys.readouterr()
    assert main(_prune(stories_path, out, "--num-layers-to-remove", "2", "--overwrite")) == 2
    assert "no space left on the device" in _one_line(capsys.readouterr().err)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_tilde_output_folder_is_the_users_home(stories_path, tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert main(_prune(stories_path, "~/pruned", "--num-layers-to-remove", "1")) == 0
    assert (home / "pruned" / "model.safetensors").is_file()
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("command", ["score", "evaluate"])
def test_other_commands_expand_the_tilde_too(stories_path, tmp_path, monkeypatch, command):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    argv = [command, "--model", str(stories_path), "--output-dir", "~/out"]
    argv += ["--criterion", "block_influence", "--no-plot"] if command == "score" else ["--max-windows", "1"]
    assert main(argv) == 0
    assert (home / "out").is_dir() and not (tmp_path / "~").exists()
