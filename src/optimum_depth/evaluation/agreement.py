"""Data-free evaluation: how closely a pruned model follows its dense parent on text the dense model generated.

The last resort of the quickstart when no evaluation corpus is available (no local data, no Hub): the dense model
samples held-out sequences (with a seed distinct from calibration), and we report the pruned model's top-1
next-token agreement with the dense model, the mean KL(dense || pruned), and both models' perplexity on that text.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..calibration import prepare_calibration


@torch.no_grad()
def self_generated_agreement(
    dense, pruned, num_samples: int = 8, seq_len: int = 128, seed: int = 1234, batch_size: int = 4
) -> dict[str, Any]:
    """Compares a pruned model with its dense parent on self-generated held-out text.

    Args:
        dense: The dense model (it generates the text).
        pruned: The pruned model.
        num_samples: Number of generated sequences.
        seq_len: Tokens per sequence.
        seed: Sampling seed (use one distinct from the calibration seed: the text is held out).
        batch_size: Sequences per forward pass.

    Returns:
        ``top1_agreement`` (fraction of positions where both argmax tokens match), ``kl_dense_pruned`` (mean
        KL(dense || pruned) in nats per token), ``dense_ppl`` and ``pruned_ppl`` on the text, and the settings.
    """
    ids = prepare_calibration("self", model=dense, num_samples=num_samples, seq_len=seq_len, seed=seed).input_ids
    agree = tokens = 0
    kl_sum = dense_nll = pruned_nll = 0.0
    for batch in torch.split(ids, batch_size):
        logp_dense = torch.log_softmax(dense(batch).logits[:, :-1].float(), dim=-1)
        logp_pruned = torch.log_softmax(pruned(batch).logits[:, :-1].float(), dim=-1)
        targets = batch[:, 1:].unsqueeze(-1)
        agree += int((logp_dense.argmax(-1) == logp_pruned.argmax(-1)).sum())
        kl_sum += float((logp_dense.exp() * (logp_dense - logp_pruned)).sum())
        dense_nll -= float(logp_dense.gather(-1, targets).sum())
        pruned_nll -= float(logp_pruned.gather(-1, targets).sum())
        tokens += targets.numel()
    return {
        "top1_agreement": agree / tokens,
        "kl_dense_pruned": kl_sum / tokens,
        "dense_ppl": math.exp(dense_nll / tokens),
        "pruned_ppl": math.exp(pruned_nll / tokens),
        "settings": {"num_samples": num_samples, "seq_len": seq_len, "seed": seed, "source": "self-generated"},
    }
