"""EvaluationResults / ComparisonResults: JSON round trips, derived ratios, markdown, "not measured" sections."""

from __future__ import annotations

import json

import pytest

from optimum_depth.evaluation import (
    NOT_MEASURED,
    ComparisonResults,
    EvaluationResults,
    LatencyRecord,
    load_results,
    results_markdown,
)

from tiny_models import ROOT


def _dense() -> EvaluationResults:
    return EvaluationResults(
        model_name="dense",
        num_parameters=1000,
        perplexity={"wikitext2": 20.0, "ptb": 40.0},
        perplexity_settings={"seq_len": 128},
        zero_shot={"piqa": {"acc": 0.60, "acc_stderr": 0.01, "acc_norm": 0.62}, "boolq": {"acc": 0.50}},
        latency=[
            LatencyRecord(1, 128, 8, 2.0, 64.0, 100.0, [2.0, 2.1, 1.9]),
            LatencyRecord(8, 128, 8, 4.0, 256.0, 200.0, [4.0]),
        ],
        latency_settings={"threads": 1},
    )


def _pruned() -> EvaluationResults:
    return EvaluationResults(
        model_name="pruned",
        num_parameters=800,
        perplexity={"wikitext2": 30.0},
        zero_shot={"piqa": {"acc": 0.54, "acc_norm": 0.55}, "boolq": {"acc": 0.40}},
        latency=[LatencyRecord(1, 128, 8, 1.6, 80.0, None, [1.6])],
    )


def test_evaluation_results_json_round_trip(tmp_path):
    results = _dense()
    path = results.save_pretrained(tmp_path)
    data = json.loads(path.read_text())
    assert data["model_name"] == "dense" and data["record_type"] == "EvaluationResults"
    assert EvaluationResults.from_pretrained(path) == results
    assert EvaluationResults.from_pretrained(tmp_path) == results
    assert load_results(tmp_path) == results
    assert isinstance(EvaluationResults.from_dict(data).latency[0], LatencyRecord)


def test_derived_values_match_hand_computation():
    comparison = ComparisonResults(_dense(), _pruned())
    assert comparison.ideal_speedup == pytest.approx(1000 / 800)
    (speedup,) = comparison.speedups()  # batch 8 was not measured for the pruned model
    assert speedup["batch_size"] == 1
    assert speedup["speedup"] == pytest.approx(2.0 / 1.6)
    assert speedup["fraction_of_ideal"] == pytest.approx((2.0 / 1.6) / (1000 / 800))
    assert comparison.perplexity_ratios() == {"wikitext2": pytest.approx(1.5)}
    assert comparison.zero_shot_retention() == {"piqa": pytest.approx(0.9), "boolq": pytest.approx(0.8)}
    assert comparison.dense.zero_shot_average("acc") == pytest.approx(0.55)
    assert comparison.dense.zero_shot_average("acc_norm") == pytest.approx(0.62)
    assert comparison.dense.zero_shot_average("f1") is None


def test_paired_speedup_is_the_median_of_round_ratios():
    dense = EvaluationResults("d", 100, latency=[LatencyRecord(1, 4, 2, 2.2, 1.0, latencies_s=[2.0, 3.0, 2.2])])
    pruned = EvaluationResults("p", 80, latency=[LatencyRecord(1, 4, 2, 2.0, 1.0, latencies_s=[1.0, 2.0, 2.0])])
    (row,) = ComparisonResults(dense, pruned).speedups()
    assert row["speedup"] == pytest.approx(1.1)
    assert row["paired_speedup"] == pytest.approx(1.5)  # median of 2.0, 1.5, 1.1
    assert row["paired_fraction_of_ideal"] == pytest.approx(1.5 / 1.25)
    assert (row["paired_speedup_min"], row["paired_speedup_max"]) == pytest.approx((1.1, 2.0))
    markdown = results_markdown(ComparisonResults(dense, pruned))
    assert (
        "| 2.200 (2.000-3.000) | 2.000 (1.000-2.000) | 1.100x | 88.0% | 1.500x (1.100-2.000x) | 120.0% |" in markdown
    )


def test_comparison_round_trip_recomputes_derived_values(tmp_path):
    comparison = ComparisonResults(_dense(), _pruned(), extra={"criterion": "magnitude"})
    data = comparison.to_dict()
    data["derived"]["ideal_speedup"] = 99.0  # tampered derived values are ignored on load
    loaded = ComparisonResults.from_dict(data)
    assert loaded == comparison
    assert loaded.ideal_speedup == pytest.approx(1.25)
    comparison.save_pretrained(tmp_path)
    assert ComparisonResults.from_pretrained(tmp_path) == comparison
    assert load_results(tmp_path) == comparison  # the kind comes from the file's record type


def test_markdown_renders_values_and_not_measured():
    markdown = results_markdown(ComparisonResults(_dense(), _pruned()))
    assert "| wikitext2 | 20.00 | 30.00 | 1.500 |" in markdown
    assert f"| ptb | 40.00 | {NOT_MEASURED} | {NOT_MEASURED} |" in markdown
    assert "| piqa | 60.00 | 54.00 | 62.00 | 55.00 |" in markdown
    # the repeat counts differ (3 vs 1), so no paired speed-up, and one repeat says nothing about the noise
    row = f"| 1 | 8 | 128 | 2.000 (1.900-2.100) | 1.600 | 1.250x | 100.0% | {NOT_MEASURED} | {NOT_MEASURED} |"
    assert row + " spread unknown |" in markdown
    assert "batch 1, 128 new tokens: noisy?: one timed repeat" in markdown

    empty = results_markdown(EvaluationResults("nothing"))
    assert empty.count(NOT_MEASURED) == 4  # parameters, perplexity, zero-shot, latency
    assert f"{NOT_MEASURED}" in results_markdown(ComparisonResults(EvaluationResults("a"), EvaluationResults("b")))
    single = results_markdown(_dense())
    assert "| 1 | 8 | 128 | 2.000 (1.900-2.100) | 3 | 64.0 | 100 |" in single
    assert "| 8 | 8 | 128 | 4.000 | 1 | 256.0 | 200 |" in single
    assert "| boolq | 50.00 | - |" in single
    with pytest.raises(TypeError, match="EvaluationResults or ComparisonResults"):
        results_markdown({"model_name": "a dict is no record"})


def test_records_do_not_render_themselves():
    """Rendering takes the record (evaluation/markdown.py); the records have no markdown method."""
    for record in (EvaluationResults("a"), ComparisonResults(EvaluationResults("a"), EvaluationResults("b"))):
        assert not any("markdown" in name for name in dir(record))


def test_bad_input_raises_clear_errors(tmp_path, caplog):
    with caplog.at_level("WARNING"):  # unknown keys are dropped with a warning, as peft does
        assert EvaluationResults.from_dict({"model_name": "x", "perplexty": {}}) == EvaluationResults("x")
    assert "perplexty" in caplog.text
    with pytest.raises(ValueError, match="model_name"):
        EvaluationResults.from_dict({"perplexity": {}})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        EvaluationResults.from_pretrained(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        EvaluationResults.from_pretrained(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="pruned"):
        ComparisonResults.from_dict({"dense": _dense().to_dict()})
    with pytest.raises(ValueError, match="not a ComparisonResults"):
        ComparisonResults.from_dict(_dense().to_dict())
    with pytest.raises(ValueError, match="Unknown LatencyRecord fields"):
        EvaluationResults("x", latency=[{"batch_size": 1, "oops": 2}])  # type: ignore[list-item]


# A comparison as optimum-depth 0.1 wrote it: no record type or format version, derived values without spreads,
# one grid point without its repeats.
OLD_COMPARISON = {
    "dense": {
        "model_name": "dense",
        "num_parameters": 1000,
        "latency": [
            {"batch_size": 1, "new_tokens": 32, "prompt_len": 8, "latency_s": 2.0, "tokens_per_s": 16.0,
             "peak_memory_mb": None, "latencies_s": [1.95, 2.0, 2.05]},
            {"batch_size": 4, "new_tokens": 32, "prompt_len": 8, "latency_s": 4.0, "tokens_per_s": 32.0},
        ],
        "optimum_depth_version": "0.1.0",
    },
    "pruned": {
        "model_name": "pruned",
        "num_parameters": 800,
        "latency": [
            {"batch_size": 1, "new_tokens": 32, "prompt_len": 8, "latency_s": 1.7, "tokens_per_s": 18.8,
             "peak_memory_mb": None, "latencies_s": [1.7, 1.7, 1.72]},
            {"batch_size": 4, "new_tokens": 32, "prompt_len": 8, "latency_s": 3.5, "tokens_per_s": 36.6},
        ],
        "optimum_depth_version": "0.1.0",
    },
    "extra": {},
    "derived": {"ideal_speedup": 1.25, "speedups": [{"batch_size": 1, "speedup": 1.18, "fraction_of_ideal": 0.94}]},
    "optimum_depth_version": "0.1.0",
}  # fmt: skip


def test_old_results_files_still_load_and_get_their_spread(tmp_path):
    (tmp_path / "evaluation_results.json").write_text(json.dumps(OLD_COMPARISON))
    old = load_results(tmp_path)
    assert isinstance(old, ComparisonResults) and old.dense.latency[1].latencies_s == []
    quiet, unrecorded = old.speedups()
    assert quiet["noisy"] is False and quiet["cautions"] == []
    assert (quiet["paired_speedup_min"], quiet["paired_speedup_max"]) == pytest.approx((1.95 / 1.7, 2.05 / 1.72))
    assert unrecorded["noisy"] is None and unrecorded["paired_speedup"] is None
    assert old.latency_cautions() == [
        "batch 4, 32 new tokens: noisy?: the repeats were not recorded, so nothing shows how noisy the machine was."
    ]
    markdown = results_markdown(old)
    assert "| 4 | 8 | 32 | 4.000 | 3.500 | 1.143x | 91.4% | not measured | not measured | spread unknown |" in markdown
    assert (
        "| 1 | 8 | 32 | 2.000 (1.950-2.050) | 1.700 (1.700-1.720) | 1.176x | 94.1% | 1.176x (1.147-1.192x) |"
        in markdown
    )


@pytest.mark.parametrize("path", sorted((ROOT / "model_cards").glob("*/evaluation_results.json")), ids=str)
def test_committed_results_files_load(path):
    results = load_results(path)
    assert isinstance(results, ComparisonResults) and results.speedups()
    assert "#### Latency" in results_markdown(results)
