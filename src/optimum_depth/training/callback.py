"""``DepthPruningCallback``: depth pruning inside ``transformers.Trainer`` (one-shot or iterative).

Each pruning event scores the *current* model on the calibration data, removes the chosen blocks (or, with
``granularity="sublayer"``, attention/MLP sublayers) with :class:`~optimum_depth.pruner.DepthPruner`, drops their
parameters from the optimizer (param groups and state), and logs the event. Sublayer events first give a stock model
its ``Pruned<Family>ForCausalLM`` class *in place* (:func:`~optimum_depth.sublayers.surgery.convert_to_pruned_class`):
the model object, its modules and surviving parameters stay the same objects, so the Trainer, its optimizer and any
peft or DDP wrapper keep working. Events happen in ``on_train_begin`` (step 0: after the optimizer exists, before
its first step) and in ``on_step_end`` right after the optimizer step that reaches an event's step, so a checkpoint
saved at that step already has the pruned structure. Under multi-process DDP rank 0 decides and broadcasts the plan.

Under FSDP or DeepSpeed the model is wrapped and sharded when training starts, so the (one-shot) event runs earlier,
in ``on_init_end``, while every rank still holds the plain model: rank 0 scores and broadcasts the plan, every rank
applies it, the structures are compared, and only then does the Trainer create the optimizer and shard the pruned
model. Iterative schedules are refused there (see :mod:`.distributed`).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..architectures import count_parameters, iter_layer_parts, unwrap_model
from ..calibration import CalibrationData, resolve_calibration
from ..config import DepthPruningConfig
from ..criteria import CRITERIA
from ..errors import ConfigError
from ..plan import PruningPlan
from ..pruner import DepthPruner
from ..scores import LayerScores
from ..sublayers.candidates import list_sublayers
from ..sublayers.surgery import check_conversion_to_pruned_class, convert_to_pruned_class
from .distributed import (
    all_ranks_agree,
    check_parallelism_before_wrapping,
    check_wrapped_model,
    decide_on_main_rank,
    refuse_late_sharded_pruning,
    world_size,
)
from .optimizer_surgery import remove_parameters_from_optimizer
from .resume import CALLBACK_STATE_KEY, model_structure
from .schedule import PruningEvent, build_pruning_schedule, event_config

logger = logging.getLogger(__name__)

__all__ = ["DepthPruningCallback"]


def _calibration_from_state(calibration: Any) -> Any:
    """Turns the JSON form written by :meth:`DepthPruningCallback.state` back into calibration data."""
    if isinstance(calibration, dict) and "input_ids" in calibration:
        return CalibrationData(torch.tensor(calibration["input_ids"], dtype=torch.long), dict(calibration["spec"]))
    return calibration


def _num_candidates(model, granularity: str) -> int:
    """Blocks, or attention/MLP sublayers still present."""
    if granularity == "sublayer":
        return len(list_sublayers(model))
    return sum(1 for _ in iter_layer_parts(model))


def _has_quantized_weights(model) -> bool:
    return any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())


def _event_record(index: int, plan: PruningPlan, scores: LayerScores, model) -> dict[str, Any]:
    """The log entry of one event: scalars (for ``report_to``) plus the removed original indices."""
    record: dict[str, Any] = {
        "pruning/event": index + 1,
        "pruning/num_removed": plan.num_removed,
        "pruning/num_layers": unwrap_model(model).config.num_hidden_layers,
        "pruning/num_params": count_parameters(unwrap_model(model)),
        "pruning/removed_layers": list(plan.removed_blocks),
    }
    if plan.granularity == "sublayer":
        record["pruning/removed_attention"] = list(plan.removed_attention)
        record["pruning/removed_mlp"] = list(plan.removed_mlp)
        record["pruning/num_sublayers"] = len(list_sublayers(model))
    for position, value in enumerate(scores.values):
        if scores.sublayers is None:
            record[f"pruning/score/{scores.layer_indices[position]}"] = float(value)
        else:  # e.g. pruning/score/attention_3 (original block numbering)
            record[f"pruning/score/{scores.sublayers[position]}_{scores.layer_indices[position]}"] = float(value)
    return record


class DepthPruningCallback(TrainerCallback, ExportableState):
    """Prunes decoder blocks (or attention/MLP sublayers) during ``Trainer.train``, once or in several events.

    Args:
        config: What to remove and when (``schedule="one_shot"`` or ``"iterative"`` with ``layers_per_step`` and
            ``prune_every_n_steps``, or ``prune_at_steps``). A dict (as stored in checkpoints) is accepted. With
            ``granularity="sublayer"`` (``criterion="finercut"``) the candidates are the attention and MLP sublayers
            and the counts of the schedule count sublayers; the family needs a pruned model class (Llama, Mistral,
            Qwen2, Qwen3, Phi-3, SmolLM3), which ``on_train_begin`` checks.
        calibration: Calibration source for data-driven criteria (anything :func:`prepare_calibration` takes);
            ``None`` uses ``config.calibration_dataset``. Once resolved, the token ids are stored with each
            checkpoint so that a resumed run rescores on exactly the same data.
        tokenizer: Tokenizer for text calibration sources.
        trainer: Optional ``Trainer``; when given, events are logged with ``trainer.log`` and so also reach the
            ``report_to`` integrations. Without it they are appended to ``state.log_history`` only.

    Example:
        ```python
        >>> config = DepthPruningConfig(criterion="taylor", pruning_ratio=0.25, schedule="iterative",
        ...                             layers_per_step=2, prune_every_n_steps=100)
        >>> trainer = Trainer(model, args, train_dataset=train)  # doctest: +SKIP
        >>> trainer.add_callback(DepthPruningCallback(config, calibration=texts, tokenizer=tok, trainer=trainer))
        >>> trainer.train()  # doctest: +SKIP
        >>> finercut = DepthPruningConfig(granularity="sublayer", criterion="finercut", pruning_ratio=0.25,
        ...                               schedule="iterative", layers_per_step=4, prune_every_n_steps=100)
        >>> callback = DepthPruningCallback(finercut, calibration=texts, tokenizer=tok)  # sublayers, in place
        ```
    """

    def __init__(
        self,
        config: DepthPruningConfig | dict[str, Any],
        calibration: Any = None,
        tokenizer: Any = None,
        trainer: Any = None,
    ):
        if isinstance(config, dict):
            config = DepthPruningConfig.from_dict(config)
        if not isinstance(config, DepthPruningConfig):
            raise TypeError(f"`config` must be a DepthPruningConfig, got {type(config).__name__}.")
        self.config = config
        self.calibration = _calibration_from_state(calibration)
        self.tokenizer = tokenizer
        self.trainer = trainer
        # Progress, JSON-native so Trainer can store and restore it (ExportableState).
        self.pruning_schedule: list[dict[str, Any]] | None = None
        self.events_done: int = 0
        self.event_log: list[dict[str, Any]] = []
        self.initial_structure: dict[str, list[int]] | None = None
        self.structure: dict[str, list[int]] | None = None
        self._zero_gradient_holds: list[torch.nn.Parameter] = []
        self._before_wrapping: str | None = None
        """``"fsdp"``/``"deepspeed"`` once the event ran in ``on_init_end``, before the Trainer sharded the model."""
        self._deferred_logs: list[dict[str, Any]] = []
        self._defer_logs = False

    # ------------------------------------------------------------------------------------------ checkpoint state
    def _calibration_state(self) -> Any:
        if not CRITERIA[self.config.criterion].needs_calibration:
            return None
        source = self.calibration
        if isinstance(source, CalibrationData):
            return {"input_ids": source.input_ids.tolist(), "spec": dict(source.spec)}
        if isinstance(source, torch.Tensor):
            return source.tolist()
        if source is None or isinstance(source, str) or (isinstance(source, list) and not source):
            return source
        if isinstance(source, list) and all(isinstance(s, (str, list)) for s in source):
            return source
        return None  # not JSON-serialisable (a Dataset, a DataLoader, ...): resolved data is stored once available

    def state(self) -> dict[str, Any]:
        """The callback's state, saved in ``trainer_state.json`` with every checkpoint."""
        return {
            "args": {"config": self.config.to_dict(), "calibration": self._calibration_state()},
            "attributes": {
                "pruning_schedule": self.pruning_schedule,
                "events_done": self.events_done,
                "event_log": self.event_log,
                "initial_structure": self.initial_structure,
                "structure": self.structure,
            },
        }

    def _adopt_saved_state(self, state) -> None:
        """Takes over the progress stored in a checkpoint's ``TrainerState`` (when resuming)."""
        saved = (state.stateful_callbacks or {}).get(CALLBACK_STATE_KEY)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        if not isinstance(saved, dict):
            return
        attributes = saved.get("attributes", {})
        if attributes.get("pruning_schedule") is None or int(attributes.get("events_done", 0)) < self.events_done:
            return
        for name, value in attributes.items():
            setattr(self, name, value)
        stored_calibration = saved.get("args", {}).get("calibration")
        if isinstance(stored_calibration, dict):
            self.calibration = _calibration_from_state(stored_calibration)

    # -------------------------------------------------------------------------------------------------- events
    def _events(self) -> list[PruningEvent]:
        return [PruningEvent.from_dict(e) for e in self.pruning_schedule or []]

    def _calibration_data(self, model) -> CalibrationData | None:
        if not CRITERIA[self.config.criterion].needs_calibration:
            return None
        if not isinstance(self.calibration, CalibrationData):
            data = resolve_calibration(self.config, model, self.calibration, self.tokenizer)
            if data is None:
                raise ConfigError(
                    f"The {self.config.criterion!r} criterion needs calibration data: pass `calibration=` to "
                    "DepthPruningCallback or set `calibration_dataset` in the config."
                )
            self.calibration = data
        return self.calibration

    def _start(self, args, state, model) -> None:
        """Validates everything and lays out the schedule (fresh run) or checks the structure (resumed run)."""
        if self._before_wrapping is None:
            check_wrapped_model(args, model)
        criterion = CRITERIA[self.config.criterion]
        if _has_quantized_weights(model) and (criterion.needs_gradients or not criterion.needs_calibration):
            raise ConfigError(
                f"The {self.config.criterion!r} criterion reads weights or their gradients, which a bitsandbytes "
                "4/8-bit model does not expose; use a forward-only criterion (ppl, block_influence, angular, sleb) "
                "or prune in full precision before quantizing."
            )
        self._adopt_saved_state(state)
        if self.pruning_schedule is not None:
            if model_structure(model) != self.structure:
                raise ConfigError(
                    f"The model's structure {model_structure(model)} differs from the one recorded with the "
                    f"checkpoint {self.structure}. When resuming a pruning run, call "
                    "`prepare_model_for_resume(model, checkpoint)` before `trainer.train(resume_from_checkpoint=...)`."
                )
            return
        num_candidates = _num_candidates(model, self.config.granularity)
        events = build_pruning_schedule(self.config, num_candidates, max_steps=state.max_steps or None)
        total = sum(e.num_to_remove for e in events if e.num_to_remove is not None)
        whole = (
            self.config if self.config.schedule == "one_shot" else event_config(self.config, PruningEvent(0, total))
        )
        DepthPruner(whole).check(model)
        if self.config.granularity == "sublayer":
            check_conversion_to_pruned_class(model)  # what the first event will do in place
        self.pruning_schedule = [e.to_dict() for e in events]
        self.initial_structure = self.structure = model_structure(model)
        logger.info("Depth pruning schedule: %s", self.pruning_schedule)

    def _run_due_events(self, args, state, model, optimizer) -> None:
        events = self._events()
        while self.events_done < len(events) and events[self.events_done].step <= state.global_step:
            self._run_event(args, state, model, optimizer, self.events_done, events[self.events_done])

    def _run_event(self, args, state, model, optimizer, index: int, event: PruningEvent) -> None:
        pruner = DepthPruner(event_config(self.config, event))

        def decide() -> tuple[LayerScores, PruningPlan]:
            scores = pruner.score(model, calibration=self._calibration_data(model))
            return scores, pruner.plan(scores)

        scores, plan = decide_on_main_rank(
            decide,
            to_json=lambda sp: {"scores": sp[0].to_dict(), "plan": sp[1].to_dict()},
            from_json=lambda d: (LayerScores.from_dict(d["scores"]), PruningPlan.from_dict(d["plan"])),
        )
        pruner.last_scores = scores
        before = {id(p): p for p in model.parameters()}
        if plan.granularity == "sublayer":
            convert_to_pruned_class(model)  # in place: the Trainer keeps this very model object
        if pruner.apply(model, plan) is not model:
            raise RuntimeError("Internal error: pruning replaced the model object the Trainer holds.")
        remaining = {id(p) for p in model.parameters()}
        removed = [p for key, p in before.items() if key not in remaining]
        del before
        if optimizer is not None:
            remove_parameters_from_optimizer(optimizer, removed)
        if world_size() > 1 and self._before_wrapping is None:  # DDP's reducer already exists
            self._hold_zero_gradients(removed)
        del removed
        model.zero_grad(set_to_none=True)  # gradient-based criteria leave gradients behind
        gc.collect()
        self.structure = model_structure(model)
        if not all_ranks_agree(repr(self.structure)):
            raise RuntimeError(f"Ranks disagree on the pruned structure after event {index + 1}.")
        self.events_done = index + 1
        self.event_log.append(
            {
                "step": state.global_step,
                "num_to_remove": event.num_to_remove,
                "plan": plan.to_dict(),
                "calibration": dict(scores.calibration),
            }
        )
        self._log(state, _event_record(index, plan, scores, model))
        sublayers = (
            f", attention of {list(plan.removed_attention)}, MLP of {list(plan.removed_mlp)}"
            if plan.granularity == "sublayer"
            else ""
        )
        logger.info(
            "Pruning event %d at step %d removed blocks %s%s; %d blocks remain%s.",
            index + 1,
            state.global_step,
            list(plan.removed_blocks),
            sublayers,
            unwrap_model(model).config.num_hidden_layers,
            f" (world size {world_size()})" if world_size() > 1 else "",
        )

    def _hold_zero_gradients(self, removed: list[torch.nn.Parameter]) -> None:
        """Gives removed parameters a zero gradient until the next DDP step has run (DDP only).

        A backward pass outside DDP's forward (Taylor scoring on rank 0) leaves the reducer's local "used" flags set
        for every parameter it reached; in the next step DDP's reducer then expects a gradient for the removed ones
        too and fails on an undefined one. A zero gradient satisfies it for that one step; it is released at the next
        ``on_step_end``.
        """
        for param in removed:
            if param.requires_grad:
                param.grad = torch.zeros_like(param)
        self._zero_gradient_holds.extend(removed)

    def _release_zero_gradients(self) -> None:
        for param in self._zero_gradient_holds:
            param.grad = None
        self._zero_gradient_holds = []

    def _log(self, state, record: dict[str, Any]) -> None:
        if self._defer_logs:
            self._deferred_logs.append(record)  # Trainer.train() starts a new TrainerState: logged in on_train_begin
            return
        if self.trainer is not None:
            self.trainer.log(dict(record))
            return
        entry = {**record, "step": state.global_step}
        if state.epoch is not None:
            entry["epoch"] = state.epoch
        state.log_history.append(entry)

    # ------------------------------------------------------------------------------------------ Trainer hooks
    def on_init_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        """Under FSDP/DeepSpeed: prunes now, before the Trainer wraps and shards the model (one-shot only)."""
        sharding = check_parallelism_before_wrapping(args, self.config, model, optimizer)
        if sharding is None:
            return
        if model is None:
            raise ConfigError("DepthPruningCallback needs the model; it is passed by transformers.Trainer.")
        self._before_wrapping = sharding
        self._defer_logs = True
        try:
            self._start(args, state, model)
            self._run_due_events(args, state, model, None)
        except BaseException:
            self._before_wrapping = None
            self._deferred_logs = []
            raise
        logger.info("Pruned before %s wraps the model (world size %d).", sharding, world_size())

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        """Validates, lays out the schedule and runs the events due at the current step (step 0: one-shot)."""
        if self._before_wrapping is not None:
            self._defer_logs = False
            for record in self._deferred_logs:
                self._log(state, record)
            self._deferred_logs = []
            return
        refuse_late_sharded_pruning(args)
        if model is None:
            raise ConfigError("DepthPruningCallback needs the model; it is passed by transformers.Trainer.")
        self._start(args, state, model)
        self._run_due_events(args, state, model, optimizer)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        """Runs the events due after this optimizer step."""
        self._release_zero_gradients()
        if model is not None and self.pruning_schedule is not None:
            self._run_due_events(args, state, model, optimizer)
