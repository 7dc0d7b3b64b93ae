"""Writing pruned checkpoints atomically, as safetensors only, with the plan and scores beside them."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .plan import PruningPlan
from .scores import LayerScores

logger = logging.getLogger(__name__)

SCORES_NAME = "layer_scores.json"


def atomic_directory_write(save_directory: str | os.PathLike, write) -> Path:
    """Calls ``write(tmp_dir)`` and moves the result to ``save_directory`` only if it succeeded.

    An existing ``save_directory`` is replaced only after the new content is complete; an interruption leaves
    either the old directory or the new one, never a half-written one.

    Args:
        save_directory: Final directory.
        write: Callable filling a temporary directory (created beside the target, same filesystem).

    Returns:
        The final directory.
    """
    target = Path(save_directory).resolve()
    if target.exists() and not target.is_dir():
        raise ValueError(f"{str(target)!r} exists and is not a directory.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        backup = None
        if target.exists():
            backup = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, backup)
        os.replace(tmp, target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_pruned_model(
    model,
    save_directory: str | os.PathLike,
    tokenizer=None,
    plan: PruningPlan | None = None,
    scores: LayerScores | None = None,
    **save_kwargs,
) -> Path:
    """Saves a pruned model (safetensors), its tokenizer, plan and scores, atomically.

    Args:
        model: The pruned model (a plain transformers model; merge peft adapters first to get a native checkpoint).
        save_directory: Output directory (replaced atomically if it exists).
        tokenizer: Optional tokenizer saved beside the weights.
        plan: Optional plan written as ``pruning_plan.json``.
        scores: Optional scores written as ``layer_scores.json``.
        **save_kwargs: Passed to ``model.save_pretrained``.

    Returns:
        The output directory.
    """

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, **save_kwargs)
        pickles = [p.name for p in tmp.iterdir() if p.suffix in (".bin", ".pt", ".pkl", ".pth")]
        if pickles:
            raise RuntimeError(f"Refusing to write pickled weights {pickles}; only safetensors are written.")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if plan is not None:
            plan.save(tmp / "pruning_plan.json")
        if scores is not None:
            scores.to_json(tmp / SCORES_NAME)

    path = atomic_directory_write(save_directory, write)
    logger.info("Saved pruned model to %s", path)
    return path
