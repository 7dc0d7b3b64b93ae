"""The cost model behind benchmarks/bench_scaling.py and docs/scaling.md: architectures, assumptions, FLOPs, memory.

Everything here is arithmetic on the architecture and the stated ``ASSUMPTIONS``; the two measured inputs (the
backward/forward multipliers of full and frozen-weight training) are passed in by bench_scaling.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

GB = 1e9


@dataclass(frozen=True)
class Arch:
    """The shape of a decoder-only model (no MoE)."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int | None = None
    qkv_bias: bool = False
    tied: bool = False

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def attention_params(self) -> int:
        q_out, kv_out = self.heads * self.hd, self.kv_heads * self.hd
        bias = (q_out + 2 * kv_out) if self.qkv_bias else 0
        return self.hidden * q_out + 2 * self.hidden * kv_out + q_out * self.hidden + bias

    @property
    def mlp_params(self) -> int:
        return 3 * self.hidden * self.intermediate

    @property
    def block_params(self) -> int:
        return self.attention_params + self.mlp_params + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def params(self, layers: int | None = None) -> int:
        return (self.layers if layers is None else layers) * self.block_params + self.embedding_params + self.hidden

    def describe(self) -> str:
        return (
            f"{self.params() / 1e9:.1f}B parameters, {self.layers} blocks, hidden {self.hidden}, MLP "
            f"{self.intermediate}, {self.heads} heads ({self.kv_heads} KV), vocabulary {self.vocab:,}"
        )

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "params": self.params(), "block_params": self.block_params}


ARCHS = {  # from the models' config.json (hidden_size, intermediate_size, num_hidden_layers, heads, vocab_size)
    "Llama-3-8B": Arch("Llama-3-8B", 4096, 14336, 32, 32, 8, 128256),
    "Qwen2.5-32B": Arch("Qwen2.5-32B", 5120, 27648, 64, 40, 8, 152064, qkv_bias=True),
    "Llama-3-70B": Arch("Llama-3-70B", 8192, 28672, 80, 64, 8, 128256),
}

ASSUMPTIONS: dict[str, Any] = {
    "gpu": "H100 SXM 80 GB",
    "gpu_memory_gb": 80.0,
    "usable_memory_fraction": 0.9,
    "bf16_peak_flops": 989e12,
    "fp64_peak_flops": 67e12,
    "mfu": {"training": 0.40, "training_multi_node": 0.35, "forward": 0.30, "qlora": 0.25, "fp64_gram": 0.5},
    "gpus_per_node": 8,
    "gpu_counts": [1, 8, 64],
    "host_to_gpu_gb_per_s": 25.0,
    "removed_fraction": 0.25,
    "calibration": {
        "blocks": [10, 128],
        "sublayers": [10, 256],
        "batch_size": "num_samples",
        "note": "library defaults (num_samples x seq_len), scored as one batch (batch_size = num_samples): offloaded "
        "weights are loaded once per block forward of the engine, not once per sample",
    },
    "calibration_large": [256, 2048],
    "recovery": {
        "tokens": 2 * 50_000 * 256,
        "note": "Shortened LLaMA: 2 epochs of 50k Alpaca examples cut at 256 tokens (packed: an upper bound)",
        "micro_batch": 4,
        "seq_len": 256,
        "lora_rank": 8,
    },
    "evaluation_tokens": 10_000_000,
    "evaluation_note": "WikiText-2 test (~0.3M tokens) + a 7-task zero-shot suite (~9M tokens), forward only",
    "bytes_per_param": {
        "bf16": 2.0,
        "nf4_double_quant": 4.127 / 8,
        "full_training_fsdp": 16.0,
        "full_training_note": "fp32 master weights 4 + fp32 gradients 4 + Adam moments 8; bf16 compute copies only "
        "for the gathered blocks",
        "lora_trainable": 16.0,
    },
    "activation_bytes_per_token_per_layer": "34 * hidden (bf16, FlashAttention/SDPA: no seq^2 term; Korthikanti "
    "et al. 2022)",
    "attention_flops": "4 * seq * heads * head_dim per token and block (QK^T and AV, full square: an upper bound)",
}


# --------------------------------------------------------------------------------------------------- FLOPs
def attention_flops_per_token(arch: Arch, seq: int) -> float:
    return 2.0 * arch.attention_params + 4.0 * seq * arch.heads * arch.hd


def mlp_flops_per_token(arch: Arch) -> float:
    return 2.0 * arch.mlp_params


def block_flops_per_token(arch: Arch, seq: int) -> float:
    """Forward FLOPs of one decoder block per token (matmuls: 2 per weight; attention scores and values)."""
    return attention_flops_per_token(arch, seq) + mlp_flops_per_token(arch)


def head_flops_per_token(arch: Arch) -> float:
    return 2.0 * arch.hidden * arch.vocab


def model_forward_flops_per_token(arch: Arch, seq: int, layers: int | None = None) -> float:
    return (arch.layers if layers is None else layers) * block_flops_per_token(arch, seq) + head_flops_per_token(arch)


def scoring_forwards(criterion: str, n: int, k: int) -> dict[str, float]:
    """Forwards per calibration batch of the scoring engine, ``early_exit=False`` (the default early exit only
    lowers them: on SmolLM2-135M, 7% fewer block forwards and 55-84% fewer head forwards, bench_scoring.json).

    Block criteria: ``block`` forwards of whole blocks and ``head`` forwards of norm + LM head. FinerCut: attention
    or MLP sublayer forwards, given in block equivalents (``sublayer_equivalent_blocks``: two sublayers make one
    block), an upper bound (re-running the suffix after each committed removal is counted in full).
    """
    if criterion == "magnitude":
        return {"block": 0, "head": 0}
    if criterion in ("block_influence", "angular"):
        return {"block": n, "head": 0}
    if criterion == "taylor":
        return {"block": n, "head": 1, "backward": True}
    if criterion == "ppl":
        return {"block": n + n * (n - 1) // 2, "head": n + 1}
    if criterion == "sleb":
        rounds = [n - r for r in range(k)]
        return {"block": n + sum(m * (m - 1) // 2 for m in rounds), "head": 1 + sum(rounds)}
    if criterion == "finercut":  # k sublayers out of 2n
        rounds = [2 * n - r for r in range(k)]
        sublayers = 2 * n + sum(m * (m - 1) // 2 + (m - 1) for m in rounds)
        return {"sublayer_equivalent_blocks": sublayers / 2, "head": 1 + sum(rounds)}
    raise ValueError(criterion)


# -------------------------------------------------------------------------------------------------- helpers
def _usable_bytes() -> float:
    return ASSUMPTIONS["gpu_memory_gb"] * ASSUMPTIONS["usable_memory_fraction"] * GB


def _gpus_to_hold(total_bytes: float) -> int:
    return max(1, math.ceil(total_bytes / _usable_bytes()))


def _fmt_gb(value: float) -> str:
    return f"{value / GB:,.0f} GB" if value >= 10 * GB else f"{value / GB:.1f} GB"


def _hours(flops: float, gpus: int, mfu: float, peak: float | None = None) -> float:
    return flops / (gpus * (peak or ASSUMPTIONS["bf16_peak_flops"]) * mfu) / 3600


# ---------------------------------------------------------------------------------------------------- stages
def calibration_batches(samples: int) -> int:
    """Calibration batches the engine runs: one, since the guide assumes ``batch_size = num_samples``."""
    batch_size = samples if ASSUMPTIONS["calibration"]["batch_size"] == "num_samples" else None
    if batch_size is None:
        raise ValueError(f"Unknown calibration batch size {ASSUMPTIONS['calibration']['batch_size']!r}.")
    return math.ceil(samples / batch_size)


def offload_hours(needed: int, gpus: int, stream_bytes: float) -> float:
    """Hours spent streaming offloaded weights from CPU RAM when ``gpus`` hold ``gpus / needed`` of them.

    ``stream_bytes`` is what one pass over every weight load of the stage would move if nothing stayed on a GPU; the
    offloaded share of it crosses the PCIe link (a uniform share: the offloaded blocks are the last ones, which the
    suffix-based criteria run more often, so this is optimistic by up to ~1.5x for PPL).
    """
    if gpus >= needed:
        return 0.0
    return (1 - gpus / needed) * stream_bytes / (ASSUMPTIONS["host_to_gpu_gb_per_s"] * GB) / 3600


def _one_process_row(stage: str, memory: float, flops: float, mfu: float, notes: str, stream_bytes: float) -> dict:
    """A stage that runs in one process: more GPUs only help to hold the model (``device_map``, one GPU busy at a
    time); if it does not fit the GPUs, weights stream from CPU RAM (accelerate offload) at the PCIe rate."""
    needed = _gpus_to_hold(memory)
    compute = _hours(flops, 1, mfu)
    hours: dict[str, Any] = {}
    for gpus in ASSUMPTIONS["gpu_counts"]:
        hours[str(gpus)] = compute + offload_hours(needed, gpus, stream_bytes)
    where = "1 GPU" if needed == 1 else f"{needed} GPUs by device_map (one busy at a time)"
    if needed > 1 and stream_bytes:
        notes += f"; fewer GPUs stream their share of {_fmt_gb(stream_bytes)} of weight loads from CPU RAM"
    return {"stage": stage, "memory": _fmt_gb(memory), "memory_bytes": memory, "flops": flops, "hours": hours,
            "notes": f"{where}; {notes}"}  # fmt: skip


def scoring_rows(arch: Arch, multipliers: dict[str, float]) -> list[dict]:
    n = arch.layers
    k = round(ASSUMPTIONS["removed_fraction"] * n)
    rows = []
    weights = ASSUMPTIONS["bytes_per_param"]["bf16"] * arch.params()
    block_bytes = ASSUMPTIONS["bytes_per_param"]["bf16"] * arch.block_params
    head_bytes = ASSUMPTIONS["bytes_per_param"]["bf16"] * arch.vocab * arch.hidden
    for criterion in ("magnitude", "block_influence", "taylor", "ppl", "sleb", "finercut"):
        samples, seq = ASSUMPTIONS["calibration"]["sublayers" if criterion == "finercut" else "blocks"]
        tokens = samples * seq
        counts = scoring_forwards(criterion, n, 2 * k if criterion == "finercut" else k)
        blocks = counts.get("block", counts.get("sublayer_equivalent_blocks", 0))
        flops = tokens * (blocks * block_flops_per_token(arch, seq) + counts["head"] * head_flops_per_token(arch))
        cache = tokens * arch.hidden * (n + 1) * 2 * (2 if criterion == "sleb" else 1)  # bf16 block inputs
        logits = seq * arch.vocab * 4
        memory = weights + cache + logits
        notes = f"{blocks:,.0f} block forwards + {counts['head']} heads per token; cache {_fmt_gb(cache)}"
        if criterion == "magnitude":
            flops, memory, notes = 2.0 * arch.params(), weights, "reads the weights (CPU RAM is enough)"
        elif criterion == "taylor":
            flops *= multipliers["full_over_forward"]  # weight gradients, as in full training
            memory = 2 * weights + n * 34 * arch.hidden * seq * 2 + logits
            notes = "forward + backward; gradients in memory, so no disk offload"
        # Offloaded weights are loaded once per block (or head) forward of each calibration batch.
        stream = (blocks * block_bytes + counts["head"] * head_bytes) * calibration_batches(samples)
        if criterion == "taylor":
            stream *= 2  # the backward needs every weight again
        rows.append(_one_process_row(f"scoring: {criterion}", memory, flops, ASSUMPTIONS["mfu"]["forward"], notes,
                                     stream_bytes=stream))  # fmt: skip
    return rows


def compensation_row(arch: Arch) -> dict:
    """Statistics of a linear compensation per cut: XᵀX and XᵀY (hidden x hidden, float64) over the calibration."""
    samples, seq = ASSUMPTIONS["calibration"]["blocks"]
    tokens = samples * seq
    cuts = round(ASSUMPTIONS["removed_fraction"] * arch.layers)  # at most one cut per removed block
    gram_bytes = 2 * arch.hidden**2 * 8 * cuts
    flops = cuts * 4.0 * tokens * arch.hidden**2
    capture = tokens * model_forward_flops_per_token(arch, seq)
    weights = ASSUMPTIONS["bytes_per_param"]["bf16"] * arch.params()
    hours = _hours(flops, 1, ASSUMPTIONS["mfu"]["fp64_gram"], ASSUMPTIONS["fp64_peak_flops"]) + _hours(
        capture, 1, ASSUMPTIONS["mfu"]["forward"]
    )
    needed = _gpus_to_hold(weights + gram_bytes)
    return {
        "stage": f"compensation statistics ({cuts} cuts)",
        "memory": _fmt_gb(weights + gram_bytes),
        "memory_bytes": weights + gram_bytes,
        "flops": flops + capture,
        "hours": {str(g): hours for g in ASSUMPTIONS["gpu_counts"]},
        "notes": f"{_fmt_gb(2 * arch.hidden**2 * 8)} of float64 Grams per cut ({_fmt_gb(gram_bytes)} for all); "
        f"one process, one forward; {needed} GPU(s) hold the weights, else offload; CPU float64 is fine",
    }


def _activations(arch: Arch, layers: int) -> float:
    recovery = ASSUMPTIONS["recovery"]
    tokens = recovery["micro_batch"] * recovery["seq_len"]
    return tokens * (layers * 34 * arch.hidden + 2 * arch.vocab * 4)  # blocks, then fp32 logits and their grad


def _lora_params(arch: Arch, layers: int) -> int:
    r = ASSUMPTIONS["recovery"]["lora_rank"]
    q_out, kv_out = arch.heads * arch.hd, arch.kv_heads * arch.hd
    per_block = r * (
        (arch.hidden + q_out)
        + 2 * (arch.hidden + kv_out)
        + (q_out + arch.hidden)
        + 3 * (arch.hidden + arch.intermediate)
    )
    return layers * per_block


def recovery_rows(arch: Arch, multipliers: dict[str, float]) -> list[dict]:
    layers = arch.layers - round(ASSUMPTIONS["removed_fraction"] * arch.layers)
    pruned = arch.params(layers)
    recovery = ASSUMPTIONS["recovery"]
    seq, tokens = recovery["seq_len"], recovery["tokens"]
    forward = tokens * model_forward_flops_per_token(arch, seq, layers)
    teacher_forward = tokens * model_forward_flops_per_token(arch, seq)
    bpp = ASSUMPTIONS["bytes_per_param"]
    gathered = 2 * 2 * arch.block_params  # FSDP: the current and the prefetched block, unsharded, bf16
    lora = _lora_params(arch, layers) * bpp["lora_trainable"]
    recipes = {
        "LoRA (FSDP2)": (forward * multipliers["frozen_over_forward"], lambda n: bpp["bf16"] * pruned / n + lora),
        "full (FSDP2)": (forward * multipliers["full_over_forward"], lambda n: bpp["full_training_fsdp"] * pruned / n),
        "full + KD, teacher sharded (FSDP2)": (
            forward * multipliers["full_over_forward"] + teacher_forward,
            lambda n: bpp["full_training_fsdp"] * pruned / n + bpp["bf16"] * arch.params() / n,
        ),
    }
    rows = []
    for stage, (flops, state_bytes) in recipes.items():
        hours: dict[str, Any] = {}
        peak = {}
        for gpus in ASSUMPTIONS["gpu_counts"]:
            memory = state_bytes(gpus) + gathered + _activations(arch, layers)
            if "KD" in stage:
                memory += _activations(arch, 0) / 2  # the teacher's logits
            peak[gpus] = memory
            mfu = ASSUMPTIONS["mfu"]["training" if gpus <= ASSUMPTIONS["gpus_per_node"] else "training_multi_node"]
            hours[str(gpus)] = _hours(flops, gpus, mfu) if memory <= _usable_bytes() else None
        memory_text = " / ".join(_fmt_gb(peak[g]) for g in ASSUMPTIONS["gpu_counts"])
        rows.append({"stage": f"recovery: {stage}", "memory": memory_text, "memory_bytes": peak, "flops": flops,
                     "hours": hours, "notes": "per device on 1 / 8 / 64 GPUs; 'does not fit': add "
                     "fsdp_offload_params or more GPUs"})  # fmt: skip
    # QLoRA: 4-bit base (not sharded here: one process or DDP replicas), bf16 embeddings and head.
    quantized = layers * arch.block_params * bpp["nf4_double_quant"] + arch.embedding_params * bpp["bf16"]
    memory = quantized + lora + _activations(arch, layers)
    flops = forward * multipliers["frozen_over_forward"]
    fits = memory <= _usable_bytes()
    rows.append({
        "stage": "recovery: QLoRA (1 GPU, or DDP replicas)",
        "memory": _fmt_gb(memory),
        "memory_bytes": memory,
        "flops": flops,
        "hours": {str(g): (_hours(flops, g, ASSUMPTIONS["mfu"]["qlora"]) if fits else None)
                  for g in ASSUMPTIONS["gpu_counts"]},
        "notes": "NF4 + double quantization; QLoRA under FSDP is refused here; DDP replicas untested",
    })  # fmt: skip
    return rows


def evaluation_row(arch: Arch) -> dict:
    layers = arch.layers - round(ASSUMPTIONS["removed_fraction"] * arch.layers)
    weights = ASSUMPTIONS["bytes_per_param"]["bf16"] * arch.params(layers)
    seq = 2048
    flops = ASSUMPTIONS["evaluation_tokens"] * model_forward_flops_per_token(arch, seq, layers)
    memory = weights + seq * arch.vocab * 4 + 34 * arch.hidden * seq
    per_replica = _gpus_to_hold(memory)
    hours: dict[str, Any] = {}
    for gpus in ASSUMPTIONS["gpu_counts"]:
        replicas = gpus // per_replica
        hours[str(gpus)] = _hours(flops, replicas, ASSUMPTIONS["mfu"]["forward"]) if replicas else None
    return {
        "stage": "evaluation (pruned model)",
        "memory": _fmt_gb(memory),
        "memory_bytes": memory,
        "flops": flops,
        "hours": hours,
        "notes": f"{per_replica} GPU(s) per replica (device_map), data parallel over replicas; "
        f"{ASSUMPTIONS['evaluation_tokens'] / 1e6:.0f}M tokens; fewer GPUs: CPU offload (slow)",
    }


def calibration_cache_bytes(arch: Arch, samples: int, seq: int) -> float:
    """The scoring engine's cache of every block input (bf16), the one state that grows with the calibration."""
    return samples * seq * arch.hidden * (arch.layers + 1) * 2.0


def build_table(multipliers: dict[str, float]) -> dict[str, list[dict]]:
    """Every stage for every architecture."""
    table = {}
    for name, arch in ARCHS.items():
        rows = scoring_rows(arch, multipliers)
        rows.append(compensation_row(arch))
        rows += recovery_rows(arch, multipliers)
        rows.append(evaluation_row(arch))
        large = ASSUMPTIONS["calibration_large"]
        rows.append({
            "stage": f"calibration cache at {large[0]} x {large[1]} tokens",
            "memory": _fmt_gb(calibration_cache_bytes(arch, *large)),
            "memory_bytes": calibration_cache_bytes(arch, *large),
            "flops": 0.0,
            "hours": {str(g): "-" for g in ASSUMPTIONS["gpu_counts"]},
            "notes": "each block's inputs stay on that block's device (device_map spreads them over the GPUs); "
            "SLEB keeps a second copy; BlockwiseEngine(cache_device='cpu') would hold it in CPU RAM but the "
            "criteria do not expose it yet",
        })  # fmt: skip
        table[name] = rows
    return table


# --------------------------------------------------------------------------------------------------- tables
def markdown(table: dict) -> str:
    """The tables of docs/scaling.md."""
    lines = []
    gpus = ASSUMPTIONS["gpu_counts"]
    for name, rows in table.items():
        arch = ARCHS[name]
        lines.append(f"### {name}: {arch.describe()}\n")
        head = (
            "| stage | peak memory per device | FLOPs | "
            + " | ".join(f"hours on {g} GPU" for g in gpus)
            + " | notes |"
        )
        lines += [head, "|" + "---|" * (4 + len(gpus))]
        for row in rows:
            hours = " | ".join(_format_hours(row["hours"].get(str(g))) for g in gpus)
            lines.append(f"| {row['stage']} | {row['memory']} | {row['flops']:.2e} | {hours} | {row['notes']} |")
        lines.append("")
    return "\n".join(lines)


def _format_hours(value) -> str:
    if value is None:
        return "does not fit"
    if isinstance(value, str):
        return value
    if value < 0.01:
        return "< 0.01"
    return f"{value:.2g}" if value < 10 else f"{value:,.0f}"
