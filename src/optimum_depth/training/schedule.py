"""When pruning happens during training, and how much each time (pure logic, no torch).

``schedule="one_shot"`` is one event before the first optimizer step that reaches the config's target.
``schedule="iterative"`` splits the target into several events: ``layers_per_step`` candidates every
``prune_every_n_steps`` optimizer steps starting at step 0, or at the explicit ``prune_at_steps`` (with
``layers_per_step`` each, or the target split evenly over the listed steps, earlier events taking the remainder).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

from ..config import DepthPruningConfig
from ..errors import PruningTargetError

logger = logging.getLogger(__name__)

__all__ = ["PruningEvent", "build_pruning_schedule", "event_config"]


@dataclass(frozen=True)
class PruningEvent:
    """One pruning event of a schedule.

    Args:
        step: Optimizer step (``TrainerState.global_step``) at which the event happens: step 0 is before the first
            optimizer step, step ``s`` right after the ``s``-th one.
        num_to_remove: Candidates (blocks, or sublayers) removed by the event; ``None`` means "the config's own
            target" (one-shot with a ``target_num_params`` budget).
    """

    step: int
    num_to_remove: int | None

    def to_dict(self) -> dict:
        """Returns the event as a JSON-serialisable dict."""
        return {"step": self.step, "num_to_remove": self.num_to_remove}

    @classmethod
    def from_dict(cls, data: dict) -> PruningEvent:
        """Builds an event from :meth:`to_dict` output."""
        return cls(step=int(data["step"]), num_to_remove=data.get("num_to_remove"))


def event_config(config: DepthPruningConfig, event: PruningEvent) -> DepthPruningConfig:
    """The one-shot config of a single event: the run's config with the event's count as its target.

    Args:
        config: The run's config.
        event: The event.

    Returns:
        ``config`` itself when the event uses the config's own target, else a copy targeting ``num_to_remove``.
    """
    if event.num_to_remove is None:
        return config
    return dataclasses.replace(
        config,
        num_layers_to_remove=event.num_to_remove,
        pruning_ratio=None,
        target_num_params=None,
        schedule="one_shot",
        layers_per_step=None,
        prune_every_n_steps=None,
        prune_at_steps=None,
    )


def _split_evenly(total: int, parts: int) -> list[int]:
    base, remainder = divmod(total, parts)
    return [base + (1 if i < remainder else 0) for i in range(parts)]


def build_pruning_schedule(
    config: DepthPruningConfig, num_candidates: int, max_steps: int | None = None
) -> list[PruningEvent]:
    """Lays out the pruning events of a training run.

    Args:
        config: The pruning config (``schedule`` and its fields, and the target).
        num_candidates: Number of candidates (blocks, or present sublayers) of the model before the first event.
        max_steps: Total optimizer steps of the run, if known; every event must happen before the last step so that
            training follows it.

    Returns:
        The events, in step order.

    Raises:
        PruningTargetError: If the target cannot be split over the given steps, or an event falls at or after
            ``max_steps``.
    """
    if config.schedule == "one_shot":
        events = [PruningEvent(step=0, num_to_remove=config.num_to_remove(num_candidates))]
    else:
        total = config.num_to_remove(num_candidates)
        if total is None:  # guarded by DepthPruningConfig, kept for type narrowing
            raise PruningTargetError("schedule='iterative' needs `pruning_ratio` or `num_layers_to_remove`.")
        if total >= num_candidates:
            raise PruningTargetError(f"Cannot remove {total} of {num_candidates} candidates.")
        events = _iterative_events(config, total)
    if max_steps is not None and max_steps > 0:
        late = [event.step for event in events if event.step >= max_steps]
        if late:
            raise PruningTargetError(
                f"Pruning events at steps {late} fall at or after the end of training (max_steps={max_steps}); the "
                "target would not be reached with training after it. Prune earlier or train longer."
            )
    return events


def _iterative_events(config: DepthPruningConfig, total: int) -> list[PruningEvent]:
    per_event = config.layers_per_step
    if config.prune_at_steps is not None:
        steps = list(config.prune_at_steps)
        if per_event is None:
            if total < len(steps):
                raise PruningTargetError(
                    f"The target removes {total} candidates, fewer than the {len(steps)} steps of `prune_at_steps` "
                    f"{steps}; give fewer steps or set `layers_per_step`."
                )
            sizes = _split_evenly(total, len(steps))
        else:
            needed = math.ceil(total / per_event)
            if needed > len(steps):
                raise PruningTargetError(
                    f"Removing {total} candidates with layers_per_step={per_event} takes {needed} events, but "
                    f"`prune_at_steps` lists only {len(steps)} steps {steps}."
                )
            if needed < len(steps):
                logger.warning(
                    "The target is reached after %d of the %d `prune_at_steps`; steps %s are unused.",
                    needed,
                    len(steps),
                    steps[needed:],
                )
            steps = steps[:needed]
            sizes = [per_event] * (needed - 1) + [total - per_event * (needed - 1)]
    else:
        if per_event is None or config.prune_every_n_steps is None:  # guarded by DepthPruningConfig
            raise PruningTargetError("An iterative schedule needs `prune_at_steps` or `layers_per_step` and N.")
        needed = math.ceil(total / per_event)
        steps = [i * config.prune_every_n_steps for i in range(needed)]
        sizes = [per_event] * (needed - 1) + [total - per_event * (needed - 1)]
    return [PruningEvent(step=s, num_to_remove=k) for s, k in zip(steps, sizes, strict=True)]
