"""Zero-shot accuracy through lm-eval on a real tiny model, checked against a direct log-likelihood computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from task_files import ARC, PIQA, WINOGRANDE, write_task_files
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_depth.evaluation import ZERO_SHOT_TASKS, ZeroShotSettings, evaluate_zero_shot


@pytest.fixture(scope="module")
def stories(request):
    from tiny_models import STORIES_PATH

    if not STORIES_PATH.is_dir():
        pytest.skip("../shared/models/stories260K is not available")
    return AutoModelForCausalLM.from_pretrained(STORIES_PATH).eval(), AutoTokenizer.from_pretrained(STORIES_PATH)


@pytest.fixture(scope="module")
def zero_shot_run(stories, tmp_path_factory):
    model, tokenizer = stories
    data = write_task_files(tmp_path_factory.mktemp("tasks"))
    return evaluate_zero_shot(model, tokenizer, ZeroShotSettings(batch_size=4), data_dir=data)


@torch.no_grad()
def _loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), tokenized as lm-eval does (encode the whole, split at the context length)."""
    whole = tokenizer.encode(context + continuation)
    context_len = len(tokenizer.encode(context))
    logprobs = model(torch.tensor([whole])).logits[0].log_softmax(-1)
    return sum(logprobs[pos - 1, whole[pos]].item() for pos in range(context_len, len(whole)))


def _accuracies(model, tokenizer, docs):
    """``docs``: (contexts per choice, continuations per choice, choice strings, gold). Returns (acc, acc_norm)."""
    acc, acc_norm = [], []
    for contexts, continuations, choices, gold in docs:
        lls = np.array([_loglikelihood(model, tokenizer, c, x) for c, x in zip(contexts, continuations, strict=True)])
        acc.append(float(np.argmax(lls) == gold))
        acc_norm.append(float(np.argmax(lls / np.array([len(c) for c in choices])) == gold))
    return float(np.mean(acc)), float(np.mean(acc_norm))


def test_piqa_matches_direct_loglikelihood(stories, zero_shot_run):
    model, tokenizer = stories
    zero_shot, _ = zero_shot_run
    docs = [([f"Question: {g}\nAnswer:"] * 2, [f" {a}", f" {b}"], [a, b], label) for g, a, b, label in PIQA]
    acc, acc_norm = _accuracies(model, tokenizer, docs)
    assert zero_shot["piqa"]["acc"] == pytest.approx(acc)
    assert zero_shot["piqa"]["acc_norm"] == pytest.approx(acc_norm)
    n = len(PIQA)
    assert zero_shot["piqa"]["acc_stderr"] == pytest.approx(math.sqrt(acc * (1 - acc) / (n - 1)))


def test_arc_and_winogrande_match_direct_loglikelihood(stories, zero_shot_run):
    model, tokenizer = stories
    zero_shot, _ = zero_shot_run
    arc_docs = [
        ([f"Question: {q}\nAnswer:"] * len(t), [f" {x}" for x in t], t, labels.index(key)) for q, t, labels, key in ARC
    ]
    assert (zero_shot["arc_easy"]["acc"], zero_shot["arc_easy"]["acc_norm"]) == pytest.approx(
        _accuracies(model, tokenizer, arc_docs)
    )
    wino_docs = []
    for sentence, option1, option2, answer in WINOGRANDE:
        blank = sentence.index("_")
        target = sentence[blank + 1 :].strip()
        contexts = [sentence[:blank] + option for option in (option1, option2)]
        wino_docs.append((contexts, [f" {target}"] * 2, contexts, int(answer) - 1))
    assert zero_shot["winogrande"]["acc"] == pytest.approx(_accuracies(model, tokenizer, wino_docs)[0])


def test_all_seven_tasks_report_settings(zero_shot_run):
    zero_shot, settings = zero_shot_run
    assert list(zero_shot) == list(ZERO_SHOT_TASKS)
    assert set(zero_shot["boolq"]) == {"acc", "acc_stderr"}  # lm-eval's boolq has no acc_norm
    for task in ("piqa", "hellaswag", "arc_easy", "arc_challenge", "openbookqa"):
        assert {"acc", "acc_norm"} <= set(zero_shot[task])
    assert all(0.0 <= m["acc"] <= 1.0 for m in zero_shot.values())
    assert settings["evaluated_documents"] == {
        "boolq": 3,
        "piqa": 6,
        "hellaswag": 2,
        "winogrande": 3,
        "arc_easy": 3,
        "arc_challenge": 3,
        "openbookqa": 3,
    }
    assert (
        settings["num_fewshot"] == 0
        and settings["lm_eval_version"]
        and settings["data_files"]["piqa"]["name"] == "valid.jsonl"  # by name and hash, no path
        and len(settings["data_files"]["piqa"]["sha256"]) == 64
    )


def test_limit_and_task_subset(stories, tmp_path):
    model, tokenizer = stories
    data = write_task_files(tmp_path / "data")
    zero_shot, settings = evaluate_zero_shot(
        model, tokenizer, ZeroShotSettings(tasks=["piqa"], limit=2), data_dir=data, work_dir=tmp_path / "work"
    )
    assert list(zero_shot) == ["piqa"] and settings["evaluated_documents"] == {"piqa": 2}
    assert (tmp_path / "work" / "tasks" / "od_piqa.yaml").is_file()


def test_bad_arguments_fail_before_lm_eval_runs(stories, tmp_path):
    model, tokenizer = stories
    with pytest.raises(ValueError, match="Unknown zero-shot task"):
        evaluate_zero_shot(model, tokenizer, ZeroShotSettings(tasks=["piqa", "mmlu"]), data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="piqa"):
        evaluate_zero_shot(model, tokenizer, ZeroShotSettings(tasks=["piqa"]), data_dir=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        ZeroShotSettings(tasks=["piqa"], limit=0)
    with pytest.raises(ValueError, match="source"):
        ZeroShotSettings(source="web")


def test_piqa_per_document_predictions(stories, tmp_path):
    """Gold labels set to the directly computed predictions give exactly 100% (and 0% for the other choice)."""
    model, tokenizer = stories
    data = write_task_files(tmp_path / "data")
    predictions = []
    for goal, sol1, sol2, _ in PIQA:
        lls = [_loglikelihood(model, tokenizer, f"Question: {goal}\nAnswer:", f" {s}") for s in (sol1, sol2)]
        predictions.append(int(np.argmax(lls)))
    labels = data / "piqa" / "valid-labels.lst"
    labels.write_text("".join(f"{p}\n" for p in predictions))
    assert (
        evaluate_zero_shot(model, tokenizer, ZeroShotSettings(tasks=["piqa"]), data_dir=data)[0]["piqa"]["acc"] == 1.0
    )
    labels.write_text("".join(f"{1 - p}\n" for p in predictions))
    assert (
        evaluate_zero_shot(model, tokenizer, ZeroShotSettings(tasks=["piqa"]), data_dir=data)[0]["piqa"]["acc"] == 0.0
    )
