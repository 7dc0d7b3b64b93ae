"""Generation latency and throughput, the Shortened LLaMA protocol.

For every (batch size, output length) grid point: the same prompt repeated ``batch_size`` times, ``generate`` with a
forced output length (``min_new_tokens == max_new_tokens``, so EOS cannot stop it early), ``warmup`` untimed calls,
then ``repeats`` timed calls; the latency is the median, throughput ``batch_size * new_tokens / latency``. Decoding is
greedy (Shortened LLaMA samples with top-k/top-p; the sampling cost is negligible next to the forward passes, and
greedy makes runs reproducible).

Several models (dense and pruned) are measured side by side: at each grid point their warm-up and timed calls are
interleaved (A B, B A, A B, ...), so machine noise (other processes, frequency scaling) hits all of them alike. Every
timed repeat is kept (``LatencyRecord.latencies_s``): :mod:`.latency_stats` turns them into the spread printed beside
each median and flags a figure that is noisy or above the ideal ratio instead of letting it pass as fact.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from .memory import PeakMemoryMonitor
from .results import LatencyRecord
from .settings import DEFAULT_PROMPT, LatencySettings

logger = logging.getLogger(__name__)


def make_prompt_ids(
    tokenizer, batch_size: int, prompt: str = DEFAULT_PROMPT, prompt_len: int | None = None
) -> torch.Tensor:
    """The prompt token ids, repeated for the batch.

    Args:
        tokenizer: The tokenizer.
        batch_size: Rows.
        prompt: Prompt text.
        prompt_len: If given, the prompt's tokens are repeated/truncated to exactly this many tokens.

    Returns:
        ``LongTensor[batch_size, prompt_len]``.
    """
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"][0]
    if ids.numel() == 0:
        raise DataError("The prompt tokenizes to no tokens.")
    if prompt_len is not None:
        if prompt_len < 1:
            raise ConfigError(f"`prompt_len` must be positive, got {prompt_len}.")
        ids = ids.repeat((prompt_len + ids.numel() - 1) // ids.numel())[:prompt_len]
    return ids.unsqueeze(0).repeat(batch_size, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def timed_generate(model, input_ids: torch.Tensor, new_tokens: int, pad_token_id: int | None) -> float:
    """One ``generate`` call with a forced output length; returns its wall time in seconds.

    Raises:
        RuntimeError: If the model did not produce exactly ``new_tokens`` tokens per row.
    """
    device = input_ids.device
    attention_mask = torch.ones_like(input_ids)
    _sync(device)
    start = time.perf_counter()
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=pad_token_id,
    )
    _sync(device)
    elapsed = time.perf_counter() - start
    produced = output.shape[1] - input_ids.shape[1]
    if produced != new_tokens:
        raise RuntimeError(f"generate produced {produced} tokens instead of the forced {new_tokens}.")
    return elapsed


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _timed_rounds(named, input_ids, length: int, pad_token_id, repeats: int, measure_memory: bool, device):
    """Times every model ``repeats`` times on one grid point, in alternating order; returns times and peak memory."""
    names = list(named)
    times: dict[str, list[float]] = {name: [] for name in names}
    peaks: dict[str, float | None] = dict.fromkeys(names)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            monitor = PeakMemoryMonitor(device) if measure_memory else None
            if monitor is None:
                times[name].append(timed_generate(named[name], input_ids, length, pad_token_id))
                continue
            with monitor:
                times[name].append(timed_generate(named[name], input_ids, length, pad_token_id))
            if monitor.peak_mb is not None:
                peaks[name] = max(peaks[name] or 0.0, monitor.peak_mb)
    return times, peaks


def measure_latency(
    models: Mapping[str, Any] | Any,
    tokenizer,
    batch_sizes: Sequence[int] = LatencySettings.batch_sizes,
    new_tokens: Sequence[int] = LatencySettings.new_tokens,
    prompt: str = LatencySettings.prompt,
    prompt_len: int | None = LatencySettings.prompt_len,
    warmup: int = LatencySettings.warmup,
    repeats: int = LatencySettings.repeats,
    measure_memory: bool = LatencySettings.measure_memory,
) -> tuple[dict[str, list[LatencyRecord]], dict[str, Any]]:
    """Measures generation latency of one model or several side by side (interleaved).

    The defaults are those of :class:`~.settings.LatencySettings`.

    Args:
        models: A model, or ``{name: model}`` (e.g. ``{"dense": dense, "pruned": pruned}``), all on one device.
        tokenizer: Their tokenizer.
        batch_sizes: Batch sizes of the grid.
        new_tokens: Output lengths of the grid.
        prompt: Prompt text (Shortened LLaMA's by default).
        prompt_len: Force the prompt to exactly this many tokens (the prompt's tokens repeated).
        warmup: Untimed calls per model and grid point.
        repeats: Timed calls per model and grid point (the median is reported).
        measure_memory: Record the peak memory during each model's timed calls (see :mod:`.memory`; on CPU it is the
            process RSS, which includes every model loaded in the process).

    Returns:
        ``(records, settings)``: model name -> one :class:`LatencyRecord` per grid point (``"model"`` when a single
        model was passed), and the settings (device, dtype, threads, warmup, repeats, versions, order).

    Raises:
        ValueError: On an empty grid, non-positive sizes/repeats, or models on different devices.
    """
    named = dict(models) if isinstance(models, Mapping) else {"model": models}
    if not named:
        raise ConfigError("No model to measure.")
    if not batch_sizes or not new_tokens or min(batch_sizes) < 1 or min(new_tokens) < 1:
        raise ConfigError(f"Batch sizes {list(batch_sizes)} and output lengths {list(new_tokens)} must be positive.")
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"Need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    devices = {str(_model_device(m)) for m in named.values()}
    if len(devices) != 1:
        raise ConfigError(f"All models must be on one device to be compared, got {sorted(devices)}.")
    device = _model_device(next(iter(named.values())))
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for model in named.values():
        model.eval()

    records: dict[str, list[LatencyRecord]] = {name: [] for name in named}
    names = list(named)
    grid = [(b, n) for b in batch_sizes for n in new_tokens]
    for batch_size, length in tqdm(grid, desc="latency grid", leave=False):
        input_ids = make_prompt_ids(tokenizer, batch_size, prompt, prompt_len).to(device)
        for round_ in range(warmup):
            for name in names if round_ % 2 == 0 else names[::-1]:
                timed_generate(named[name], input_ids, length, pad_token_id)
        times, peaks = _timed_rounds(named, input_ids, length, pad_token_id, repeats, measure_memory, device)
        for name in names:
            latency = statistics.median(times[name])
            records[name].append(
                LatencyRecord(
                    batch_size=batch_size,
                    new_tokens=length,
                    prompt_len=int(input_ids.shape[1]),
                    latency_s=latency,
                    tokens_per_s=batch_size * length / latency,
                    peak_memory_mb=peaks[name],
                    latencies_s=times[name],
                )
            )
            logger.info("%s batch=%d new=%d: %.3f s", name, batch_size, length, latency)

    settings = latency_settings(next(iter(named.values())), warmup, repeats, prompt, measure_memory, device)
    settings["interleaved_models"] = names if len(names) > 1 else None
    return records, settings


def latency_settings(
    model, warmup: int, repeats: int, prompt: str, measure_memory: bool, device: torch.device
) -> dict[str, Any]:
    """The settings a latency figure depends on (device, dtype, threads, versions, protocol)."""
    import transformers

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "warmup": warmup,
        "repeats": repeats,
        "statistic": "median",
        "decoding": "greedy, min_new_tokens = max_new_tokens",
        "prompt": prompt,
        "memory": PeakMemoryMonitor(device).method if measure_memory else None,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }
