"""Which models must see a BOS token at the start of every sequence they are evaluated or calibrated on.

The pruning papers evaluate perplexity with one BOS before the whole token stream (only the first window starts with
it), which suits Llama-like models: their first position acts as an attention sink whatever the token. Gemma models
(Gemma 1, 2 and 3) are trained with ``<bos>`` at the start of every sequence and break without it: Gemma-3-270M's
dense WikiText-2 perplexity on the same 128-token windows is about 8x higher when only the first window gets BOS
(``benchmarks/results/quality/gemma3-270m/bos-protocol.json``), which makes every ratio to dense meaningless.

The rule, :func:`needs_bos_every_sequence`, is a family fact: the model's base ``model_type`` is one of
:data:`BOS_EVERY_SEQUENCE_MODEL_TYPES` (pruned checkpoints count as their family) and the tokenizer has a BOS token.
A tokenizer's ``add_bos_token`` alone is not the rule: Llama-2 tokenizers add BOS by default too, and Llama-2 is
evaluated BOS-once by the papers without harm.
"""

from __future__ import annotations

from typing import Any

from ..architectures import base_model_type, unwrap_model

__all__ = ["BOS_EVERY_SEQUENCE_MODEL_TYPES", "needs_bos_every_sequence"]

BOS_EVERY_SEQUENCE_MODEL_TYPES = frozenset(
    {"gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "recurrent_gemma"}
)
"""Families trained with BOS at the start of every sequence, which degrade badly without it."""


def model_type_of(model: Any) -> str:
    """The base ``model_type`` of a model (PEFT/DDP wrappers unwrapped, ``pruned_`` prefix removed), or ``""``."""
    config = getattr(unwrap_model(model), "config", None)
    return base_model_type(getattr(config, "model_type", "") or "")


def needs_bos_every_sequence(model: Any, tokenizer: Any = None) -> bool:
    """Whether ``model`` must be fed a BOS token at the start of every window / calibration sequence.

    Args:
        model: The model (or anything with a ``config``).
        tokenizer: Its tokenizer; when given, a tokenizer without a BOS token makes the answer ``False`` (there is
            nothing to add).

    Returns:
        ``True`` for the families of :data:`BOS_EVERY_SEQUENCE_MODEL_TYPES`.
    """
    if model_type_of(model) not in BOS_EVERY_SEQUENCE_MODEL_TYPES:
        return False
    return tokenizer is None or getattr(tokenizer, "bos_token_id", None) is not None
