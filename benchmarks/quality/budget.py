"""Training under a CPU-time budget, with the learning-rate schedule laid over the budget rather than a step count.

Recovery recipes are compared at *equal compute*: each run trains until its process has used ``budget`` CPU seconds
(one thread, so CPU seconds are compute, and other processes on the machine do not change them much). The number of
steps a recipe gets therefore depends on its cost per step (a teacher forward, LoRA's cheaper optimizer). The
learning rate follows a linear warm-up over ``warmup_steps`` steps, then a cosine decay over the fraction of the
budget used, reaching 0 when the budget runs out, so every run's schedule ends properly whatever its speed.
"""

from __future__ import annotations

import math
import time
import types

from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback


class CpuClock:
    """CPU seconds of this process since :meth:`start` (``time.process_time``), shared by the schedule and the stop."""

    def __init__(self, budget_s: float):
        self.budget_s = float(budget_s)
        self._start: float | None = None

    def start(self) -> None:
        """Starts counting (idempotent)."""
        if self._start is None:
            self._start = time.process_time()

    @property
    def used(self) -> float:
        """CPU seconds used since :meth:`start` (0 before)."""
        return 0.0 if self._start is None else time.process_time() - self._start

    @property
    def fraction(self) -> float:
        """The fraction of the budget used, in ``[0, 1]``."""
        return min(1.0, self.used / self.budget_s)


def cosine_over_budget(clock: CpuClock, warmup_steps: int):
    """The LR multiplier: linear warm-up on steps, then cosine decay on the used budget fraction."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return 0.5 * (1.0 + math.cos(math.pi * clock.fraction))

    return factor


class StopAtBudget(TrainerCallback):
    """Starts the clock at the first step and stops training once the budget is used."""

    def __init__(self, clock: CpuClock):
        self.clock = clock
        self.steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.start()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps = state.global_step
        if self.clock.used >= self.clock.budget_s:
            control.should_training_stop = True
        return control


def limit_to_budget(trainer, budget_s: float, warmup_steps: int) -> CpuClock:
    """Makes ``trainer`` train for ``budget_s`` CPU seconds with :func:`cosine_over_budget`.

    The trainer's ``max_steps`` must be an upper bound (large); the scheduler it would create is replaced.

    Returns:
        The clock (``used`` is the training CPU time after ``trainer.train()``).
    """
    clock = CpuClock(budget_s)

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, cosine_over_budget(clock, warmup_steps))
        return self.lr_scheduler

    trainer.create_scheduler = types.MethodType(create_scheduler, trainer)
    trainer.add_callback(StopAtBudget(clock))
    return clock
