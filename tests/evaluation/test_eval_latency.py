"""Latency protocol: forced output length, interleaving, record arithmetic, peak memory, and noise flagged."""

from __future__ import annotations

import copy
import statistics
import time

import pytest
import torch
from eval_helpers import CharTokenizer

from optimum_depth import remove_layers
from optimum_depth.architectures import count_parameters
from optimum_depth.evaluation import (
    ComparisonResults,
    EvaluationSettings,
    LatencySettings,
    PeakMemoryMonitor,
    compare_models,
    latency,
    measure_latency,
    results_markdown,
)
from optimum_depth.evaluation.latency import make_prompt_ids, timed_generate

from tiny_models import make_tiny_model


def test_prompt_ids_are_repeated_and_sized():
    tokenizer = CharTokenizer()
    ids = make_prompt_ids(tokenizer, batch_size=3, prompt="abc")
    assert ids.tolist() == [[1, *tokenizer.encode("abc")]] * 3
    sized = make_prompt_ids(tokenizer, batch_size=2, prompt="abc", prompt_len=10)
    expected = ([1, *tokenizer.encode("abc")] * 3)[:10]
    assert sized.tolist() == [expected, expected]
    with pytest.raises(ValueError, match="prompt_len"):
        make_prompt_ids(tokenizer, 1, "abc", prompt_len=0)


def test_eos_cannot_stop_generation_early():
    model = make_tiny_model("llama")
    model.generation_config.eos_token_id = [t for t in range(128) if t != 5]  # every token but one is an EOS
    input_ids = make_prompt_ids(CharTokenizer(), 2, "hello")
    assert timed_generate(model, input_ids, new_tokens=7, pad_token_id=0) > 0
    output = model.generate(input_ids=input_ids, max_new_tokens=7, do_sample=False, pad_token_id=0)
    assert output.shape[1] < input_ids.shape[1] + 7  # without the forced length it would have stopped


def test_side_by_side_runs_are_interleaved(monkeypatch):
    dense = make_tiny_model("llama")
    pruned = copy.deepcopy(dense)
    calls = []
    original = latency.timed_generate

    def spy(model, input_ids, new_tokens, pad_token_id):
        calls.append(("dense" if model is dense else "pruned", input_ids.shape[0], new_tokens))
        return original(model, input_ids, new_tokens, pad_token_id)

    monkeypatch.setattr(latency, "timed_generate", spy)
    records, settings = measure_latency(
        {"dense": dense, "pruned": pruned}, CharTokenizer(), batch_sizes=(1, 2), new_tokens=(3,), warmup=1, repeats=3
    )
    # Per grid point: warm-up round (dense, pruned), then timed rounds alternating the order.
    per_point = ["dense", "pruned", "dense", "pruned", "pruned", "dense", "dense", "pruned"]
    assert [name for name, *_ in calls] == per_point * 2
    assert [b for _, b, _ in calls] == [1] * 8 + [2] * 8
    assert (
        settings["interleaved_models"] == ["dense", "pruned"] and settings["torch_threads"] == torch.get_num_threads()
    )
    for name in ("dense", "pruned"):
        assert [(r.batch_size, r.new_tokens) for r in records[name]] == [(1, 3), (2, 3)]
        for record in records[name]:
            assert len(record.latencies_s) == 3
            assert record.latency_s == statistics.median(record.latencies_s)
            assert record.tokens_per_s == pytest.approx(record.batch_size * 3 / record.latency_s)
            assert record.peak_memory_mb is not None and record.peak_memory_mb > 0
            assert record.prompt_len == len(CharTokenizer()(latency.DEFAULT_PROMPT)["input_ids"])


def test_single_model_and_bad_grids():
    model = make_tiny_model("qwen3")
    records, settings = measure_latency(
        model, CharTokenizer(), new_tokens=(2,), warmup=0, repeats=1, measure_memory=False
    )
    assert list(records) == ["model"] and records["model"][0].peak_memory_mb is None
    assert settings["memory"] is None and settings["interleaved_models"] is None
    for kwargs in ({"batch_sizes": ()}, {"new_tokens": (0,)}, {"repeats": 0}, {"warmup": -1}):
        with pytest.raises(ValueError):
            measure_latency(model, CharTokenizer(), **kwargs)
    with pytest.raises(ValueError, match="No model"):
        measure_latency({}, CharTokenizer())


def test_peak_memory_monitor_sees_a_large_allocation():
    with PeakMemoryMonitor("cpu") as baseline:
        pass
    with PeakMemoryMonitor("cpu") as monitor:
        block = torch.ones(64 * 1024 * 1024 // 4 * 4)  # 256 MiB, touched
        assert block[-1] == 1
    del block
    assert monitor.method in ("sampled_process_rss", "unavailable")
    if monitor.method == "sampled_process_rss":
        assert baseline.peak_mb is not None and monitor.peak_mb is not None
        assert monitor.peak_mb - baseline.peak_mb > 200


def _slow_on_call(model, call: int, seconds: float):
    """Makes ``model.generate`` sleep ``seconds`` longer on its ``call``-th call (1-based), like a burst of load."""
    original, calls = model.generate, []

    def generate(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            time.sleep(seconds)
        return original(*args, **kwargs)

    model.generate = generate
    return calls


def test_a_slow_repeat_is_reported_as_noise_not_as_fact(caplog):
    dense = make_tiny_model("llama")
    pruned = remove_layers(copy.deepcopy(dense), [1, 4])
    calls = _slow_on_call(dense, call=1 + 3, seconds=0.5)  # after the warm-up call: the third timed repeat
    latency_only = LatencySettings(new_tokens=(3,), warmup=1, repeats=5, measure_memory=False)
    settings = EvaluationSettings(perplexity=None, latency=latency_only)
    with caplog.at_level("WARNING", logger="optimum_depth.evaluation"):
        comparison = compare_models(dense, pruned, CharTokenizer(), settings, dense_name="dense")
    assert len(calls) == 6
    record = comparison.dense.latency[0]
    assert max(record.latencies_s) > 0.5 and record.latency_s < 0.5  # the median holds, the spread shows the burst
    (row,) = comparison.speedups()
    assert row["noisy"] is True and row["paired_speedup_max"] > 2 * row["paired_speedup"]
    assert row["dense_spread"]["maximum"] == max(record.latencies_s)
    markdown = results_markdown(comparison)
    assert "| noisy" in markdown and "**Caution: these latency figures are not reliable as they stand.**" in markdown
    assert "batch 1, 3 new tokens: noisy: the repeats spread by up to" in markdown
    assert "Latency batch 1, 3 new tokens: noisy:" in caplog.text  # the CLI shows library warnings on stderr
    # Saved and loaded again: the caution is recomputed from the recorded repeats.
    assert ComparisonResults.from_dict(comparison.to_dict()).latency_cautions() == comparison.latency_cautions()


def test_a_slower_model_measured_on_a_busier_machine_is_flagged_above_ideal(monkeypatch):
    dense = make_tiny_model("llama")
    pruned = remove_layers(copy.deepcopy(dense), [1, 4])
    ideal = count_parameters(dense) / count_parameters(pruned)
    clock = {"dense": 2.0 * ideal, "pruned": 1.0}  # every dense call met twice the load, every repeat alike

    def fake_timed_generate(model, input_ids, new_tokens, pad_token_id):
        return clock["dense" if model is dense else "pruned"]

    monkeypatch.setattr(latency, "timed_generate", fake_timed_generate)
    latency_only = LatencySettings(new_tokens=(3,), warmup=0, repeats=3, measure_memory=False)
    settings = EvaluationSettings(perplexity=None, latency=latency_only)
    comparison = compare_models(dense, pruned, CharTokenizer(), settings, dense_name="dense")
    (row,) = comparison.speedups()
    assert row["speedup"] == pytest.approx(2 * ideal) and row["noisy"] is False and row["above_ideal"] is True
    assert comparison.latency_cautions()[0].startswith(
        f"batch 1, 3 new tokens: above ideal: {2 * ideal:.3f}x is 200.0%"
    )

    clock["dense"] = 0.99 * ideal  # the same models on a quiet machine: nothing to say
    comparison = compare_models(dense, pruned, CharTokenizer(), settings, dense_name="dense")
    assert comparison.latency_cautions() == [] and "Caution" not in results_markdown(comparison)
