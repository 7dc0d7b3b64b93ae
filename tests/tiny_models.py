"""Tiny random models of every supported family, built from configs (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STORIES_PATH = SHARED / "models" / "stories260K"
DATA_DIR = SHARED / "data"

_COMMON = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)

# Per family: the overrides that exercise its per-layer structure (sliding windows, mixed layer types, ...).
FAMILY_OVERRIDES: dict[str, dict] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 3},
    "qwen3": {
        "use_sliding_window": True,
        "sliding_window": 4,
        "layer_types": [
            "full_attention",
            "sliding_attention",
            "full_attention",
            "sliding_attention",
            "sliding_attention",
            "full_attention",
        ],
    },
    "gemma2": {"sliding_window": 4, "query_pre_attn_scalar": 8},
    "gemma3_text": {"sliding_window": 4, "sliding_window_pattern": 3, "query_pre_attn_scalar": 8},
    "phi3": {"head_dim": None},
    "smollm3": {"no_rope_layers": [1, 1, 1, 0, 1, 1]},
}
FAMILIES = list(FAMILY_OVERRIDES)


def make_tiny_config(family: str, **overrides):
    """Builds the tiny config of ``family`` (6 blocks unless overridden)."""
    kwargs = {**_COMMON, **FAMILY_OVERRIDES[family], **overrides}
    kwargs = {k: v for k, v in kwargs.items() if not (k == "head_dim" and v is None)}
    return AutoConfig.for_model(family, **kwargs)


def make_tiny_model(family: str, seed: int = 0, **overrides):
    """Builds a tiny random causal LM of ``family`` in eval mode, float32, eager attention."""
    torch.manual_seed(seed)
    config = make_tiny_config(family, **overrides)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    # Random init gives near-uniform logits; scale up so greedy decoding is not decided by rounding noise.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.mul_(4.0 if "embed" in name or "lm_head" in name else 2.0)
    return model.eval()


def make_unsupported_model():
    """A tiny GPT-2: a causal LM of a family optimum_depth does not support (every supported family can lose blocks
    and sublayers)."""
    from transformers import GPT2Config

    torch.manual_seed(0)
    config = GPT2Config(n_layer=4, n_embd=32, n_head=2, vocab_size=128, bos_token_id=1, eos_token_id=2)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()


def random_ids(batch: int, length: int, vocab: int = 128, seed: int = 0) -> torch.Tensor:
    """Random token ids avoiding the special ids 0-2."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=generator)
