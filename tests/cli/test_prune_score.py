"""``optimum-depth score`` / ``prune`` on the real tiny TinyStories Llama, including user mistakes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_depth import DepthPruningConfig, PrunedLlamaConfig
from optimum_depth.cli import main


@pytest.fixture
def model_path(stories_path):
    return str(stories_path)


def test_prune_writes_a_native_checkpoint_with_plan_scores_and_plot(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "prune",
            "--model",
            model_path,
            "--num-layers-to-remove",
            "1",
            "--protect-first",
            "1",
            "--protect-last",
            "1",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "pruning_plan.json",
        "layer_scores.json",
        "layer_scores.png",
        "depth_pruning_config.json",
    } <= names
    plan = json.loads((out / "pruning_plan.json").read_text())
    config = PrunedLlamaConfig.from_pretrained(out)
    assert config.surviving_layers == [i for i in range(5) if i not in plan["removed_blocks"]]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4
    assert "Removed blocks" in capsys.readouterr().out


def test_score_then_prune_from_the_saved_plan_and_config(model_path, tmp_path):
    scored = tmp_path / "scored"
    assert (
        main(
            [
                "score",
                "--model",
                model_path,
                "--criterion",
                "magnitude",
                "--num-layers-to-remove",
                "2",
                "--protect-first",
                "1",
                "--protect-last",
                "0",
                "--output-dir",
                str(scored),
            ]
        )
        == 0
    )
    plan = json.loads((scored / "pruning_plan.json").read_text())
    assert len(plan["removed_blocks"]) == 2
    pruned = tmp_path / "pruned"
    assert (
        main(
            [
                "prune",
                "--model",
                model_path,
                "--config",
                str(scored),
                "--plan",
                str(scored / "pruning_plan.json"),
                "--output-dir",
                str(pruned),
            ]
        )
        == 0
    )
    model = AutoModelForCausalLM.from_pretrained(pruned)
    assert model.config.surviving_layers == [i for i in range(5) if i not in plan["removed_blocks"]]
    assert torch.isfinite(model(torch.tensor([[1, 5, 9]])).logits).all()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-layers-to-remove", "9"], "Cannot remove 9"),
        (["--pruning-ratio", "1.5"], "pruning_ratio"),
        (["--criterion", "nope"], "criterion"),
        (["--num-layers-to-remove", "3", "--protect-first", "2", "--protect-last", "2"], "unprotected"),
        (["--config", "/nonexistent/cfg.json"], "No DepthPruningConfig"),
        (["--model", "/nonexistent/model"], "does not exist"),
    ],
)
def test_user_mistakes_exit_2_without_traceback_or_output(model_path, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    args = ["prune", "--model", model_path, *argv, "--output-dir", str(out)]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse refuses an option outside its choices itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_never_clobbered_without_overwrite(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    argv = [
        "prune",
        "--model",
        model_path,
        "--num-layers-to-remove",
        "1",
        "--protect-first",
        "1",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert main([*argv, "--overwrite"]) == 0  # writes its own files into the folder, keeps the others
    assert (out / "keep.txt").read_text() == "precious" and (out / "model.safetensors").exists()


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_prune_defaults_to_auto_with_reconstruction(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", "--model", model_path, "--num-layers-to-remove", "1", "--output-dir", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.pruning["criterion"] == "auto"
    compensation = model.config.pruning["compensation"]
    assert compensation["method"] == "reconstruct" and len(compensation["maps"]) == 1
    assert len(compensation["reconstruction"]["cuts"]) == 1
    chosen = json.loads((out / "pruning_plan.json").read_text())["reason"]["auto"]["chosen"]
    assert f"auto: {chosen} + reconstruct compensation" in capsys.readouterr().out
    card_lines = json.loads((out / "layer_scores.json").read_text())["extra"]["auto"]["candidates"]
    assert chosen in card_lines


def test_prune_skips_the_default_compensation_without_calibration_text_or_with_a_config(model_path, tmp_path, caplog):
    selfgen = tmp_path / "self"
    argv = ["prune", "--model", model_path, "--num-layers-to-remove", "1", "--calibration", "self"]
    assert main([*argv, "--num-samples", "2", "--seq-len", "16", "--output-dir", str(selfgen)]) == 0
    pruning = AutoModelForCausalLM.from_pretrained(selfgen).config.pruning
    assert "compensation" not in pruning and pruning["criterion"] == "block_influence"
    assert "skipping the default reconstruct compensation" in caplog.text
    assert "criterion block_influence instead of the default auto" in caplog.text
    # A saved config is taken as it is: it names no compensation, so none is added.
    configured = tmp_path / "configured"
    DepthPruningConfig(criterion="magnitude", num_layers_to_remove=1, protect_first=1, protect_last=1).save_pretrained(
        tmp_path / "cfg"
    )
    config = tmp_path / "cfg"
    assert main(["prune", "--model", model_path, "--config", str(config), "--output-dir", str(configured)]) == 0
    pruning = AutoModelForCausalLM.from_pretrained(configured).config.pruning
    assert pruning["criterion"] == "magnitude" and "compensation" not in pruning


def test_score_defaults_to_auto_and_records_the_choice(model_path, tmp_path, capsys):
    out = tmp_path / "scored"
    assert main(["score", "--model", model_path, "--num-layers-to-remove", "1", "--output-dir", str(out)]) == 0
    plan = json.loads((out / "pruning_plan.json").read_text())
    chosen = plan["reason"]["auto"]["chosen"]
    assert plan["criterion"] == "auto" and f"auto: {chosen} + reconstruct compensation" in capsys.readouterr().out
    saved = DepthPruningConfig.from_pretrained(out)  # prune --config/--plan reproduces what auto compared
    assert saved.criterion == "auto" and saved.compensation.method == "reconstruct"
