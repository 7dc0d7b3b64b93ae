"""``optimum-depth quickstart`` end to end on the real tiny TinyStories Llama (reduced settings)."""

from __future__ import annotations

import json

from transformers import AutoModelForCausalLM

from optimum_depth.cli import main
from optimum_depth.evaluation import load_results


def _run(stories_path, out, *extra):
    return main(
        [
            "quickstart",
            "--model",
            str(stories_path),
            "--pruning-ratio",
            "0.2",
            "--eval-windows",
            "2",
            "--new-tokens",
            "4",
            "--output-dir",
            str(out),
            *extra,
        ]
    )


def test_quickstart_writes_checkpoint_plot_results_and_card(stories_path, tmp_path, capsys):
    out = tmp_path / "qs"
    assert _run(stories_path, out) == 0
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "README.md",
        "layer_scores.png",
        "evaluation_results.json",
        "pruning_plan.json",
    } <= names
    results = json.loads((out / "evaluation_results.json").read_text())
    assert set(results["dense"]["perplexity"]) == {"wikitext2"}
    assert results["pruned"]["latency"][0]["new_tokens"] == 4
    assert len(results["pruned"]["latency"][0]["latencies_s"]) == 5  # interleaved with the dense model's repeats
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4
    card = (out / "README.md").read_text()
    assert "Criterion chosen by `auto`" in card and "WikiText-2" in card  # the default criterion: auto
    printed = capsys.readouterr().out
    assert "Removed original blocks" in printed
    # Latency as median (min-max) of the repeats, with a check of each figure (the tiny model's milliseconds may be
    # noisy or above the ideal ratio; whatever they are, the output says which).
    assert "| dense (s), median (min-max) | pruned (s), median (min-max) |" in printed
    assert "paired speed-up (min-max)" in printed and "| check |" in printed
    comparison = load_results(out)
    assert all(caution in printed for caution in comparison.latency_cautions())
    assert ("Caution" in printed) == bool(comparison.latency_cautions())
    # The default compensation for blocks: least-squares maps then reconstruction, recorded and shown.
    assert model.config.pruning["compensation"]["method"] == "reconstruct"
    assert "Compensation `reconstruct`" in card and "Reconstruction for the cut" in card


def test_quickstart_compensation_can_be_turned_off_and_is_refused_for_sublayers(stories_path, tmp_path, capsys):
    out = tmp_path / "plain"
    assert _run(stories_path, out, "--compensation", "none") == 0
    assert "compensation" not in AutoModelForCausalLM.from_pretrained(out).config.pruning
    refused = tmp_path / "sub"
    assert _run(stories_path, refused, "--granularity", "sublayer", "--compensation", "linear_ls") == 2
    assert "block pruning only" in capsys.readouterr().err and not refused.exists()


def test_quickstart_without_any_data_falls_back_to_self_generated_text(stories_path, tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    out = tmp_path / "qs"
    assert _run(stories_path, out, "--data-dir", str(empty)) == 0
    results = json.loads((out / "evaluation_results.json").read_text())
    assert "self-generated" in results["pruned"]["perplexity"]
    agreement = results["pruned"]["extra"]["agreement_with_dense"]
    assert 0.0 <= agreement["top1_agreement"] <= 1.0
    plan = json.loads((out / "layer_scores.json").read_text())
    assert plan["calibration"]["source"] == "self-generated"
    # Generating the compensation's few hundred sequences would take minutes: the default compensation is skipped.
    assert "compensation" not in AutoModelForCausalLM.from_pretrained(out).config.pruning


def test_quickstart_bad_data_dir_is_a_user_error(stories_path, tmp_path, capsys):
    assert _run(stories_path, tmp_path / "qs", "--data-dir", str(tmp_path / "missing")) == 2
    assert "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "qs").exists()
