"""``evaluate_model`` / ``compare_models``: the sections equal the individual measurements, ratios follow."""

from __future__ import annotations

import copy

import pytest
from eval_helpers import CharTokenizer
from task_files import write_task_files

from optimum_depth import remove_layers
from optimum_depth.architectures import count_parameters
from optimum_depth.evaluation import (
    NOT_MEASURED,
    ComparisonResults,
    EvaluationSettings,
    LatencySettings,
    PerplexitySettings,
    PerplexityText,
    ZeroShotSettings,
    compare_models,
    evaluate_model,
    evaluate_perplexity,
    results_markdown,
)

from tiny_models import make_tiny_model

TEXT = PerplexityText("fox", "The quick brown fox jumps over the lazy dog. " * 8)


def test_compare_dense_and_pruned():
    dense = make_tiny_model("llama")
    pruned = remove_layers(copy.deepcopy(dense), [1, 4])
    tokenizer = CharTokenizer()
    settings = EvaluationSettings(
        perplexity=PerplexitySettings(datasets=[TEXT], seq_len=16),
        latency=LatencySettings(batch_sizes=(1, 2), new_tokens=(4,), warmup=1, repeats=2),
    )
    comparison = compare_models(dense, pruned, tokenizer, settings, dense_name="tiny")
    assert comparison.pruned.model_name == "tiny (pruned)"
    assert comparison.ideal_speedup == pytest.approx(count_parameters(dense) / count_parameters(pruned))
    for model, results in ((dense, comparison.dense), (pruned, comparison.pruned)):
        assert results.perplexity == pytest.approx(evaluate_perplexity(model, tokenizer, [TEXT], seq_len=16)[0])
        assert [(r.batch_size, r.new_tokens) for r in results.latency] == [(1, 4), (2, 4)]
    assert comparison.perplexity_ratios()["fox"] == pytest.approx(
        comparison.pruned.perplexity["fox"] / comparison.dense.perplexity["fox"]
    )
    speedups = comparison.speedups()
    assert [s["speedup"] for s in speedups] == pytest.approx(
        [d.latency_s / p.latency_s for d, p in zip(comparison.dense.latency, comparison.pruned.latency, strict=True)]
    )
    assert ComparisonResults.from_dict(comparison.to_dict()) == comparison
    markdown = results_markdown(comparison)
    assert f"Zero-shot accuracy: {NOT_MEASURED}." in markdown and "| fox |" in markdown
    with pytest.raises(ValueError, match="distinct names"):
        compare_models(dense, pruned, tokenizer, dense_name="a", pruned_name="a")


def test_evaluate_model_with_zero_shot(stories_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(stories_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    settings = EvaluationSettings(
        perplexity=PerplexitySettings(datasets=[TEXT], seq_len=16),
        zero_shot=ZeroShotSettings(tasks=["arc_easy"]),
        data_dir=write_task_files(tmp_path),
    )
    results = evaluate_model(model, tokenizer, settings)
    assert results.model_name == stories_path.name  # a local folder by its name, never its path
    assert results.num_parameters == count_parameters(model)
    assert set(results.zero_shot) == {"arc_easy"} and results.zero_shot_settings["evaluated_documents"] == {
        "arc_easy": 3
    }
    assert results.latency == [] and f"Latency: {NOT_MEASURED}." in results_markdown(results)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: EvaluationSettings(perplexity=None), "Nothing to measure"),
        (lambda: PerplexitySettings(datasets=()), "datasets"),
        (lambda: PerplexitySettings(bos="sometimes"), "bos"),
        (lambda: ZeroShotSettings(limit=0), "limit"),
        (lambda: ZeroShotSettings(limit=2.5), "limit"),
        (lambda: LatencySettings(batch_sizes=(0,)), "batch_sizes"),
        (lambda: LatencySettings(warmup=-1), "warmup"),
    ],
)
def test_settings_refuse_nonsense_when_built(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_whole_document_count_given_as_a_float_is_a_count():
    assert ZeroShotSettings(limit=2.0).limit == 2 and ZeroShotSettings(limit=0.5).limit == 0.5
