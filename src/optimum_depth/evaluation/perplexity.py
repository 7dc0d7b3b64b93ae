"""Perplexity as the pruning papers measure it: tokenize once, non-overlapping windows, ``exp(mean token NLL)``.

The corpus is tokenized once; the token stream is cut into ``num_tokens // seq_len`` windows of ``seq_len`` tokens
(the tail is dropped), each window is scored independently (no context carried over), and the perplexity is
``exp`` of the mean negative log-likelihood over every predicted token (all positions but the first of each window).

BOS handling (``bos``), as in Shortened LLaMA's ``add_bos_to_every`` switch:

* ``"first"`` (default; Shortened LLaMA's default, and what GPTQ/SparseGPT get from a Llama tokenizer): one BOS token
  before the whole stream, so only the first window starts with it.
* ``"every"``: a BOS token before every window (windows hold ``seq_len + 1`` tokens, ``seq_len`` of them predicted);
  models such as Gemma need it.
* ``"none"``: no BOS.
* ``"auto"`` (the default of :func:`evaluate_perplexity`): ``"every"`` for models that need BOS at the start of every
  sequence (Gemma; the rule is :func:`~.bos.needs_bos_every_sequence`), ``"first"`` for the others. Asking for
  ``"first"`` or ``"none"`` on a model that needs ``"every"`` is allowed (to reproduce a protocol) but logs a warning:
  its perplexity is then far from what the model does when fed properly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F  # noqa: N812
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from .bos import model_type_of, needs_bos_every_sequence
from .ppl_data import PerplexityText, load_perplexity_text
from .settings import BOS_CHOICES, BOS_MODES, PerplexitySettings

logger = logging.getLogger(__name__)


def resolve_bos(bos: str, model, tokenizer) -> str:
    """The BOS mode to evaluate ``model`` with: ``"auto"`` resolved per model, and a warning for a wrong choice.

    Args:
        bos: ``"auto"``, ``"first"``, ``"every"`` or ``"none"``.
        model: The model.
        tokenizer: Its tokenizer.

    Returns:
        ``"every"`` or ``"first"`` for ``"auto"`` (:func:`~.bos.needs_bos_every_sequence`), else ``bos`` itself.

    Raises:
        ConfigError: If ``bos`` is not one of :data:`BOS_CHOICES`.
    """
    if bos not in BOS_CHOICES:
        raise ConfigError(f"`bos` must be one of {BOS_CHOICES}, got {bos!r}.")
    needs_every = needs_bos_every_sequence(model, tokenizer)
    if bos == "auto":
        return "every" if needs_every else "first"
    if needs_every and bos != "every":
        logger.warning(
            "bos=%r on a %s model: this family needs a BOS token at the start of every window, and its perplexity "
            "without one is far higher than when fed properly (ratios to dense are then meaningless). Use "
            "bos='every' or 'auto'.",
            bos,
            model_type_of(model),
        )
    return bos


def make_windows(
    token_ids: Sequence[int] | torch.Tensor,
    seq_len: int,
    bos_token_id: int | None = None,
    bos: str = "first",
    max_windows: int | None = None,
) -> torch.Tensor:
    """Cuts a token stream into non-overlapping windows.

    Args:
        token_ids: The tokenized corpus, without special tokens.
        seq_len: Tokens per window (before the per-window BOS of ``bos="every"``).
        bos_token_id: The BOS token (needed unless ``bos="none"``).
        bos: ``"first"``, ``"every"`` or ``"none"`` (see the module docstring).
        max_windows: Keep at most this many windows (the first ones).

    Returns:
        ``LongTensor[num_windows, seq_len]`` (``seq_len + 1`` columns for ``bos="every"``).

    Raises:
        ValueError: If ``bos`` is unknown, a BOS token is needed but missing, or the stream is shorter than a window.
    """
    if bos not in BOS_MODES:
        raise ConfigError(f"`bos` must be one of {BOS_MODES}, got {bos!r}.")
    if seq_len < 2:
        raise ConfigError(f"`seq_len` must be at least 2, got {seq_len}.")
    if bos != "none" and bos_token_id is None:
        raise ConfigError(f"bos={bos!r} needs a BOS token but the tokenizer has none; pass bos='none'.")
    if max_windows is not None and max_windows < 1:
        raise ConfigError(f"`max_windows` must be positive, got {max_windows}.")
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    if bos == "first":
        ids = torch.cat([torch.tensor([bos_token_id], dtype=torch.long), ids])
    num_windows = ids.numel() // seq_len
    if num_windows == 0:
        raise DataError(f"The text has {ids.numel()} tokens, fewer than one window of seq_len={seq_len}.")
    if max_windows is not None:
        num_windows = min(num_windows, max_windows)
    windows = ids[: num_windows * seq_len].view(num_windows, seq_len)
    if bos == "every":
        windows = torch.cat([torch.full((num_windows, 1), int(bos_token_id), dtype=torch.long), windows], dim=1)  # type: ignore[arg-type]
    return windows


def window_nll(logits: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Summed next-token negative log-likelihood of each window.

    Args:
        logits: ``[batch, length, vocab]`` model outputs.
        windows: ``[batch, length]`` token ids.

    Returns:
        ``float64[batch]``: the NLL summed over the ``length - 1`` predicted tokens of each window.
    """
    targets = windows[:, 1:].to(logits.device)
    # One window at a time: with a large vocabulary (Gemma: 262k) a float copy of the whole batch's logits and its
    # log-softmax would each be as large as the logits themselves.
    sums = [
        F.cross_entropy(logits[row, :-1].float(), targets[row], reduction="none").double().sum()
        for row in range(logits.size(0))
    ]
    return torch.stack(sums)


@torch.no_grad()
def windows_perplexity(model, windows: torch.Tensor, batch_size: int = 8, desc: str = "perplexity") -> dict[str, Any]:
    """Scores windows with a causal LM.

    Args:
        model: A causal LM returning ``.logits``.
        windows: ``[num_windows, length]`` token ids (e.g. from :func:`make_windows`).
        batch_size: Windows per forward pass.
        desc: Progress bar label.

    Returns:
        ``{"perplexity", "nll", "num_windows", "num_predicted_tokens"}`` (``nll`` = mean token NLL in nats).
    """
    if batch_size < 1:
        raise ConfigError(f"`batch_size` must be positive, got {batch_size}.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    try:
        for start in tqdm(range(0, windows.size(0), batch_size), desc=desc, leave=False):
            batch = windows[start : start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits
            total += window_nll(logits, batch).sum().cpu()
    finally:
        model.train(was_training)
    predicted = windows.size(0) * (windows.size(1) - 1)
    mean_nll = float(total) / predicted
    return {
        "perplexity": math.exp(mean_nll),
        "nll": mean_nll,
        "num_windows": int(windows.size(0)),
        "num_predicted_tokens": predicted,
    }


def evaluate_perplexity(
    model,
    tokenizer,
    datasets: Sequence[str | PerplexityText] = PerplexitySettings.datasets,
    seq_len: int = PerplexitySettings.seq_len,
    batch_size: int = PerplexitySettings.batch_size,
    bos: str = PerplexitySettings.bos,
    max_windows: int | None = PerplexitySettings.max_windows,
    data_dir: str | os.PathLike | None = None,
    source: str = PerplexitySettings.source,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Perplexity of ``model`` on the standard corpora (or your own texts).

    The defaults are those of :class:`~.settings.PerplexitySettings` (WikiText-2, 128-token windows).

    Args:
        model: A causal LM (dense or pruned).
        tokenizer: Its tokenizer.
        datasets: Corpus names (``"wikitext2"``, ``"ptb"``, ``"c4"``) or :class:`PerplexityText` objects (e.g. from
            :func:`~optimum_depth.evaluation.ppl_data.load_perplexity_text` with another file or join string).
        seq_len: Window length: 128 as Shortened LLaMA, 2048 as SparseGPT/Wanda.
        batch_size: Windows per forward pass.
        bos: ``"auto"`` (default: ``"every"`` for models that need it, else ``"first"``), ``"first"``, ``"every"``
            or ``"none"`` (see the module docstring; a mode other than ``"every"`` on a model that needs it warns).
        max_windows: Keep at most this many windows per corpus, for quick runs (C4 keeps 256 at most anyway).
        data_dir: Local data directory (default: :func:`optimum_depth.data.default_data_dir`).
        source: ``"auto"``, ``"local"`` or ``"hub"`` (see ``load_perplexity_text``).

    Returns:
        ``(perplexity, settings)``: corpus name -> PPL, and the settings with per-corpus window/token counts and data
        provenance, ready for :class:`~optimum_depth.evaluation.EvaluationResults`.

    Raises:
        ValueError: On an unknown corpus or BOS mode, a missing BOS token, or too little text; all corpora are loaded
            and windowed before any model forward pass.
    """
    requested, bos = bos, resolve_bos(bos, model, tokenizer)
    texts = [
        d if isinstance(d, PerplexityText) else load_perplexity_text(d, data_dir=data_dir, source=source)
        for d in datasets
    ]
    names = [t.name for t in texts]
    if len(set(names)) != len(names):
        raise ConfigError(f"Perplexity corpus names must be distinct, got {names}.")
    prepared = []
    for text in texts:
        ids = tokenizer(text.text, add_special_tokens=False, verbose=False)["input_ids"]
        limits = [m for m in (max_windows, text.max_windows) if m is not None]
        windows = make_windows(ids, seq_len, tokenizer.bos_token_id, bos, min(limits) if limits else None)
        prepared.append((text, len(ids), windows))

    perplexity: dict[str, float] = {}
    per_corpus: dict[str, Any] = {}
    for text, num_tokens, windows in prepared:
        stats = windows_perplexity(model, windows, batch_size=batch_size, desc=f"PPL {text.name}")
        perplexity[text.name] = stats["perplexity"]
        per_corpus[text.name] = {**text.source, "corpus_tokens": num_tokens, **stats}
        logger.info("PPL %s = %.3f (%d windows of %d)", text.name, stats["perplexity"], stats["num_windows"], seq_len)
    settings = {
        "seq_len": seq_len,
        "bos": bos,
        "bos_requested": requested,
        "stride": seq_len,
        "batch_size": batch_size,
        "max_windows": max_windows,
        "datasets": per_corpus,
    }
    return perplexity, settings
