"""The model-card section describing a sparsified checkpoint, rendered from its ``config.sparsity`` record.

:func:`~optimum_depth.publishing.cards.build_model_card` adds it to the card of every model whose config holds the
record that :func:`optimum_depth.sparsity.sparsify` writes (:meth:`~optimum_depth.SparsityResult.record`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["NO_SPEEDUP_NOTE", "sparsity_card_section"]

NO_SPEEDUP_NOTE = (
    "The weights are stored as dense tensors with exact zeros. Unstructured sparsity gives **no speed-up and no "
    "memory saving by itself** with dense kernels (PyTorch, llama.cpp, vLLM...): it only pays off with a sparse "
    "runtime, or after compression of the zeros. The depth pruning (removed blocks), if any, does speed the model up."
)
N_M_NOTE = (
    "The weights follow an {structure} semi-structured pattern (in every {m} consecutive inputs of a row, at most "
    "{n} weights are non-zero). It is stored densely; sparse tensor cores (e.g. `torch.sparse.to_sparse_semi_structured` "
    "on NVIDIA Ampere or newer for 2:4) are needed for any speed-up, which optimum_depth has not measured."
)
METHOD_NAMES = {
    "besa": "BESA (Xu et al., 2024): learned per-{allocation} sparsity allocation",
    "wanda": "Wanda (Sun et al., 2024): uniform per-row sparsity by |W| * ||X||",
    "magnitude": "magnitude: uniform per-matrix sparsity by |W|",
}


def sparsity_card_section(record: dict[str, Any]) -> str:
    """Markdown describing the sparsity of a checkpoint.

    Args:
        record: ``model.config.sparsity`` as written by :func:`optimum_depth.sparsity.sparsify`.

    Returns:
        A ``## Weight sparsity`` section: method, target and achieved sparsity, calibration, the speed-up caveat and
        the per-block sparsities.

    Raises:
        ValueError: If ``record`` lacks the method, target or per-block values.
    """
    missing = [key for key in ("method", "target", "blocks") if key not in record]
    if missing:
        raise ValueError(f"The sparsity record lacks {missing}; was it written by optimum_depth.sparsity.sparsify?")
    method = METHOD_NAMES.get(record["method"], record["method"]).format(allocation=record.get("allocation", "row"))
    structure = record.get("structure", "unstructured")
    lines = [
        "## Weight sparsity",
        "",
        f"- Method: {method}",
        f"- Target sparsity: {record['target']}; achieved: {record.get('achieved')} (fraction of zero weights in the "
        "attention and MLP linear layers)",
        f"- Structure: {structure}",
    ]
    calibration = record.get("calibration") or {}
    if calibration:
        lines.append(
            f"- Calibration: {calibration.get('num_samples')} x {calibration.get('seq_len')} tokens from "
            f"{calibration.get('source')} (seed {calibration.get('seed')})"
        )
    lines += ["", NO_SPEEDUP_NOTE if structure == "unstructured" else _n_m_note(structure), ""]
    lines += ["| block (original index) | sparsity |", "|---|---|"]
    lines += [f"| {block} | {value:.4f} |" for block, value in record["blocks"].items()]
    return "\n".join(lines) + "\n"


def _n_m_note(structure: str) -> str:
    n, m = structure.split(":")
    return N_M_NOTE.format(structure=structure, n=n, m=m)
