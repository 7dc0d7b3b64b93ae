"""Result objects of an evaluation: one model (:class:`EvaluationResults`) or dense vs pruned (:class:`ComparisonResults`).

They hold measured values only. A section that was not measured stays empty and renders as "not measured"; nothing
is ever filled in. Both follow the library's persistence convention (``save_pretrained`` / ``from_pretrained``,
``to_dict`` / ``from_dict``, see :mod:`optimum_depth.persistence`); :func:`load_results` reads either kind from a file
or folder. They do not render themselves: :func:`~.markdown.results_markdown` draws their markdown tables, and the
model-card generator (:mod:`optimum_depth.publishing.cards`) its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from ..constants import RESULTS_NAME
from ..errors import DataError
from ..persistence import JsonRecord, read_json_object
from .latency_stats import Spread, repeat_cautions, speedup_summary
from .paired import PairedDifference, paired_zero_shot

__all__ = ["ComparisonResults", "EvaluationResults", "LatencyRecord", "load_results"]


def _check_keys(cls, data: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f"Unknown {cls.__name__} fields {unknown}; expected a subset of {sorted(known)}.")
    return data


@dataclass
class LatencyRecord:
    """Generation latency for one point of the (batch size, output length) grid.

    Args:
        batch_size: Sequences generated at once.
        new_tokens: Tokens generated per sequence (forced: ``min_new_tokens == max_new_tokens``).
        prompt_len: Prompt tokens per sequence.
        latency_s: Median wall time of one ``generate`` call over the repeats, in seconds.
        tokens_per_s: Generated tokens per second, ``batch_size * new_tokens / latency_s``.
        peak_memory_mb: Peak memory during the calls in MiB (CUDA allocator on GPU, sampled process RSS on CPU), or
            ``None`` when not measured.
        latencies_s: Every timed repeat, in seconds.
    """

    batch_size: int
    new_tokens: int
    prompt_len: int
    latency_s: float
    tokens_per_s: float
    peak_memory_mb: float | None = None
    latencies_s: list[float] = field(default_factory=list)

    @property
    def spread(self) -> Spread | None:
        """Median, min-max and quartiles of the timed repeats (``None`` when they were not recorded)."""
        return Spread.of(self.latencies_s)

    @property
    def key(self) -> tuple[int, int, int]:
        """``(batch_size, new_tokens, prompt_len)``: the grid point, used to pair dense and pruned records."""
        return (self.batch_size, self.new_tokens, self.prompt_len)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyRecord:
        """Builds a record from :func:`dataclasses.asdict` output, with a clear error on unknown fields."""
        return cls(**_check_keys(cls, dict(data)))


@dataclass
class EvaluationResults(JsonRecord):
    """Everything measured about one model.

    Args:
        model_name: Name or path of the model.
        num_parameters: Total parameters (embeddings and head included), if counted.
        perplexity: Dataset name -> perplexity, e.g. ``{"wikitext2": 21.3}``.
        perplexity_settings: How it was measured (seq_len, add_bos, windows/tokens per dataset, data source).
        zero_shot: Task -> metrics, e.g. ``{"piqa": {"acc": 0.6, "acc_stderr": 0.01, "acc_norm": 0.61}}``.
        zero_shot_settings: How it was measured (limit, num_fewshot, lm-eval version, data paths, samples per task).
        zero_shot_documents: Task -> every document's outcome (``{"documents", "fingerprint", "acc": "0110..."}``,
            see :func:`~.zero_shot.document_outcomes`), what the paired dense-vs-pruned test needs.
        latency: One :class:`LatencyRecord` per grid point.
        latency_settings: How it was measured (device, dtype, threads, warmup, repeats, torch version).
        extra: Anything else worth keeping (pruning summary, notes).
    """

    model_name: str
    num_parameters: int | None = None
    perplexity: dict[str, float] = field(default_factory=dict)
    perplexity_settings: dict[str, Any] = field(default_factory=dict)
    zero_shot: dict[str, dict[str, float]] = field(default_factory=dict)
    zero_shot_settings: dict[str, Any] = field(default_factory=dict)
    zero_shot_documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: list[LatencyRecord] = field(default_factory=list)
    latency_settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    file_name: ClassVar[str] = RESULTS_NAME
    required_keys: ClassVar[tuple[str, ...]] = ("model_name",)

    def __post_init__(self) -> None:
        self.latency = [r if isinstance(r, LatencyRecord) else LatencyRecord.from_dict(r) for r in self.latency]

    # ----------------------------------------------------------------------------------------------- derived values
    def zero_shot_average(self, metric: str = "acc") -> float | None:
        """Mean of ``metric`` over the zero-shot tasks that report it, or ``None`` if none does."""
        values = [m[metric] for m in self.zero_shot.values() if metric in m]
        return sum(values) / len(values) if values else None

    def latency_record(self, batch_size: int, new_tokens: int, prompt_len: int | None = None) -> LatencyRecord | None:
        """The latency record of a grid point (any prompt length when ``prompt_len`` is ``None``), if measured."""
        for record in self.latency:
            if (record.batch_size, record.new_tokens) == (batch_size, new_tokens) and (
                prompt_len is None or record.prompt_len == prompt_len
            ):
                return record
        return None

    def latency_cautions(self) -> list[str]:
        """Why a latency should not be read as fact (noisy or unrecorded repeats), per grid point; empty if none."""
        return [
            f"batch {record.batch_size}, {record.new_tokens} new tokens: {caution}"
            for record in self.latency
            for caution in repeat_cautions(record.latencies_s)
        ]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass
class ComparisonResults(JsonRecord):
    """Dense vs pruned model, measured side by side (same data, settings and, for latency, interleaved runs).

    Args:
        dense: Results of the original model.
        pruned: Results of the pruned model.
        extra: Anything else worth keeping (pruning config, notes).
    """

    dense: EvaluationResults
    pruned: EvaluationResults
    extra: dict[str, Any] = field(default_factory=dict)

    file_name: ClassVar[str] = RESULTS_NAME
    required_keys: ClassVar[tuple[str, ...]] = ("dense", "pruned")
    derived_keys: ClassVar[tuple[str, ...]] = ("derived",)

    def __post_init__(self) -> None:
        if isinstance(self.dense, dict):
            self.dense = EvaluationResults.from_dict(self.dense)
        if isinstance(self.pruned, dict):
            self.pruned = EvaluationResults.from_dict(self.pruned)

    @property
    def ideal_speedup(self) -> float | None:
        """Dense parameters / pruned parameters: the memory-bound limit of the decoding speed-up."""
        return _ratio(self.dense.num_parameters, self.pruned.num_parameters)

    def speedups(self) -> list[dict[str, Any]]:
        """Per grid point measured in both models: the speed-up with its spread, its fraction of the ideal, cautions.

        ``speedup`` is dense median latency / pruned median latency (the protocol's figure); ``paired_speedup`` the
        median over repeat rounds of dense / pruned latency of the same round, with its range. ``noisy``,
        ``above_ideal`` and ``cautions`` say when the figure should not be read as fact (see
        :func:`~optimum_depth.evaluation.latency_stats.speedup_summary`).
        """
        ideal = self.ideal_speedup
        rows = []
        for dense in self.dense.latency:
            pruned = self.pruned.latency_record(dense.batch_size, dense.new_tokens, dense.prompt_len)
            if pruned is None:
                continue
            summary = speedup_summary(
                dense.latency_s, pruned.latency_s, dense.latencies_s, pruned.latencies_s, ideal, dense.batch_size
            )
            rows.append(
                {
                    "batch_size": dense.batch_size,
                    "new_tokens": dense.new_tokens,
                    "prompt_len": dense.prompt_len,
                    "dense_latency_s": dense.latency_s,
                    "pruned_latency_s": pruned.latency_s,
                    **summary,
                }
            )
        return rows

    def latency_cautions(self) -> list[str]:
        """Every caution of :meth:`speedups`, prefixed with its grid point (empty when every figure holds)."""
        return [
            f"batch {row['batch_size']}, {row['new_tokens']} new tokens: {caution}"
            for row in self.speedups()
            for caution in row["cautions"]
        ]

    def perplexity_ratios(self) -> dict[str, float]:
        """Pruned PPL / dense PPL for each dataset measured in both."""
        return {
            name: self.pruned.perplexity[name] / value
            for name, value in self.dense.perplexity.items()
            if name in self.pruned.perplexity and value
        }

    def zero_shot_retention(self, metric: str = "acc") -> dict[str, float]:
        """Pruned / dense ``metric`` for each task measured in both (1.0 = fully retained)."""
        out = {}
        for task, metrics in self.dense.zero_shot.items():
            other = self.pruned.zero_shot.get(task, {})
            if metric in metrics and metric in other and metrics[metric]:
                out[task] = other[metric] / metrics[metric]
        return out

    def zero_shot_differences(self, metric: str = "acc") -> dict[str, PairedDifference]:
        """Paired pruned-minus-dense differences per task and their ``"mean"`` (:mod:`.paired`).

        Empty when either model has no per-document outcomes (results of older versions): no verdict is then given.
        """
        if not self.dense.zero_shot_documents or not self.pruned.zero_shot_documents:
            return {}
        return paired_zero_shot(self.dense.zero_shot_documents, self.pruned.zero_shot_documents, metric)

    def _fields_to_dict(self) -> dict[str, Any]:
        """Both models plus the derived ratios (written for readers, recomputed on load, never trusted)."""
        return {
            "dense": self.dense.to_dict(),
            "pruned": self.pruned.to_dict(),
            "extra": self.extra,
            "derived": {
                "ideal_speedup": self.ideal_speedup,
                "speedups": self.speedups(),
                "perplexity_ratios": self.perplexity_ratios(),
                "zero_shot_retention": self.zero_shot_retention(),
                "zero_shot_paired": {task: d.to_dict() for task, d in self.zero_shot_differences().items()},
            },
        }

    @classmethod
    def _fields_from_dict(cls, data: dict[str, Any]) -> ComparisonResults:
        return cls(
            dense=EvaluationResults.from_dict(data["dense"]),
            pruned=EvaluationResults.from_dict(data["pruned"]),
            extra=dict(data.get("extra", {})),
        )


RESULT_TYPES: dict[str, type[EvaluationResults] | type[ComparisonResults]] = {
    "EvaluationResults": EvaluationResults,
    "ComparisonResults": ComparisonResults,
}


def load_results(path: str | os.PathLike) -> EvaluationResults | ComparisonResults:
    """Reads evaluation results of either kind from a file or a folder holding ``evaluation_results.json``.

    The kind is the file's ``record_type`` (files of older versions: a comparison has ``dense`` and ``pruned``).

    Args:
        path: The JSON file, or its folder.

    Returns:
        :class:`EvaluationResults` or :class:`ComparisonResults`.

    Raises:
        DataNotFoundError: If the file does not exist.
        DataError: If it is not valid JSON or not results.
    """
    file = Path(path) / RESULTS_NAME if Path(path).is_dir() else Path(path)
    data = read_json_object(file, "evaluation results")
    kind = data.get("record_type") or (
        "ComparisonResults" if {"dense", "pruned"} <= set(data) else "EvaluationResults"
    )
    if kind not in RESULT_TYPES:
        raise DataError(f"{str(file)!r} holds a {kind!r} record, not evaluation results.")
    return RESULT_TYPES[kind].from_pretrained(file)
