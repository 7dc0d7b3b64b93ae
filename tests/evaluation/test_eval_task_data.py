"""Local task files -> lm-eval records, and the shipped task configs against lm-eval's own."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
from lm_eval.tasks._yaml_loader import load_yaml
from task_files import ARC, PIQA, WINOGRANDE, write_task_files

from optimum_depth.evaluation.task_data import (
    ZERO_SHOT_TASKS,
    read_arc,
    read_boolq,
    read_hellaswag,
    read_openbookqa,
    read_piqa,
    read_winogrande,
    resolve_task_files,
    write_task_data,
)
from optimum_depth.evaluation.zero_shot import TASK_DATA_PLACEHOLDER, render_task_configs, shipped_tasks_dir

from tiny_models import DATA_DIR

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
LM_EVAL_CONFIGS = {
    "boolq": "super_glue/boolq/default.yaml",
    "piqa": "piqa/piqa.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
}
PROMPT_KEYS = (
    "output_type",
    "doc_to_text",
    "doc_to_target",
    "doc_to_choice",
    "target_delimiter",
    "fewshot_delimiter",
    "should_decontaminate",
    "doc_to_decontamination_query",
    "metric_list",
    "metadata",
)


def _comparable(value):
    if callable(value):  # lm-eval's winogrande helpers, loaded from its own file or by our dotted reference
        return (value.__name__, value.__code__.co_code, value.__code__.co_consts)
    return value


@pytest.mark.parametrize("task", list(ZERO_SHOT_TASKS))
def test_shipped_configs_keep_lm_eval_prompts_and_metrics(task):
    ours = load_yaml(shipped_tasks_dir() / f"od_{task}.yaml", resolve_func=True)
    theirs = load_yaml(LM_EVAL_TASKS / LM_EVAL_CONFIGS[task], resolve_func=True)
    for key in PROMPT_KEYS:
        assert _comparable(ours.get(key)) == _comparable(theirs.get(key)), f"{task}: {key} differs from lm-eval"
    # The split lm-eval evaluates (test if it has one, else validation) is the one we fill.
    their_split = theirs.get("test_split") or theirs.get("validation_split")
    our_split = ours.get("test_split") or ours.get("validation_split")
    assert our_split == their_split
    assert list(ours["dataset_kwargs"]["data_files"]) == [their_split]
    assert ours["task"] == f"od_{task}"


def test_readers_map_to_hub_layout(tmp_path):
    root = write_task_files(tmp_path)
    assert read_boolq(root / "boolq/super_glue_boolq_validation.csv")[1] == {
        "question": "is fire cold",
        "passage": "Fire is hot, it burns.",
        "label": 0,
    }
    piqa = read_piqa(root / "piqa/valid.jsonl")
    assert [r["label"] for r in piqa] == [p[3] for p in PIQA] and piqa[0]["goal"] == PIQA[0][0]
    wino = read_winogrande(root / "winogrande/dev.jsonl")
    assert wino[0] == {"sentence": WINOGRANDE[0][0], "option1": "ball", "option2": "box", "answer": "1"}
    arc = read_arc(root / "arc/ARC-Easy-Test.jsonl")
    assert arc[1] == {
        "id": "q1",
        "question": ARC[1][0],
        "choices": {"text": ARC[1][1], "label": ["1", "2", "3"]},
        "answerKey": "2",
    }
    assert read_openbookqa(root / "openbookqa/test.jsonl")[0]["question_stem"] == ARC[0][0]
    hella = read_hellaswag(root / "hellaswag/hellaswag_val_full.txt")
    assert hella[0] == {
        "query": "Cooking: A man puts a pan on the stove. he",
        "choices": ["flies away.", "sings a song to the moon.", "adds oil to the pan.", "reads the newspaper."],
        "label": 2,
    }


def test_hub_layout_files_are_accepted(tmp_path):
    hella = tmp_path / "hellaswag.jsonl"
    doc = {
        "activity_label": "Baking",
        "ctx_a": "A cook mixes flour [title] fast.",
        "ctx_b": "she",
        "endings": [" a ", "b", "c", "d"],
        "label": "1",
    }
    hella.write_text(json.dumps(doc) + "\n")
    # lm-eval's own processing: ctx_b capitalised, " [title]" -> ". ", brackets removed, stripped.
    assert read_hellaswag(hella) == [
        {"query": "Baking: A cook mixes flour. fast. She", "choices": ["a", "b", "c", "d"], "label": 1}
    ]
    arc = tmp_path / "arc.jsonl"
    arc.write_text(
        json.dumps(
            {"id": "x", "question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}
        )
        + "\n"
    )
    assert read_arc(arc)[0]["choices"] == {"text": ["a", "b"], "label": ["A", "B"]}


def test_malformed_files_raise_clear_errors(tmp_path):
    root = write_task_files(tmp_path)
    (root / "piqa/valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(ValueError, match="2 labels for 6 records"):
        read_piqa(root / "piqa/valid.jsonl")
    (root / "winogrande/dev-labels.lst").write_text("2\n1\n1\n")
    with pytest.raises(ValueError, match="labels file says"):
        read_winogrande(root / "winogrande/dev.jsonl")
    bad = tmp_path / "bad.txt"
    bad.write_text("ctx\n7\na\nb\nc\nd\n")
    with pytest.raises(ValueError, match="gold index"):
        read_hellaswag(bad)
    bad.write_text("ctx\n1\na\n")
    with pytest.raises(ValueError, match="6 per item"):
        read_hellaswag(bad)
    arc = tmp_path / "arc.jsonl"
    arc.write_text(
        json.dumps({"question": {"stem": "Q", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "E"}) + "\n"
    )
    with pytest.raises(ValueError, match="not a choice label"):
        read_arc(arc)
    with pytest.raises(ValueError, match="Unknown zero-shot task"):
        resolve_task_files(["piqa", "mmlu"], root, None)
    with pytest.raises(FileNotFoundError, match="openbookqa"):
        resolve_task_files(["openbookqa"], root, {"openbookqa": tmp_path / "nope.jsonl"})


def test_rendered_configs_point_at_converted_data(tmp_path):
    root = write_task_files(tmp_path / "raw")
    files = resolve_task_files(list(ZERO_SHOT_TASKS), root, None)
    counts = write_task_data(files, tmp_path / "data")
    assert counts == {
        "boolq": 3,
        "piqa": 6,
        "hellaswag": 2,
        "winogrande": 3,
        "arc_easy": 3,
        "arc_challenge": 3,
        "openbookqa": 3,
    }
    render_task_configs(["piqa"], tmp_path / "data", tmp_path / "tasks")
    text = (tmp_path / "tasks" / "od_piqa.yaml").read_text()
    assert TASK_DATA_PLACEHOLDER not in text
    config = load_yaml(tmp_path / "tasks" / "od_piqa.yaml", resolve_func=False)
    assert Path(config["dataset_kwargs"]["data_files"]["validation"]) == (tmp_path / "data" / "piqa.jsonl").resolve()


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="../shared/data is not available")
def test_real_task_files_convert(tmp_path):
    files = resolve_task_files(list(ZERO_SHOT_TASKS), DATA_DIR, None)
    counts = write_task_data(files, tmp_path)
    assert counts == {
        "boolq": 3270,
        "piqa": 1838,
        "hellaswag": 10042,
        "winogrande": 1267,
        "arc_easy": 2376,
        "arc_challenge": 1172,
        "openbookqa": 500,
    }
