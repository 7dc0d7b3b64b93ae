"""Helpers for the scripts the slow tests run under ``accelerate launch``."""

from __future__ import annotations

import torch.distributed as dist


def end_process_group() -> None:
    """Waits for every rank, then destroys the default process group.

    A gloo process group left alive at interpreter exit can abort a rank during teardown ("terminate called without an
    active exception", SIGABRT) after all its work is done, which fails the launch. Destroying it on every rank, after a
    barrier so that no rank leaves while another still talks to it, ends the launch cleanly.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
