"""The command line on bad or broken input: one line and exit 2, Ctrl-C is exit 130, bugs keep their traceback.

Checked on the real TinyStories checkpoint: a checkpoint with a deleted layer, a truncated weight file, a plan made
for another model. Each is refused before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

from optimum_depth.cli import main
from optimum_depth.cli.evaluate import _limit


@pytest.fixture
def checkpoint_copy(stories_path, tmp_path):
    copy = tmp_path / "stories"
    shutil.copytree(stories_path, copy)
    return copy


def _refused(argv, capsys, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("optimum-depth")]  # not transformers' progress bars
    assert "Traceback" not in err and len(ours) == 1, err
    for fragment in fragments:
        assert fragment in ours[0], err
    return ours[0]


def test_a_checkpoint_with_a_deleted_layer_is_refused_by_prune_and_evaluate(checkpoint_copy, tmp_path, capsys):
    weights = load_file(checkpoint_copy / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("model.layers.1.")}
    save_file(kept, checkpoint_copy / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    prune = ["prune", "--model", str(checkpoint_copy), "--num-layers-to-remove", "1", "--output-dir", str(out)]
    _refused(prune, capsys, "missing keys", "model.layers.1.")
    _refused(["evaluate", "--model", str(checkpoint_copy), "--output-dir", str(out)], capsys, "model.layers.1.")
    assert not out.exists()


def test_a_truncated_weight_file_is_named(checkpoint_copy, tmp_path, capsys):
    path = checkpoint_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    out = tmp_path / "out"
    prune = ["prune", "--model", str(checkpoint_copy), "--num-layers-to-remove", "1", "--output-dir", str(out)]
    _refused(prune, capsys, "model.safetensors", "Corrupt or truncated")
    assert not out.exists()


STORIES_FINGERPRINT = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 172,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 512,
}


def test_a_plan_made_for_another_model_is_refused(stories_path, tmp_path, capsys):
    plan = {"granularity": "block", "removed_blocks": [2], "source_num_hidden_layers": 6}
    plan["source_fingerprint"] = STORIES_FINGERPRINT
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / "out"
    argv = ["prune", "--model", str(stories_path), "--plan", str(tmp_path / "plan.json"), "--output-dir", str(out)]
    _refused(argv, capsys, "6 original blocks")
    (tmp_path / "legacy.json").write_text(json.dumps({**plan, "source_num_hidden_layers": None}))
    argv[4] = str(tmp_path / "legacy.json")
    _refused(argv, capsys, "source_num_hidden_layers")
    assert not out.exists()


def test_a_plan_for_a_model_of_another_width_or_without_fingerprint_is_refused(stories_path, tmp_path, capsys):
    plan = {"granularity": "block", "removed_blocks": [2], "source_num_hidden_layers": 5}
    wider = {**STORIES_FINGERPRINT, "hidden_size": 128, "intermediate_size": 344}
    (tmp_path / "wider.json").write_text(json.dumps({**plan, "source_fingerprint": wider}))
    (tmp_path / "bare.json").write_text(json.dumps(plan))  # the fingerprint edited out by hand
    out = tmp_path / "out"
    argv = ["prune", "--model", str(stories_path), "--plan", str(tmp_path / "wider.json"), "--output-dir", str(out)]
    _refused(argv, capsys, "hidden_size: plan 128 vs model 64")
    argv[4] = str(tmp_path / "bare.json")
    _refused(argv, capsys, "no `source_fingerprint`", "another width")
    (tmp_path / "right.json").write_text(json.dumps({**plan, "source_fingerprint": STORIES_FINGERPRINT}))
    argv[4] = str(tmp_path / "right.json")
    assert main([*argv, "--compensation", "none"]) == 0  # the same plan, made for this model, applies
    assert not (out / "pruning_plan.json").read_text().count("/")  # no path in what it wrote


def test_a_pruning_ratio_that_rounds_to_no_block_is_refused_and_far_roundings_are_warned(
    stories_path, tmp_path, capsys, caplog
):
    out = tmp_path / "out"
    argv = ["prune", "--model", str(stories_path), "--criterion", "block_influence", "--output-dir", str(out)]
    _refused(
        [*argv, "--pruning-ratio", "0.01"], capsys, "pruning_ratio=0.01 of 5 candidates is 0.05", "rounds to none"
    )
    assert not out.exists()
    assert main([*argv, "--pruning-ratio", "0.3", "--compensation", "none"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "pruning_ratio=0.3" in r.getMessage()]
    assert warnings == ["pruning_ratio=0.3 of 5 blocks removes 2 of them (40%, not 30%): whole blocks only."]


def test_ctrl_c_is_one_line_exit_130_and_leaves_nothing(stories_path, tmp_path, capsys, monkeypatch):
    from optimum_depth.pruner import DepthPruner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DepthPruner, "score", interrupted)
    out = tmp_path / "out"
    argv = ["prune", "--model", str(stories_path), "--criterion", "block_influence", "--num-layers-to-remove", "1"]
    assert main([*argv, "--output-dir", str(out)]) == 130
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("optimum-depth")]
    assert "Traceback" not in err and len(ours) == 1 and "interrupted" in ours[0]
    assert list(tmp_path.iterdir()) == []


def test_an_internal_error_keeps_its_traceback_and_exit_code_1(tmp_path):
    code = (
        "import sys; from optimum_depth.cli import main, score; "
        "score.compute_scores = lambda *args: (_ for _ in ()).throw(RuntimeError('a bug')); "
        f"sys.exit(main(['score', '--output-dir', {str(tmp_path / 'out')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr


def test_zero_shot_limit_takes_document_counts_and_fractions():
    assert _limit("2") == 2 and isinstance(_limit("2"), int)
    assert _limit("200") == 200 and _limit("0.5") == 0.5


def test_every_option_has_help_and_closed_sets_list_their_choices():
    from optimum_depth.cli.main import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    prune_help = subparsers.choices["prune"].format_help()
    assert "{magnitude,taylor,ppl,block_influence,angular,sleb,auto,finercut}" in prune_help
    assert "{none,linear_ls,linear_cosine,reconstruct}" in prune_help
