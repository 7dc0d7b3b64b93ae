"""The models of the quality benchmark and what differs between them (block counts, results folder, batch sizes).

* ``smollm2-135m``: SmolLM2-135M-Instruct, 30 blocks; 6 (20%) and 11 (36.7%, the issue's "35%") removed. Its files
  stay where the first version of the benchmark wrote them, ``benchmarks/results/quality/<row>.json``.
* ``gemma3-270m``: Gemma-3-270M (base), 18 blocks; 4 (22.2%, the nearest count to 20%: 3 would be 16.7%) and 6
  (33.3%, the nearest to 35%: 7 would be 38.9%) removed. Files in ``benchmarks/results/quality/gemma3-270m/``.
  Gemma is evaluated and calibrated with BOS at the start of every window / sequence (``protocol.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QualityModel:
    """One model of the benchmark.

    Args:
        key: The model's name in ``optimum_depth.loading.NAMED_MODELS`` and on the command line (``--model``).
        table: The results folder under ``benchmarks/results/`` (also the ``table`` field of each record).
        block_targets: Size key -> blocks removed, e.g. ``{"b06": 6, "b11": 11}`` (20% first, then 35%).
        ppl_batch_size: Windows per forward pass in perplexity (smaller for a large vocabulary).
    """

    key: str
    table: str
    block_targets: dict[str, int] = field(default_factory=dict)
    ppl_batch_size: int = 8

    @property
    def sizes(self) -> tuple[str, ...]:
        """The size keys, 20% first."""
        return tuple(self.block_targets)

    @property
    def small(self) -> str:
        """The 20% size key (the one with zero-shot figures)."""
        return self.sizes[0]


MODELS = {
    "smollm2-135m": QualityModel("smollm2-135m", "quality", {"b06": 6, "b11": 11}),
    "gemma3-270m": QualityModel("gemma3-270m", "quality/gemma3-270m", {"b04": 4, "b06": 6}, ppl_batch_size=4),
}
