"""Result objects of an evaluation: one model (:class:`EvaluationResults`) or dense vs pruned (:class:`ComparisonResults`).

They hold measured values only. A section that was not measured stays empty and renders as "not measured"; nothing
is ever filled in. Both serialise to JSON (``to_json``/``from_json``) and render markdown tables (``to_markdown``),
which the model-card generator consumes.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..version import __version__
from .markdown import (
    NOT_MEASURED,
    comparison_markdown,
    evaluation_markdown,
    latency_table,
    perplexity_table,
    zero_shot_table,
)

__all__ = ["NOT_MEASURED", "ComparisonResults", "EvaluationResults", "LatencyRecord"]


def _load_json_text(text_or_path: str | os.PathLike) -> dict[str, Any]:
    text = os.fspath(text_or_path)
    if not text.lstrip().startswith("{"):
        if not os.path.isfile(text):
            raise FileNotFoundError(f"Results file {text!r} does not exist (and the argument is not JSON text).")
        with open(text, encoding="utf-8") as handle:
            text = handle.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"Evaluation results are not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError("Evaluation results JSON must be an object.")
    return data


def _write_text(text: str, path: str | os.PathLike | None) -> None:
    if path is not None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)


def _check_keys(cls, data: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in data.items() if k != "optimum_depth_version"}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} fields {unknown}; expected a subset of {sorted(known)}.")
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
    def key(self) -> tuple[int, int, int]:
        """``(batch_size, new_tokens, prompt_len)``: the grid point, used to pair dense and pruned records."""
        return (self.batch_size, self.new_tokens, self.prompt_len)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyRecord:
        """Builds a record from :func:`dataclasses.asdict` output, with a clear error on unknown fields."""
        return cls(**_check_keys(cls, dict(data)))


@dataclass
class EvaluationResults:
    """Everything measured about one model.

    Args:
        model_name: Name or path of the model.
        num_parameters: Total parameters (embeddings and head included), if counted.
        perplexity: Dataset name -> perplexity, e.g. ``{"wikitext2": 21.3}``.
        perplexity_settings: How it was measured (seq_len, add_bos, windows/tokens per dataset, data source).
        zero_shot: Task -> metrics, e.g. ``{"piqa": {"acc": 0.6, "acc_stderr": 0.01, "acc_norm": 0.61}}``.
        zero_shot_settings: How it was measured (limit, num_fewshot, lm-eval version, data paths, samples per task).
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
    latency: list[LatencyRecord] = field(default_factory=list)
    latency_settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

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

    # ------------------------------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Returns the results as a JSON-serialisable dict."""
        data = asdict(self)
        data["optimum_depth_version"] = __version__
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResults:
        """Builds results from :meth:`to_dict` output.

        Raises:
            ValueError: If ``model_name`` is missing or a field is unknown.
        """
        data = _check_keys(cls, dict(data))
        if "model_name" not in data:
            raise ValueError("Evaluation results need a `model_name`.")
        return cls(**data)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialises to JSON, and writes it to ``path`` when given.

        Returns:
            The JSON text.
        """
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        _write_text(text, path)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> EvaluationResults:
        """Parses results from JSON text or a file written by :meth:`to_json`."""
        return cls.from_dict(_load_json_text(text_or_path))

    # ----------------------------------------------------------------------------------------------------- markdown
    def perplexity_markdown(self) -> str:
        """Markdown table of the perplexities, or a "not measured" line."""
        return perplexity_table(self)

    def zero_shot_markdown(self) -> str:
        """Markdown table of zero-shot accuracies (percent), or a "not measured" line."""
        return zero_shot_table(self)

    def latency_markdown(self) -> str:
        """Markdown table of generation latency, or a "not measured" line."""
        return latency_table(self)

    def to_markdown(self) -> str:
        """Renders all sections as markdown (unmeasured sections say so)."""
        return evaluation_markdown(self)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass
class ComparisonResults:
    """Dense vs pruned model, measured side by side (same data, settings and, for latency, interleaved runs).

    Args:
        dense: Results of the original model.
        pruned: Results of the pruned model.
        extra: Anything else worth keeping (pruning config, notes).
    """

    dense: EvaluationResults
    pruned: EvaluationResults
    extra: dict[str, Any] = field(default_factory=dict)

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
        """Per grid point measured in both models: the speed-up and its fraction of the ideal.

        ``speedup`` is dense median latency / pruned median latency (the protocol's figure). ``paired_speedup`` is the
        median over repeats of dense / pruned latency of the same repeat round; with interleaved runs
        (:func:`~optimum_depth.evaluation.measure_latency` on both models) the two calls of a round ran back to back,
        so slowly varying machine load cancels out. It is ``None`` when the repeat counts differ.
        """
        ideal = self.ideal_speedup
        rows = []
        for dense in self.dense.latency:
            pruned = self.pruned.latency_record(dense.batch_size, dense.new_tokens, dense.prompt_len)
            if pruned is None:
                continue
            speedup = _ratio(dense.latency_s, pruned.latency_s)
            paired = None
            if dense.latencies_s and len(dense.latencies_s) == len(pruned.latencies_s):
                paired = statistics.median(d / p for d, p in zip(dense.latencies_s, pruned.latencies_s, strict=True))
            rows.append(
                {
                    "batch_size": dense.batch_size,
                    "new_tokens": dense.new_tokens,
                    "prompt_len": dense.prompt_len,
                    "dense_latency_s": dense.latency_s,
                    "pruned_latency_s": pruned.latency_s,
                    "speedup": speedup,
                    "fraction_of_ideal": _ratio(speedup, ideal),
                    "paired_speedup": paired,
                    "paired_fraction_of_ideal": _ratio(paired, ideal),
                }
            )
        return rows

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: both models plus the derived ratios (recomputed on load, never trusted)."""
        return {
            "dense": self.dense.to_dict(),
            "pruned": self.pruned.to_dict(),
            "extra": self.extra,
            "derived": {
                "ideal_speedup": self.ideal_speedup,
                "speedups": self.speedups(),
                "perplexity_ratios": self.perplexity_ratios(),
                "zero_shot_retention": self.zero_shot_retention(),
            },
            "optimum_depth_version": __version__,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComparisonResults:
        """Builds a comparison from :meth:`to_dict` output (derived values are recomputed).

        Raises:
            ValueError: If ``dense`` or ``pruned`` is missing.
        """
        missing = [k for k in ("dense", "pruned") if k not in data]
        if missing:
            raise ValueError(f"Comparison results are missing {missing}.")
        return cls(
            dense=EvaluationResults.from_dict(data["dense"]),
            pruned=EvaluationResults.from_dict(data["pruned"]),
            extra=dict(data.get("extra", {})),
        )

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialises to JSON, and writes it to ``path`` when given. Returns the JSON text."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        _write_text(text, path)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> ComparisonResults:
        """Parses a comparison from JSON text or a file written by :meth:`to_json`."""
        return cls.from_dict(_load_json_text(text_or_path))

    def to_markdown(self) -> str:
        """Renders the comparison as markdown tables (unmeasured sections say so)."""
        return comparison_markdown(self)
