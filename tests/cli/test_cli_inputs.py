"""Bad models and options given to the command line: one line on stderr, exit code 2, nothing written or changed.

On the real TinyStories checkpoint (copied, then broken): NaN weights, a weight of the wrong shape, an invalid or
missing ``config.json``, an empty folder, a pickled ``.bin`` checkpoint, a relative path that does not exist,
``--model .../config.json``, ``--limit nan``.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from optimum_depth.cli import main


@pytest.fixture
def checkpoint_copy(stories_path, tmp_path):
    copy = tmp_path / "stories"
    shutil.copytree(stories_path, copy)
    for path in copy.iterdir():
        path.chmod(0o644)
    return copy


def _snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _refused(argv, capsys, *fragments):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("optimum-depth")]
    assert "Traceback" not in err and len(ours) == 1, err
    for fragment in fragments:
        assert fragment in ours[0], err
    return ours[0]


def _edit_weights(checkpoint, edit):
    weights = load_file(checkpoint / "model.safetensors")
    edit(weights)
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("criterion", ["magnitude", "block_influence", "ppl", "taylor", "sleb", "angular"])
def test_a_nan_weight_is_refused_with_its_block_and_tensor(checkpoint_copy, tmp_path, capsys, criterion):
    def poison(weights):
        weights["model.layers.1.mlp.down_proj.weight"][0, 0] = float("nan")

    _edit_weights(checkpoint_copy, poison)
    before = _snapshot(checkpoint_copy)
    out = tmp_path / "out"
    argv = ["prune", "--model", str(checkpoint_copy), "--criterion", criterion, "--num-layers-to-remove", "1"]
    argv += ["--protect-first", "0", "--protect-last", "0", "--output-dir", str(out)]
    _refused(argv, capsys, "block 1 `mlp.down_proj.weight`", "NaN or infinite")
    assert not out.exists() and _snapshot(checkpoint_copy) == before


def test_a_nan_weight_is_refused_when_a_plan_is_applied(checkpoint_copy, tmp_path, capsys):
    _edit_weights(checkpoint_copy, lambda w: w["model.norm.weight"].__setitem__(0, float("inf")))
    plan = {"granularity": "block", "removed_blocks": [2], "source_num_hidden_layers": 5}
    plan["source_fingerprint"] = {"model_type": "llama", "hidden_size": 64, "vocab_size": 512}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / "out"
    argv = ["prune", "--model", str(checkpoint_copy), "--plan", str(tmp_path / "plan.json"), "--output-dir", str(out)]
    _refused(argv, capsys, "`model.norm.weight`")
    assert not out.exists()


def test_a_weight_of_the_wrong_shape_is_named(checkpoint_copy, tmp_path, capsys):
    def reshape(weights):
        weights["model.layers.2.mlp.up_proj.weight"] = torch.zeros(7, 3)

    _edit_weights(checkpoint_copy, reshape)
    out = tmp_path / "out"
    argv = ["prune", "--model", str(checkpoint_copy), "--num-layers-to-remove", "1", "--output-dir", str(out)]
    _refused(argv, capsys, "model.layers.2.mlp.up_proj.weight")
    assert not out.exists()


def test_an_invalid_config_json_is_named(checkpoint_copy, tmp_path, capsys):
    (checkpoint_copy / "config.json").write_text('{"model_type": "llama", "hidden_size": 64,')
    out = tmp_path / "out"
    for argv in (
        ["prune", "--model", str(checkpoint_copy), "--num-layers-to-remove", "1", "--output-dir", str(out)],
        ["evaluate", "--model", str(checkpoint_copy), "--output-dir", str(out)],
        ["card", str(checkpoint_copy)],
    ):
        _refused(argv, capsys, "config.json", "not valid JSON")
    assert not out.exists()


def test_an_empty_model_folder_is_not_a_checkpoint(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    line = _refused(["prune", "--model", str(empty), "--output-dir", str(out)], capsys, "not a model checkpoint")
    assert "it is empty" in line and "sentencepiece" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@pytest.mark.parametrize("name", ["stories-typo", "models/stories-typo", "./stories-typo", "~/stories-typo"])
def test_a_model_path_that_does_not_exist_is_one_line(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    line = _refused(["prune", "--model", name, "--output-dir", "out"], capsys, name)
    assert "does not exist" in line or "offline" in line
    assert list(tmp_path.iterdir()) == []


def test_the_config_file_given_instead_of_its_folder_is_explained(checkpoint_copy, tmp_path, capsys):
    config = checkpoint_copy / "config.json"
    line = _refused(["prune", "--model", str(config), "--output-dir", str(tmp_path / "out")], capsys, "config file")
    assert f"give its folder, {str(checkpoint_copy)!r}" in line


def test_a_pickled_checkpoint_that_is_not_plain_tensors_is_refused(checkpoint_copy, tmp_path, capsys):
    (checkpoint_copy / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("this would run",))

    torch.save({"model.embed_tokens.weight": Payload()}, checkpoint_copy / "pytorch_model.bin")
    out = tmp_path / "out"
    _refused(["prune", "--model", str(checkpoint_copy), "--output-dir", str(out)], capsys, "refusing to unpickle")
    assert not out.exists()


@pytest.mark.parametrize("limit", ["nan", "inf", "-3", "0", "abc"])
def test_a_zero_shot_limit_that_is_no_count_or_fraction_is_refused(stories_path, tmp_path, capsys, limit):
    argv = ["evaluate", "--model", str(stories_path), "--zero-shot", "piqa", "--limit", limit]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--output-dir", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--limit" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_without_tokenizer_says_so(checkpoint_copy, tmp_path, capsys):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (checkpoint_copy / name).unlink()
    out = tmp_path / "out"
    line = _refused(["prune", "--model", str(checkpoint_copy), "--output-dir", str(out)], capsys, "has no tokenizer")
    assert "tokenizer.save_pretrained" in line and not out.exists()
