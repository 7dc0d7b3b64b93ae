"""Peak memory over a block of code: the CUDA allocator on GPU, a sampled process RSS on CPU.

On CPU, ``resource.getrusage(...).ru_maxrss`` is the peak over the whole process lifetime, so it cannot isolate one
call. :class:`PeakMemoryMonitor` instead samples the resident set size (RSS) from a background thread every few
milliseconds while the block runs (``psutil`` when installed, else ``/proc/self/statm``). The value is process-wide:
it includes everything the process holds (every loaded model, the Python runtime), so compare models measured in
separate processes. On GPU it is ``torch.cuda.max_memory_allocated`` after resetting the peak (tensors only).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import torch

MIB = 1024 * 1024


def _rss_reader() -> Callable[[], int] | None:
    """A function returning the process RSS in bytes, or ``None`` when the platform offers none."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        process = psutil.Process(os.getpid())
        return lambda: int(process.memory_info().rss)
    if os.path.exists("/proc/self/statm"):
        page = os.sysconf("SC_PAGE_SIZE")

        def read_statm() -> int:
            with open("/proc/self/statm", encoding="ascii") as handle:
                return int(handle.read().split()[1]) * page

        return read_statm
    return None


class PeakMemoryMonitor:
    """Context manager measuring peak memory (MiB) over its block.

    Args:
        device: The device the model runs on.
        interval_s: RSS sampling period on CPU.

    Attributes:
        peak_mb: Peak memory in MiB after the block, or ``None`` when it cannot be measured.
        method: ``"cuda_max_memory_allocated"``, ``"sampled_process_rss"`` or ``"unavailable"``.
    """

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.002) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_mb: float | None = None
        self._peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = None if self.device.type == "cuda" else _rss_reader()
        if self.device.type == "cuda":
            self.method = "cuda_max_memory_allocated"
        else:
            self.method = "sampled_process_rss" if self._read is not None else "unavailable"

    def _sample(self, read: Callable[[], int]) -> None:
        while not self._stop.is_set():
            self._peak_bytes = max(self._peak_bytes, read())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemoryMonitor:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._read is not None:
            self._peak_bytes = self._read()
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._sample, args=(self._read,), name="peak-rss-sampler", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / MIB
        elif self._thread is not None and self._read is not None:
            self._stop.set()
            self._thread.join()
            self._peak_bytes = max(self._peak_bytes, self._read())
            self.peak_mb = self._peak_bytes / MIB
