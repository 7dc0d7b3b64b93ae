"""The paper-table generator (benchmarks/paper_tables): parsing results files, rejecting malformed ones, "not run".

Results files are written by hand into ``tmp_path``; no model is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.paper_tables import make_tables, results_format, tables  # noqa: E402
from benchmarks.paper_tables.results_format import ResultsFormatError  # noqa: E402
from benchmarks.paper_tables.runner import PlannedRun, run_all  # noqa: E402

TASKS = tables.ZERO_SHOT_TASKS


def make_run(run_id: str, method: str, **metrics: Any) -> dict[str, Any]:
    """A valid table-1 run with the given metrics."""
    return {
        "format": results_format.FORMAT,
        "table": "table1",
        "run_id": run_id,
        "model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "num_blocks": 30, "dtype": "float32"},
        "method": {"name": method, "num_blocks_kept": 30 if method == "dense" else 24},
        "settings": {
            "calibration": {"num_samples": 10, "seq_len": 128, "seed": 0},
            "evaluation": {"zero_shot_limit": 20, "ppl_seq_len": 128, "ppl_max_windows": 64},
        },
        "metrics": metrics,
        "timings": {"total_s": 120.0},
        "versions": {"torch": "2.13.0"},
        "command": "python -m benchmarks.paper_tables.table1_block_criteria",
        "started_at": "2026-12-01T09:00:00+00:00",
        "finished_at": "2026-12-01T09:02:00+00:00",
    }


def zero_shot(accuracies: list[float]) -> dict[str, dict[str, float]]:
    return {task: {"acc": acc, "acc_stderr": 0.1} for task, acc in zip(TASKS, accuracies, strict=True)}


DENSE = make_run(
    "dense",
    "dense",
    num_parameters=134_515_008,
    perplexity={"wikitext2": 56.19, "ptb": 90.5},
    zero_shot=zero_shot([0.30, 0.70, 0.40, 0.50, 0.45, 0.25, 0.20]),
)
MAG = make_run(
    "magnitude-r0.20",
    "magnitude",
    num_parameters=113_270_784,
    perplexity={"wikitext2": 120.456, "ptb": 200.0},
    zero_shot=zero_shot([0.40, 0.60, 0.30, 0.50, 0.40, 0.25, 0.15]),
    latency={
        "batch_size": 1,
        "new_tokens": 32,
        "latency_s": 1.0,
        "dense_latency_s": 1.15,
        "speedup": 1.15,
        "ideal_speedup": 1.1875,
    },
)


def write(directory: Path, run: dict[str, Any], name: str | None = None) -> Path:
    path = directory / run["table"] / f"{name or run['run_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run), encoding="utf-8")
    return path


def rows_by_id(results_dir: Path) -> dict[str, list[str]]:
    spec = tables.table1_spec()
    runs = results_format.load_runs(results_dir).get("table1", {})
    return dict(zip(spec.row_ids(), tables.table_rows(spec, runs), strict=True))


def test_parses_runs_into_table_rows(tmp_path):
    write(tmp_path, DENSE)
    write(tmp_path, MAG)
    rows = rows_by_id(tmp_path)
    headers = [*tables.table1_spec().label_headers, *(c.header for c in tables.table1_spec().columns)]
    assert headers == [
        "Criterion",
        "Removed",
        "Blocks",
        "Params",
        "WikiText-2 PPL",
        "PTB PPL",
        "7-task avg acc (%)",
        "6 tasks w/o BoolQ",
        "Speed-up (batch 1)",
        "of ideal",
        "Run time",
    ]
    # 6 tasks w/o BoolQ: (70 + 40 + 50 + 45 + 25 + 20) / 6 = 41.67
    assert rows["dense"] == [
        "Dense",
        "-",
        "30/30",
        "134.5M",
        "56.19",
        "90.50",
        "40.0",
        "41.7",
        "1.00 (ref.)",
        "-",
        "2.0 min",
    ]
    # mean of 40, 60, 30, 50, 40, 25, 15 = 37.14 (w/o BoolQ: 36.67); 1.15 / 1.1875 = 96.8%
    assert rows["magnitude-r0.20"] == [
        "Mag+ (Shortened LLaMA)",
        "20% of blocks",
        "24/30",
        "113.3M",
        "120.46",
        "200.00",
        "37.1",
        "36.7",
        "1.15x",
        "97%",
        "2.0 min",
    ]


def test_missing_runs_render_not_run(tmp_path):
    write(tmp_path, DENSE)
    rows = rows_by_id(tmp_path)
    spec = tables.table1_spec()
    assert len(rows) == 13  # dense + 6 criteria x 2 ratios
    for run_id in spec.row_ids()[1:]:
        assert rows[run_id][2:] == [tables.NOT_RUN] * len(spec.columns)
    assert rows["sleb-r0.35"][:2] == ["SLEB", "35% of blocks"]
    markdown = tables.render_section(spec, results_format.load_runs(tmp_path)["table1"])
    assert "Runs: 1 of 13 (12 not run)." in markdown
    assert (
        "Settings of every run: zero-shot: first 20 documents per task; perplexity: first 64 windows of 128 tokens; "
        "calibration: 10 x 128 tokens, seed 0." in markdown
    )
    not_run_lines = [line for line in markdown.splitlines() if line.endswith(" not run | not run |")]
    assert len(not_run_lines) == 12 * 2  # main table and per-task table
    # a table with no results at all: every row not run, no invented figure
    spec3 = dataclasses.replace(tables.table3_spec(), command=None)
    section = tables.render_section(spec3, {})
    assert "No runner yet." in section
    assert "**Not run** (0 of 9 planned runs: `dense`, `block-ppl-r0.20`, `block-sleb-r0.20`," in section
    assert "|" not in section  # no table, so no cell that could look like a figure
    assert all(row[3:] == [tables.NOT_RUN] * len(spec3.columns) for row in tables.table_rows(spec3, {}))


def test_missing_metric_renders_not_measured(tmp_path):
    partial = make_run("taylor-r0.35", "taylor", num_parameters=99_000_000, perplexity={"wikitext2": 300.0})
    partial["metrics"]["zero_shot"] = {"piqa": {"acc": 0.5}, "boolq": {"acc": 0.7, "acc_stderr": None}}
    write(tmp_path, partial)
    row = rows_by_id(tmp_path)["taylor-r0.35"]
    assert row[4:10] == [
        "300.00",
        "not measured",
        "60.0 (2/7 tasks)",
        "50.0 (1/6 tasks)",
        "not measured",
        "not measured",
    ]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("metrics"), "missing keys ['metrics']"),
        (lambda r: r.update(format="something-else/9"), "`format` is 'something-else/9'"),
        (lambda r: r["metrics"]["perplexity"].update(ptb="high"), "`metrics.perplexity.ptb` must be a finite number"),
        (
            lambda r: r["metrics"]["zero_shot"]["piqa"].update(acc=60.0),
            "`metrics.zero_shot.piqa.acc` must be a fraction",
        ),
        (lambda r: r["metrics"]["zero_shot"]["piqa"].pop("acc"), "`metrics.zero_shot.piqa` has no `acc`"),
        (lambda r: r["metrics"]["latency"].pop("speedup"), "`metrics.latency` lacks ['speedup']"),
        (lambda r: r["metrics"].update(num_parameters=-5), "`metrics.num_parameters` must be a positive integer"),
        (lambda r: r.update(run_id=""), "`run_id` must be a non-empty string"),
        (lambda r: r["timings"].update(total_s="long"), "`timings.total_s` must be a finite number"),
    ],
)
def test_rejects_malformed_files(tmp_path, mutate, message):
    run = copy.deepcopy(MAG)
    mutate(run)
    path = write(tmp_path, run, name="bad")
    with pytest.raises(ResultsFormatError) as info:
        results_format.load_runs(tmp_path)
    assert message in str(info.value)
    assert str(path) in str(info.value)  # the error names the file


def test_rejects_invalid_json_duplicates_and_unknown_rows(tmp_path):
    bad = tmp_path / "table1" / "broken.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ResultsFormatError, match="not valid JSON"):
        results_format.load_runs(tmp_path)
    bad.unlink()

    write(tmp_path, MAG)
    write(tmp_path, MAG, name="copy")
    with pytest.raises(ResultsFormatError, match="is also in"):
        results_format.load_runs(tmp_path)
    (tmp_path / "table1" / "copy.json").unlink()

    typo = make_run("magnitud-r0.20", "magnitude", num_parameters=1)
    write(tmp_path, typo)
    with pytest.raises(ResultsFormatError, match=r"run ids \['magnitud-r0.20'\] that the table has no row for"):
        make_tables.generate(tmp_path)
    (tmp_path / "table1" / "magnitud-r0.20.json").unlink()

    other = dict(MAG, table="table9")
    write(tmp_path, other)
    with pytest.raises(ResultsFormatError, match=r"unknown tables \['table9'\]"):
        make_tables.generate(tmp_path)


def test_results_md_generation_keeps_prose(tmp_path):
    results_dir = tmp_path / "results"
    write(results_dir, DENSE)
    output = tmp_path / "RESULTS.md"
    output.write_text("# Title\n\nHand-written intro.\n", encoding="utf-8")
    args = ["--results-dir", str(results_dir), "--output", str(output)]
    assert make_tables.main(args) == 0
    first = output.read_text(encoding="utf-8")
    assert first.startswith("# Title\n\nHand-written intro.\n")
    assert "| Dense | - | 30/30 | 134.5M | 56.19 | 90.50 | 40.0 |" in first
    assert "`calibration.num_samples`: `10`" in first  # shared settings are listed
    assert "- versions: torch 2.13.0" in first
    output.write_text(first + "\n## Discussion\n\nMore prose.\n", encoding="utf-8")
    assert make_tables.main([*args, "--check"]) == 0
    write(results_dir, MAG)
    assert make_tables.main([*args, "--check"]) == 1  # stale: a new run appeared
    assert make_tables.main(args) == 0
    second = output.read_text(encoding="utf-8")
    assert second.count(make_tables.BEGIN) == 1 and second.endswith("## Discussion\n\nMore prose.\n")
    assert "| Mag+ (Shortened LLaMA) | 20% of blocks | 24/30 | 113.3M | 120.46 |" in second
    with pytest.raises(ValueError, match="broken generated block"):
        make_tables.splice(make_tables.BEGIN + " only the start", "x")


def test_run_all_writes_validated_files_and_resumes(tmp_path):
    calls = []

    def compute(run: dict[str, Any]):
        def inner() -> dict[str, Any]:
            calls.append(run["run_id"])
            record = copy.deepcopy(run)
            record["timings"] = {}
            return record

        return inner

    planned = [PlannedRun("dense", compute(DENSE)), PlannedRun("magnitude-r0.20", compute(MAG))]
    assert run_all("table1", planned, tmp_path, "cmd") == ["dense", "magnitude-r0.20"]
    stored = results_format.read_run(tmp_path / "table1" / "dense.json")
    assert stored["command"] == "cmd" and stored["timings"]["total_s"] >= 0
    assert stored["started_at"] != DENSE["started_at"] and stored["started_at"] <= stored["finished_at"]
    assert run_all("table1", planned, tmp_path, "cmd") == []  # resumed: both exist
    assert calls == ["dense", "magnitude-r0.20"]
    assert not list((tmp_path / "table1").glob("*.lock"))
    # a lock held by a live process (this one) makes the run skipped; a file lost mid-run is recomputed
    (tmp_path / "table1" / "dense.json").unlink()
    lock = tmp_path / "table1" / "dense.json.lock"
    lock.write_text(str(__import__("os").getpid()))
    assert run_all("table1", planned, tmp_path, "cmd") == []
    lock.write_text("999999999")  # a dead pid: taken over
    assert run_all("table1", planned, tmp_path, "cmd") == ["dense"]


def test_tracked_only_skips_uncommitted_runs(tmp_path):
    results_dir = tmp_path / "results"
    committed, uncommitted = write(results_dir, DENSE), write(results_dir, MAG)
    assert set(results_format.load_runs(results_dir)["table1"]) == {"dense", "magnitude-r0.20"}
    only = {committed.resolve()}
    assert set(results_format.load_runs(results_dir, only)["table1"]) == {"dense"}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", str(committed)], check=True)
    assert make_tables.tracked_files(results_dir) == only
    generated = make_tables.generate(results_dir, tracked_only=True)
    assert "Runs: 1 of 13 (12 not run)." in generated and uncommitted.exists()


def test_table5_runner_ids_are_the_rows_of_its_table_and_zeros_render():
    from benchmarks.paper_tables import table5_sparsity

    spec = tables.table5_spec()
    expected = [table5_sparsity.run_id(m, 0.5) for m in table5_sparsity.METHODS]
    expected.append(table5_sparsity.run_id("besa", 0.5, depth=True))
    assert spec.row_ids() == ["dense", *expected]
    run = make_run("besa-s0.50", "besa-s0.50", num_parameters=134_515_008, perplexity={"wikitext2": 80.0})
    run["table"] = "table5"
    run["method"]["achieved_sparsity"] = 0.49996
    rows = tables.table_rows(spec, {"besa-s0.50": run})
    besa = next(row for row in rows if row[0] == "BESA")
    assert besa[2] == "50.0%" and "80.00" in besa
    assert next(row for row in rows if row[0] == "Wanda")[2] == tables.NOT_RUN


def test_table4_runner_ids_and_schedules():
    import argparse

    from benchmarks.paper_tables import table4_schedules as table4

    ids = [table4.run_id(schedule, criterion) for criterion in table4.CRITERIA for schedule in table4.SCHEDULES]
    assert tables.table4_spec().row_ids() == ["dense", *ids]
    args = argparse.Namespace(num_samples=10, seq_len=128, seed=0, steps=32, events=4)
    iterative = table4.pruning_config("iterative", "taylor", args)
    assert iterative.prune_at_steps == [0, 6, 12, 18] and iterative.pruning_ratio == 0.35
    assert table4.pruning_config("one_shot", "ppl", args).schedule == "one_shot"


def test_table2_runner_ids_and_recipes():
    import argparse

    from benchmarks.paper_tables import table2_recovery as table2

    ids = [
        tables.block_run_id(criterion, ratio, f"-{recovery}")
        for recovery in table2.RECOVERIES
        for ratio in tables.BLOCK_RATIOS
        for criterion in tables.CRITERIA
    ]
    assert tables.table2_spec().row_ids() == ["dense", *ids]
    args = argparse.Namespace(steps=32, batch_size=4, lora_lr=1e-3, cpt_lr=1e-4)
    lora, cpt = table2.recovery_config("lora", args), table2.recovery_config("cpt", args)
    assert (lora.method, lora.resolved_learning_rate) == ("lora", 1e-3)
    assert (cpt.method, cpt.resolved_learning_rate) == ("full", 1e-4)
    assert lora.max_steps == cpt.max_steps == 32


def test_fill_evaluation_composes_the_record(monkeypatch):
    import torch
    from benchmarks.paper_tables import runner

    quality = ({"perplexity": {"wikitext2": 10.0}}, {"perplexity_settings": {"seq_len": 128}}, {"perplexity_s": 1.0})
    monkeypatch.setattr(runner, "evaluate_quality", lambda model, tokenizer, settings: quality)
    monkeypatch.setattr(runner, "measure_speedup", lambda d, m, t, s: ({"speedup": 1.2}, {"repeats": 3}, 2.0))
    model = torch.nn.Linear(3, 2)
    record = {"timings": {}}
    runner.fill_evaluation(record, model, None, runner.EvalSettings())
    assert (
        record["metrics"] == {"num_parameters": 8, "perplexity": {"wikitext2": 10.0}}
        and "latency" not in record["metrics"]
    )
    runner.fill_evaluation(record := {"timings": {"x": 0.5}}, model, None, runner.EvalSettings(), dense=model)
    assert record["metrics"]["latency"] == {"speedup": 1.2}
    assert record["details"] == {"perplexity_settings": {"seq_len": 128}, "latency_settings": {"repeats": 3}}
    assert record["timings"] == {"x": 0.5, "perplexity_s": 1.0, "latency_s": 2.0}


def test_table3_finercut_rows_are_prefixes_of_one_saved_search(tmp_path, monkeypatch, stories_path):
    """Table 3's FinerCut rows: targets met, each plan a prefix of one greedy search, which is saved and reused."""
    from benchmarks.paper_tables import table3_finercut as table3
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_depth import DepthPruner, remove_layers
    from optimum_depth.architectures import count_parameters

    model = AutoModelForCausalLM.from_pretrained(stories_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    for ratio, removed in zip(tables.BLOCK_RATIOS, ([3], [2, 3]), strict=True):  # table 1's block models
        params = count_parameters(remove_layers(copy.deepcopy(model), removed))
        for criterion in table3.BLOCK_CRITERIA:
            run = make_run(tables.block_run_id(criterion, ratio), criterion, num_parameters=params)
            run["method"].update(removed_blocks=removed, num_blocks_removed=len(removed))
            write(tmp_path, run)

    def fake_evaluation(record, pruned, *args, **kwargs):
        record.update(metrics={"num_parameters": count_parameters(pruned)}, details={})
        return record

    monkeypatch.setattr(table3, "fill_evaluation", fake_evaluation)
    args = table3.parse_args(
        ["--results-dir", str(tmp_path), "--search-file", str(tmp_path / "search.json"), "--seq-len", "16"]
        + ["--num-samples", "2", "--calibration", str(Path(__file__).parents[2] / "shared/data/calib")]
    )
    targets = table3.block_targets(args.results_dir)
    assert targets[0.35]["num_sublayers"] == 4
    search = functools.cache(lambda: table3.greedy_search(model, tokenizer, args, targets[0.35]["num_parameters"]))
    base = {"model": {"name": "stories260K"}, "settings": {}}
    by_params = table3.finercut_run(model, tokenizer, search, "params", 0.35, targets[0.35], args, base)
    by_count = table3.finercut_run(model, tokenizer, search, "count", 0.20, targets[0.20], args, base)
    assert by_params["run_id"] == "finercut-params-r0.35" and by_count["run_id"] == "finercut-count-r0.20"
    order = by_params["details"]["search"]["removal_order"]
    assert by_params["method"]["removal_order"] == order  # the widest target takes the whole path
    assert by_count["method"]["num_sublayers_removed"] == 2 and by_count["method"]["removal_order"] == order[:2]
    assert by_params["metrics"]["num_parameters"] <= targets[0.35]["num_parameters"]
    # planning a prefix equals running the search with the smaller target
    direct = DepthPruner(table3.finercut_config(args, num_layers_to_remove=2))
    direct.prune(copy.deepcopy(model), calibration=args.calibration, tokenizer=tokenizer)
    assert list(direct.last_plan.reason["removal_order"]) == order[:2]
    # the saved search is read back instead of searching again
    monkeypatch.setattr(DepthPruner, "score", lambda *a, **k: pytest.fail("searched again"))
    again = table3.greedy_search(model, tokenizer, args, targets[0.35]["num_parameters"])
    assert again.removal_order == search().removal_order
    block = table3.block_run(model, tokenizer, "sleb", 0.35, args, base)
    assert block["run_id"] == "block-sleb-r0.35" and block["method"]["num_sublayers_removed"] == 4
    spec = tables.table3_spec()
    assert {by_params["run_id"], by_count["run_id"], block["run_id"]} <= set(spec.row_ids())
    assert tables.sublayers_cell(block) == "4 (2 + 2)"
    settings = {"calibration": {"num_samples": 10, "seq_len": 64, "seed": 0, "applies_to": "FinerCut search"}}
    common, _ = tables.settings_summary({"a": {"settings": settings}})
    assert (
        tables.settings_line(common)
        == "Settings of every run: calibration: 10 x 64 tokens, seed 0, for the FinerCut search."
    )


def test_table_context_puts_the_dense_baseline_first_unless_skipped(tmp_path, monkeypatch):
    import argparse

    from benchmarks.paper_tables import context
    from benchmarks.paper_tables.runner import EvalSettings

    seen = {}

    def fake_run_all(table, runs, results_dir, command, force=False):
        seen.update(table=table, results_dir=results_dir, command=command, force=force)
        return [run.run_id for run in runs]

    monkeypatch.setattr(context, "run_all", fake_run_all)
    args = context.add_common_arguments(argparse.ArgumentParser()).parse_args(["--results-dir", str(tmp_path)])
    table = context.TableContext("table9", "benchmarks.x", args, None, None, EvalSettings.from_args(args), {})
    assert table.run([PlannedRun("a", dict)]) == ["dense", "a"]
    assert seen["table"] == "table9" and seen["results_dir"] == tmp_path and "benchmarks.x" in seen["command"]
    args.skip_dense = True
    assert table.run([PlannedRun("a", dict)]) == ["a"]


def test_committed_results_md_is_generated_from_the_committed_results():
    """benchmarks/RESULTS.md holds exactly the tables the committed results files give, every row run."""
    try:
        make_tables.tracked_files(make_tables.DEFAULT_RESULTS_DIR)
        only = ["--tracked-only"]  # a working checkout may hold runs still in progress
    except RuntimeError:
        only = []  # not a git checkout: every file present is a shipped one
    assert make_tables.main([*only, "--check"]) == 0
    runs = results_format.load_runs(make_tables.DEFAULT_RESULTS_DIR)
    for key, build in tables.TABLES.items():
        spec = build()
        assert set(runs.get(key, {})) == set(spec.row_ids()), f"{key} is missing runs"
        assert spec.command is not None and f"Command: `{spec.command}`" in make_tables.DEFAULT_OUTPUT.read_text()
