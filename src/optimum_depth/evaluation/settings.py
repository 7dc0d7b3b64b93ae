"""What to measure and how: one settings object per measurement, grouped in :class:`EvaluationSettings`.

Like ``TrainingArguments``, these dataclasses replace long argument lists: :func:`~.evaluate.evaluate_model` and
:func:`~.evaluate.compare_models` take one :class:`EvaluationSettings`, whose sections are measured when set and
skipped (reported as "not measured") when ``None``. Values are checked when the settings are built.

They are also the one source of defaults: the keyword defaults of :func:`~.perplexity.evaluate_perplexity` and
:func:`~.latency.measure_latency` are read from these dataclasses' fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..field_checks import check_positive_int
from .ppl_data import PerplexityText
from .task_data import ZERO_SHOT_TASKS

__all__ = ["EvaluationSettings", "LatencySettings", "PerplexitySettings", "ZeroShotSettings"]

BOS_MODES = ("first", "every", "none")
BOS_CHOICES = ("auto", *BOS_MODES)
"""What ``evaluate_perplexity(bos=...)`` accepts: a mode, or ``"auto"`` (resolved by
:func:`~.perplexity.resolve_bos`)."""
DEFAULT_PROMPT = "The Leaning Tower of Pisa is known for"  # Shortened LLaMA's prompt


def _positive(name: str, value: Any, allow_none: bool = False) -> None:
    if not (value is None and allow_none):
        check_positive_int(name, value)


@dataclass
class PerplexitySettings:
    """Windowed perplexity (see :func:`~.perplexity.evaluate_perplexity`).

    Args:
        datasets: Corpus names (``"wikitext2"``, ``"ptb"``, ``"c4"``) or :class:`~.ppl_data.PerplexityText` objects.
        seq_len: Window length (128 as Shortened LLaMA, 2048 as SparseGPT/Wanda).
        batch_size: Windows per forward pass.
        bos: ``"auto"`` (``"every"`` for models that need BOS on every window, e.g. Gemma; ``"first"`` otherwise),
            ``"first"``, ``"every"`` or ``"none"``.
        max_windows: At most this many windows per corpus (the first ones); ``None`` for all.
        source: ``"auto"`` (local file, else the Hub), ``"local"`` or ``"hub"``.
    """

    datasets: tuple[str | PerplexityText, ...] = ("wikitext2",)
    seq_len: int = 128
    batch_size: int = 8
    bos: str = "auto"
    max_windows: int | None = None
    source: str = "auto"

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        if not self.datasets:
            raise ConfigError("`datasets` is empty; set `perplexity=None` to skip perplexity.")
        _positive("seq_len", self.seq_len)
        _positive("batch_size", self.batch_size)
        _positive("max_windows", self.max_windows, allow_none=True)
        if self.bos not in BOS_CHOICES:
            raise ConfigError(f"`bos` must be one of {BOS_CHOICES}, got {self.bos!r}.")


@dataclass
class ZeroShotSettings:
    """Zero-shot accuracy with lm-eval (see :func:`~.zero_shot.evaluate_zero_shot`).

    Args:
        tasks: lm-eval task names (the seven of the papers by default).
        limit: Documents per task: an int, a fraction in (0, 1], or ``None`` for all.
        batch_size: lm-eval batch size.
        num_fewshot: Few-shot examples (0: zero-shot).
        seed: Seed of lm-eval's sampling.
        task_files: Task -> local file, overriding the default file of a task.
        max_length: Context length given to lm-eval (default: the model's).
        source: ``"local"`` (shipped configs + local files) or ``"hub"`` (lm-eval's stock tasks).
    """

    tasks: tuple[str, ...] = tuple(ZERO_SHOT_TASKS)
    limit: int | float | None = None
    batch_size: int = 8
    num_fewshot: int = 0
    seed: int = 1234
    task_files: dict[str, str | os.PathLike] | None = None
    max_length: int | None = None
    source: str = "local"

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        if not self.tasks:
            raise ConfigError("`tasks` is empty; set `zero_shot=None` to skip zero-shot accuracy.")
        _positive("batch_size", self.batch_size)
        limit = self.limit
        if limit is not None and (
            isinstance(limit, bool)
            or not isinstance(limit, (int, float))
            or limit <= 0
            or (isinstance(limit, float) and limit > 1 and not limit.is_integer())
        ):
            raise ConfigError(f"`limit` must be a positive int or a fraction in (0, 1], got {limit!r}.")
        if isinstance(limit, float) and limit > 1:
            self.limit = int(limit)  # 200.0 from a command line means 200 documents
        if self.source not in ("local", "hub"):
            raise ConfigError(f"`source` must be 'local' or 'hub', got {self.source!r}.")
        check_positive_int("num_fewshot", self.num_fewshot, allow_zero=True)


@dataclass
class LatencySettings:
    """Generation latency, Shortened LLaMA's protocol (see :func:`~.latency.measure_latency`).

    Args:
        batch_sizes: Batch sizes of the grid.
        new_tokens: Output lengths of the grid (forced: ``min_new_tokens == max_new_tokens``).
        prompt: The prompt, repeated ``batch_size`` times.
        prompt_len: Cut or repeat the prompt to this many tokens (``None``: as it tokenizes).
        warmup: Untimed calls before timing.
        repeats: Timed calls; the median is reported.
        measure_memory: Also record the peak memory.
    """

    batch_sizes: tuple[int, ...] = (1,)
    new_tokens: tuple[int, ...] = (128,)
    prompt: str = DEFAULT_PROMPT
    prompt_len: int | None = None
    warmup: int = 2
    repeats: int = 5
    measure_memory: bool = True

    def __post_init__(self) -> None:
        self.batch_sizes, self.new_tokens = tuple(self.batch_sizes), tuple(self.new_tokens)
        if not self.batch_sizes or not self.new_tokens:
            raise ConfigError("`batch_sizes` and `new_tokens` must not be empty; set `latency=None` to skip latency.")
        for value in (*self.batch_sizes, *self.new_tokens):
            _positive("batch_sizes/new_tokens", value)
        _positive("repeats", self.repeats)
        _positive("prompt_len", self.prompt_len, allow_none=True)
        check_positive_int("warmup", self.warmup, allow_zero=True)


@dataclass
class EvaluationSettings:
    """Everything one evaluation measures; a section left ``None`` is not measured.

    Args:
        perplexity: Perplexity settings (WikiText-2 with 128-token windows by default).
        zero_shot: Zero-shot settings, or ``None`` to skip.
        latency: Latency settings, or ``None`` to skip.
        data_dir: Local data folder for perplexity and zero-shot (default: ``$OPTIMUM_DEPTH_DATA_DIR`` or
            ``../shared/data``).

    Example:
        ```python
        >>> settings = EvaluationSettings(
        ...     perplexity=PerplexitySettings(datasets=("wikitext2", "ptb"), max_windows=256),
        ...     zero_shot=ZeroShotSettings(limit=200),
        ...     latency=LatencySettings(batch_sizes=(1, 8)),
        ... )
        ```
    """

    perplexity: PerplexitySettings | None = field(default_factory=PerplexitySettings)
    zero_shot: ZeroShotSettings | None = None
    latency: LatencySettings | None = None
    data_dir: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if self.perplexity is None and self.zero_shot is None and self.latency is None:
            raise ConfigError("Nothing to measure: set at least one of `perplexity`, `zero_shot` and `latency`.")
