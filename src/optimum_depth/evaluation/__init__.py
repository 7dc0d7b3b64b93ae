"""Evaluation of dense and pruned models: perplexity, zero-shot accuracy (lm-eval) and generation latency.

Each module has one job: :mod:`.results` holds the measured values (:mod:`.markdown` renders them),
:mod:`.perplexity` (with the corpora of :mod:`.ppl_data`) the windowed perplexity of the papers, :mod:`.zero_shot` the lm-eval tasks read from local files
(converted by :mod:`.task_data`), :mod:`.latency` the ``generate`` timing (peak memory from :mod:`.memory`), and
:mod:`.evaluate` runs them together as :mod:`.settings` says; :mod:`.paired` compares dense and pruned zero-shot outcomes
on the same documents, :mod:`.bos` says which models need BOS on every window. lm-eval is imported only when zero-shot
accuracy is measured.
"""

from .bos import needs_bos_every_sequence
from .evaluate import compare_models, evaluate_model
from .latency import measure_latency
from .markdown import NOT_MEASURED, results_markdown
from .memory import PeakMemoryMonitor
from .paired import PairedDifference, paired_zero_shot
from .perplexity import evaluate_perplexity, make_windows, windows_perplexity
from .ppl_data import PerplexityText, load_perplexity_text
from .results import ComparisonResults, EvaluationResults, LatencyRecord, load_results
from .settings import EvaluationSettings, LatencySettings, PerplexitySettings, ZeroShotSettings
from .task_data import ZERO_SHOT_TASKS
from .zero_shot import evaluate_zero_shot, evaluate_zero_shot_documents

__all__ = [
    "NOT_MEASURED",
    "ZERO_SHOT_TASKS",
    "ComparisonResults",
    "EvaluationResults",
    "EvaluationSettings",
    "LatencyRecord",
    "LatencySettings",
    "PairedDifference",
    "PeakMemoryMonitor",
    "PerplexitySettings",
    "PerplexityText",
    "ZeroShotSettings",
    "compare_models",
    "evaluate_model",
    "evaluate_perplexity",
    "evaluate_zero_shot",
    "evaluate_zero_shot_documents",
    "load_perplexity_text",
    "load_results",
    "make_windows",
    "measure_latency",
    "needs_bos_every_sequence",
    "paired_zero_shot",
    "results_markdown",
    "windows_perplexity",
]
