"""Which runs make up each paper table, and their markdown rendering.

A :class:`TableSpec` lists its rows (one expected run each, keyed by ``run_id``) and its columns (functions of a run).
Rendering never invents a value: a row whose run is absent shows "not run" in every metric column, a metric absent
from a run shows "not measured". Runs of a table that the spec does not list are an error, so a typo in a run id
cannot silently drop a result.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .results_format import ResultsFormatError

NOT_RUN = "not run"
NOT_MEASURED = "not measured"
ZERO_SHOT_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")

# Table 1 (and 2): the block criteria in the order of docs/criteria.md, with the papers' names.
CRITERIA = {
    "magnitude": "Mag+ (Shortened LLaMA)",
    "taylor": "Taylor+ (Shortened LLaMA)",
    "ppl": "PPL (Shortened LLaMA)",
    "block_influence": "BI (ShortGPT)",
    "angular": "Angular (Gromov et al.)",
    "sleb": "SLEB",
}
BLOCK_RATIOS = (0.20, 0.35)

Run = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """One metric column: its header and how a run's cell is computed."""

    header: str
    cell: Callable[[Run], str]
    align: str = "---:"


@dataclass(frozen=True)
class Row:
    """One expected run: its ``run_id`` and the descriptive cells in front of the metric columns."""

    run_id: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class TableSpec:
    """A paper table: its rows (expected runs), label headers, metric columns and the command producing it."""

    key: str
    title: str
    label_headers: tuple[str, ...]
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    command: str | None = None
    detail_columns: tuple[Column, ...] = ()

    def row_ids(self) -> list[str]:
        """The run ids of the rows, in order."""
        return [row.run_id for row in self.rows]


# ------------------------------------------------------------------------------------------------------ cell helpers
def _metrics(run: Run) -> Mapping[str, Any]:
    return run.get("metrics") or {}


def format_float(value: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, or "not measured" for ``None``."""
    return NOT_MEASURED if value is None else f"{value:.{digits}f}"


def params_cell(run: Run) -> str:
    """Parameters in millions."""
    params = _metrics(run).get("num_parameters")
    return NOT_MEASURED if params is None else f"{params / 1e6:.1f}M"


def blocks_cell(run: Run) -> str:
    """Blocks kept out of the model's blocks, e.g. ``24/30`` (the dense reference keeps them all)."""
    total = run.get("model", {}).get("num_blocks")
    kept = total if _is_reference(run) else run.get("method", {}).get("num_blocks_kept")
    return NOT_MEASURED if kept is None or total is None else f"{kept}/{total}"


def perplexity_cell(corpus: str) -> Callable[[Run], str]:
    """Cell function: the perplexity on ``corpus``."""

    def cell(run: Run) -> str:
        return format_float((_metrics(run).get("perplexity") or {}).get(corpus))

    return cell


def zero_shot_average(
    run: Run, metric: str = "acc", tasks: tuple[str, ...] = ZERO_SHOT_TASKS
) -> tuple[float | None, int]:
    """Mean ``metric`` over the ``tasks`` measured in ``run`` (as a fraction), and how many tasks it covers."""
    zero_shot = _metrics(run).get("zero_shot") or {}
    values = [zero_shot[t][metric] for t in tasks if zero_shot.get(t, {}).get(metric) is not None]
    return (statistics.fmean(values) if values else None), len(values)


def zero_shot_average_cell(run: Run, tasks: tuple[str, ...] = ZERO_SHOT_TASKS) -> str:
    """The mean accuracy over ``tasks`` in percent; flags an average over fewer tasks than asked."""
    average, count = zero_shot_average(run, tasks=tasks)
    if average is None:
        return NOT_MEASURED
    text = f"{100 * average:.1f}"
    return text if count == len(tasks) else f"{text} ({count}/{len(tasks)} tasks)"


def without_boolq_cell(run: Run) -> str:
    """The mean accuracy over the six tasks other than BoolQ (whose subset swings with the yes/no bias)."""
    return zero_shot_average_cell(run, tuple(t for t in ZERO_SHOT_TASKS if t != "boolq"))


def task_cell(task: str, metric: str = "acc") -> Callable[[Run], str]:
    """Cell function: one task's accuracy in percent."""

    def cell(run: Run) -> str:
        value = ((_metrics(run).get("zero_shot") or {}).get(task) or {}).get(metric)
        return NOT_MEASURED if value is None else f"{100 * value:.1f}"

    return cell


def _is_reference(run: Run) -> bool:
    return run.get("method", {}).get("name") == "dense"


def speedup_cell(run: Run) -> str:
    """Measured speed-up against the dense model timed in the same run (the dense row is the reference)."""
    if _is_reference(run):
        return "1.00 (ref.)"
    latency = _metrics(run).get("latency")
    return NOT_MEASURED if latency is None else f"{latency['speedup']:.2f}x"


def ideal_fraction_cell(run: Run) -> str:
    """Measured speed-up as a percentage of the ideal one (dense parameters / pruned parameters)."""
    if _is_reference(run):
        return "-"
    latency = _metrics(run).get("latency")
    if latency is None or not latency.get("ideal_speedup"):
        return NOT_MEASURED
    return f"{100 * latency['speedup'] / latency['ideal_speedup']:.0f}%"


def time_cell(run: Run) -> str:
    """Total wall time of the run in minutes."""
    total = (run.get("timings") or {}).get("total_s")
    return NOT_MEASURED if total is None else f"{total / 60:.1f} min"


def sparsity_cell(run: Run) -> str:
    """Achieved fraction of zero weights in the sparsified linear layers (``-`` for unsparsified runs)."""
    achieved = (run.get("method") or {}).get("achieved_sparsity")
    return "-" if achieved is None else f"{100 * achieved:.1f}%"


QUALITY_COLUMNS = (
    Column("Params", params_cell),
    Column("WikiText-2 PPL", perplexity_cell("wikitext2")),
    Column("PTB PPL", perplexity_cell("ptb")),
    Column("7-task avg acc (%)", zero_shot_average_cell),
    Column("6 tasks w/o BoolQ", without_boolq_cell),
    Column("Speed-up (batch 1)", speedup_cell),
    Column("of ideal", ideal_fraction_cell),
)
TASK_COLUMNS = tuple(Column(task, task_cell(task)) for task in ZERO_SHOT_TASKS)
BLOCK_TABLE_COLUMNS = (Column("Blocks", blocks_cell), *QUALITY_COLUMNS, Column("Run time", time_cell))
"""The metric columns of the tables whose rows remove whole blocks (1, 2 and 4)."""


# ---------------------------------------------------------------------------------------------------- table specs
def block_run_id(criterion: str, ratio: float, suffix: str = "") -> str:
    """Run id of a block-criterion run, e.g. ``magnitude-r0.20`` (``suffix`` e.g. ``-lora``)."""
    return f"{criterion}-r{ratio:.2f}{suffix}"


DENSE_ROW = Row("dense", ("Dense", "-"))


def table1_spec() -> TableSpec:
    """Table 1: every block criterion at 20% and 35% of the blocks removed, no retraining."""
    rows = [DENSE_ROW] + [
        Row(block_run_id(criterion, ratio), (label, f"{ratio:.0%} of blocks"))
        for ratio in BLOCK_RATIOS
        for criterion, label in CRITERIA.items()
    ]
    return TableSpec(
        key="table1",
        title="Table 1: block criteria, no retraining",
        label_headers=("Criterion", "Removed"),
        rows=tuple(rows),
        columns=BLOCK_TABLE_COLUMNS,
        command="python -m benchmarks.paper_tables.table1_block_criteria",
        detail_columns=TASK_COLUMNS,
    )


def table2_spec() -> TableSpec:
    """Table 2: table 1's models after LoRA recovery and after short full continued pretraining (CPT)."""
    recoveries = {"lora": "LoRA", "cpt": "CPT"}
    rows = [Row("dense", ("Dense", "-", "-"))] + [
        Row(block_run_id(criterion, ratio, f"-{rec}"), (label, f"{ratio:.0%} of blocks", rec_label))
        for rec, rec_label in recoveries.items()
        for ratio in BLOCK_RATIOS
        for criterion, label in CRITERIA.items()
    ]
    return TableSpec(
        key="table2",
        title="Table 2: block criteria after LoRA recovery and after continued pretraining",
        label_headers=("Criterion", "Removed", "Recovery"),
        rows=tuple(rows),
        columns=BLOCK_TABLE_COLUMNS,
        command="python -m benchmarks.paper_tables.table2_recovery",
        detail_columns=TASK_COLUMNS,
    )


def table3_run_id(method: str, matched_on: str, ratio: float) -> str:
    """Run id of a table 3 run, e.g. ``block-ppl-r0.20`` or ``finercut-params-r0.20`` (``matched_on`` may be empty)."""
    return f"{method}-{matched_on}-r{ratio:.2f}" if matched_on else f"{method}-r{ratio:.2f}"


def sublayers_cell(run: Run) -> str:
    """Sublayers removed as ``total (attention + MLP)``; a removed block counts one of each."""
    method = run.get("method") or {}
    if _is_reference(run):
        return "0"
    if "removed_attention" in method:
        attention, mlp = len(method["removed_attention"]), len(method["removed_mlp"])
    elif "removed_blocks" in method:
        attention = mlp = len(method["removed_blocks"])
    else:
        return NOT_MEASURED
    return f"{attention + mlp} ({attention} + {mlp})"


def table3_spec() -> TableSpec:
    """Table 3: FinerCut (sublayers) vs whole-block pruning, matched on parameters and on sublayer count."""
    rows = [Row("dense", ("Dense", "-", "-"))]
    for ratio in BLOCK_RATIOS:
        size = f"{ratio:.0%} of blocks"
        rows += [
            Row(table3_run_id("block-ppl", "", ratio), ("Block PPL", size, "-")),
            Row(table3_run_id("block-sleb", "", ratio), ("Block SLEB", size, "-")),
            Row(table3_run_id("finercut", "params", ratio), ("FinerCut (sublayers)", size, "parameters")),
            Row(table3_run_id("finercut", "count", ratio), ("FinerCut (sublayers)", size, "sublayer count")),
        ]
    return TableSpec(
        key="table3",
        title="Table 3: FinerCut vs block pruning at equal parameter reduction and equal sublayer count",
        label_headers=("Method", "Size of", "Matched on"),
        rows=tuple(rows),
        columns=(Column("Sublayers removed (attn + MLP)", sublayers_cell), *QUALITY_COLUMNS),
        command="python -m benchmarks.paper_tables.table3_finercut",
        detail_columns=TASK_COLUMNS,
    )


def table4_spec() -> TableSpec:
    """Table 4: one-shot vs iterative (callback) pruning at 35% of the blocks."""
    rows = [DENSE_ROW] + [
        Row(f"{schedule}-{criterion}-r0.35", (CRITERIA[criterion], schedule.replace("_", "-")))
        for criterion in ("taylor", "ppl")
        for schedule in ("one_shot", "iterative")
    ]
    return TableSpec(
        key="table4",
        title="Table 4: one-shot vs iterative pruning at 35% of the blocks",
        label_headers=("Criterion", "Schedule"),
        rows=tuple(rows),
        columns=BLOCK_TABLE_COLUMNS,
        command="python -m benchmarks.paper_tables.table4_schedules",
        detail_columns=TASK_COLUMNS,
    )


def table5_spec() -> TableSpec:
    """Table 5: BESA vs Wanda vs magnitude at 50% unstructured sparsity, and depth pruning + BESA."""
    rows = (
        DENSE_ROW,
        Row("magnitude-s0.50", ("Magnitude (unstructured)", "50% sparsity")),
        Row("wanda-s0.50", ("Wanda", "50% sparsity")),
        Row("besa-s0.50", ("BESA", "50% sparsity")),
        Row("depth-r0.20+besa-s0.50", ("Depth 20% + BESA", "20% of blocks + 50% sparsity")),
    )
    return TableSpec(
        key="table5",
        title="Table 5: unstructured sparsity (BESA, Wanda, magnitude) and depth + BESA",
        label_headers=("Method", "Target"),
        rows=rows,
        columns=(Column("Zeros", sparsity_cell), *QUALITY_COLUMNS, Column("Run time", time_cell)),
        command="python -m benchmarks.paper_tables.table5_sparsity",
        detail_columns=TASK_COLUMNS,
    )


TABLES: dict[str, Callable[[], TableSpec]] = {
    "table1": table1_spec,
    "table2": table2_spec,
    "table3": table3_spec,
    "table4": table4_spec,
    "table5": table5_spec,
}


# ------------------------------------------------------------------------------------------------------ rendering
def check_runs(spec: TableSpec, runs: Mapping[str, Run]) -> None:
    """Raises :class:`ResultsFormatError` if ``runs`` holds a run id that ``spec`` has no row for."""
    unknown = sorted(set(runs) - set(spec.row_ids()))
    if unknown:
        raise ResultsFormatError(
            f"{spec.key}: results for run ids {unknown} that the table has no row for; known: {spec.row_ids()}."
        )


def table_rows(spec: TableSpec, runs: Mapping[str, Run], columns: tuple[Column, ...] | None = None) -> list[list[str]]:
    """The cells of every row: labels, then one cell per column ("not run" when the row's run is absent)."""
    check_runs(spec, runs)
    columns = spec.columns if columns is None else columns
    cells = []
    for row in spec.rows:
        run = runs.get(row.run_id)
        metrics = [NOT_RUN] * len(columns) if run is None else [column.cell(run) for column in columns]
        cells.append([*row.labels, *metrics])
    return cells


def markdown_table(headers: list[str], aligns: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_table(spec: TableSpec, runs: Mapping[str, Run], columns: tuple[Column, ...] | None = None) -> str:
    """The markdown table of ``spec`` filled from ``runs`` (run id -> run)."""
    columns = spec.columns if columns is None else columns
    headers = [*spec.label_headers, *(c.header for c in columns)]
    aligns = ["---"] * len(spec.label_headers) + [c.align for c in columns]
    return markdown_table(headers, aligns, table_rows(spec, runs, columns))


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict) and value:
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: json.dumps(value, sort_keys=True)}


def settings_summary(runs: Mapping[str, Run], field: str = "settings") -> tuple[dict[str, str], list[str]]:
    """The ``field`` values shared by every run (flattened ``a.b`` keys -> JSON values), and the keys that differ."""
    flats = [_flatten(run.get(field) or {}) for run in runs.values()]
    if not flats:
        return {}, []
    keys = sorted(set().union(*flats))
    common = {k: flats[0][k] for k in keys if all(k in f and f[k] == flats[0][k] for f in flats)}
    return common, [k for k in keys if k not in common]


def settings_line(common: Mapping[str, str]) -> str:
    """One sentence with the settings every reader needs (zero-shot limit, perplexity windows, calibration)."""

    def get(key: str) -> Any:
        return json.loads(common[key]) if key in common else None

    parts = []
    limit = get("evaluation.zero_shot_limit")
    if "evaluation.zero_shot_limit" in common:
        parts.append("zero-shot: " + (f"first {limit} documents per task" if limit else "every document"))
    windows, seq_len = get("evaluation.ppl_max_windows"), get("evaluation.ppl_seq_len")
    if seq_len:
        parts.append(f"perplexity: {f'first {windows}' if windows else 'all'} windows of {seq_len} tokens")
    samples, length = get("calibration.num_samples"), get("calibration.seq_len")
    if samples and length:
        scope = get("calibration.applies_to")
        scope = f", for the {scope}" if scope else ""
        parts.append(f"calibration: {samples} x {length} tokens, seed {get('calibration.seed')}{scope}")
    new_tokens = get("evaluation.latency_new_tokens")
    if new_tokens:
        parts.append(
            f"latency: {new_tokens} new tokens, {get('evaluation.latency_repeats')} timed repeats interleaved with dense"
        )
    return ("Settings of every run: " + "; ".join(parts) + ".") if parts else ""


def render_section(spec: TableSpec, runs: Mapping[str, Run]) -> str:
    """A table's markdown section: command, main table, per-task table, settings and the runs' provenance.

    A table none of whose runs exists is summarised in one "not run" line listing its planned rows.
    """
    check_runs(spec, runs)
    done = [run_id for run_id in spec.row_ids() if run_id in runs]
    lines = [f"### {spec.title}", ""]
    lines += [f"Command: `{spec.command}`" if spec.command else "No runner yet.", ""]
    if not done:
        planned = ", ".join(f"`{run_id}`" for run_id in spec.row_ids())
        return "\n".join([*lines, f"**Not run** (0 of {len(spec.rows)} planned runs: {planned}).", ""])
    common, differing = settings_summary({k: runs[k] for k in done})
    lines += [f"Runs: {len(done)} of {len(spec.rows)} ({len(spec.rows) - len(done)} not run).", ""]
    line = settings_line(common)
    lines += [line, ""] if line else []
    lines += [render_table(spec, runs), ""]
    if spec.detail_columns:
        lines += ["Zero-shot accuracy per task (%):", "", render_table(spec, runs, spec.detail_columns), ""]
    lines += ["<details><summary>Settings shared by these runs</summary>", ""]
    lines += [f"- `{key}`: `{value}`" for key, value in common.items()]
    if differing:
        lines += [f"- differ between runs: {', '.join(f'`{k}`' for k in differing)}"]
    common_versions, differing_versions = settings_summary({k: runs[k] for k in done}, "versions")
    lines += [f"- versions: {', '.join(f'{k} {json.loads(v)}' for k, v in common_versions.items())}"]
    if differing_versions:
        lines += [f"- versions differ between runs: {', '.join(differing_versions)}"]
    lines += ["", "</details>", ""]
    provenance = [
        [run_id, runs[run_id]["finished_at"], time_cell(runs[run_id]), f"`{runs[run_id]['command']}`"]
        for run_id in done
    ]
    lines += [markdown_table(["Run", "Finished", "Wall time", "Command"], ["---"] * 4, provenance), ""]
    return "\n".join(lines)


def render_all(
    runs_by_table: Mapping[str, Mapping[str, Run]], tables: Mapping[str, Callable[[], TableSpec]] = TABLES
) -> str:
    """Every table's section, in order.

    Raises:
        ResultsFormatError: If a results file names a table that does not exist, or an unknown run id.
    """
    unknown = sorted(set(runs_by_table) - set(tables))
    if unknown:
        raise ResultsFormatError(f"Results for unknown tables {unknown}; known: {sorted(tables)}.")
    return "\n".join(render_section(factory(), runs_by_table.get(key, {})) for key, factory in tables.items())
