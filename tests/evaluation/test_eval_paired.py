"""The paired zero-shot test: hand-checked statistics on constructed outcomes where the answer is known."""

from __future__ import annotations

import math

import pytest

from optimum_depth.errors import DataError
from optimum_depth.evaluation import ComparisonResults, EvaluationResults, results_markdown
from optimum_depth.evaluation.paired import (
    mcnemar_exact_p,
    mean_paired_difference,
    paired_difference,
    paired_zero_shot,
)
from optimum_depth.evaluation.zero_shot import document_outcomes


def test_identical_answers_are_no_difference():
    outcomes = "0110100111" * 20
    result = paired_difference(outcomes, outcomes)
    assert result.difference == 0 and result.stderr == 0 and result.verdict == "="
    assert result.mcnemar_p == 1.0 and result.documents == 200


def test_a_loss_hidden_by_independent_binomials_is_found_by_the_paired_test():
    # 200 documents, dense right on 100; the pruned model loses 12 of them and gains none.
    dense = [1] * 100 + [0] * 100
    pruned = [0] * 12 + [1] * 88 + [0] * 100
    result = paired_difference(dense, pruned)
    assert result.difference == pytest.approx(-0.06)
    assert (result.pruned_only, result.dense_only) == (0, 12)
    # hand-checked: d has 12 values -1 and 188 zeros, sample variance = (12 * 0.94^2 + 188 * 0.06^2) / 199
    variance = (12 * 0.94**2 + 188 * 0.06**2) / 199
    assert result.stderr == pytest.approx(math.sqrt(variance / 200))
    assert result.verdict == "-"
    assert result.mcnemar_p == pytest.approx(2 * 0.5**12)
    # two independent binomials would have called it "no difference"
    independent = math.sqrt(0.5 * 0.5 / 200 + 0.44 * 0.56 / 200)
    assert abs(result.difference) <= 2 * independent


def test_balanced_disagreements_are_no_difference_and_gains_are_plus():
    dense = [1, 0] * 50
    swapped = [0, 1] * 50  # disagrees everywhere, same accuracy
    result = paired_difference(dense, swapped)
    assert result.difference == 0 and result.verdict == "=" and result.mcnemar_p == 1.0
    better = paired_difference([0] * 100, [1] * 30 + [0] * 70)
    assert better.verdict == "+" and better.pruned_only == 30


def test_mcnemar_is_symmetric_and_bounded():
    assert mcnemar_exact_p(3, 5) == pytest.approx(mcnemar_exact_p(5, 3))
    assert mcnemar_exact_p(1, 1) == 1.0
    # exact: 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * 11 / 1024
    assert mcnemar_exact_p(1, 9) == pytest.approx(22 / 1024)


def test_mean_over_tasks_combines_standard_errors():
    a = paired_difference([1] * 50 + [0] * 50, [1] * 45 + [0] * 55)
    b = paired_difference([1] * 80, [1] * 80)
    mean = mean_paired_difference([a, b])
    assert mean.difference == pytest.approx((a.difference + b.difference) / 2)
    assert mean.stderr == pytest.approx(math.sqrt(a.stderr**2 + b.stderr**2) / 2)
    assert mean.documents is None


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="same documents"):
        paired_difference("0101", "010")
    with pytest.raises(DataError, match="0/1"):
        paired_difference("012", "011")
    with pytest.raises(DataError, match="No document"):
        paired_difference("", "")
    with pytest.raises(DataError, match="different documents"):
        paired_zero_shot({"piqa": {"fingerprint": "a", "acc": "01"}}, {"piqa": {"fingerprint": "b", "acc": "01"}})


def _documents(acc: str, fingerprint: str = "same") -> dict:
    return {"documents": len(acc), "fingerprint": fingerprint, "acc": acc}


def test_comparison_results_render_the_paired_difference_and_round_trip(tmp_path):
    dense = EvaluationResults(
        "dense",
        zero_shot={"piqa": {"acc": 0.5}, "boolq": {"acc": 0.5}},
        zero_shot_documents={"piqa": _documents("1" * 50 + "0" * 50), "boolq": _documents("10" * 50)},
    )
    pruned = EvaluationResults(
        "pruned",
        zero_shot={"piqa": {"acc": 0.38}, "boolq": {"acc": 0.5}},
        zero_shot_documents={"piqa": _documents("0" * 12 + "1" * 38 + "0" * 50), "boolq": _documents("10" * 50)},
    )
    comparison = ComparisonResults(dense, pruned)
    paired = comparison.zero_shot_differences()
    assert paired["piqa"].verdict == "-" and paired["boolq"].verdict == "="
    assert paired["mean"].difference == pytest.approx(-0.06)
    markdown = results_markdown(comparison)
    assert "paired" in markdown and "-12.0 ± 3.3 (-)" in markdown and "+0.0 ± 0.0 (=)" in markdown
    comparison.save_pretrained(tmp_path)
    loaded = ComparisonResults.from_pretrained(tmp_path)
    assert loaded.zero_shot_differences() == paired
    # results without per-document outcomes (older files): no verdict rather than a wrong one
    old = ComparisonResults(EvaluationResults("d", zero_shot={"piqa": {"acc": 0.5}}), pruned)
    assert old.zero_shot_differences() == {} and "not measured" in results_markdown(old)


def test_document_outcomes_from_lm_eval_samples_are_in_document_order():
    samples = [
        {"doc_id": 2, "doc_hash": "c", "acc": 1.0, "acc_norm": 0.0},
        {"doc_id": 0, "doc_hash": "a", "acc": 0.0, "acc_norm": 1.0},
        {"doc_id": 1, "doc_hash": "b", "acc": 1.0, "acc_norm": 1.0},
    ]
    outcomes = document_outcomes({"samples": {"od_piqa": samples}}, {"od_piqa": "piqa", "od_boolq": "boolq"})
    assert outcomes["piqa"]["acc"] == "011" and outcomes["piqa"]["acc_norm"] == "110"
    assert outcomes["piqa"]["documents"] == 3 and "boolq" not in outcomes
    reordered = document_outcomes({"samples": {"od_piqa": samples[::-1]}}, {"od_piqa": "piqa"})
    assert reordered["piqa"]["fingerprint"] == outcomes["piqa"]["fingerprint"]
