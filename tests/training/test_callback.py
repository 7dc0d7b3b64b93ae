"""DepthPruningCallback inside transformers.Trainer: schedules, optimizer consistency, peft, resume, logging."""

from __future__ import annotations

import gc
import json
import math
import weakref

import pytest
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import TrainerControl, TrainerState

from optimum_depth import DepthPruningConfig, PruningTargetError, UnsupportedArchitectureError, remove_layers
from optimum_depth.training.callback import DepthPruningCallback
from optimum_depth.training.resume import prepare_model_for_resume, read_pruning_state

from tiny_models import make_tiny_model, make_unsupported_model, random_ids
from trainer_helpers import CountingDataset, losses, optimizer_problems, pruning_entries, resumable_args, training_args


class ConsistencyProbe(TrainerCallback):
    """Before every optimizer step, records the depth and checks the optimizer holds exactly the trainable params."""

    def __init__(self):
        self.layers_at_step: list[int] = []
        self.problems: list[str] = []

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.layers_at_step.append(model.config.num_hidden_layers)
        self.problems += optimizer_problems(model, optimizer, state.global_step)


def block_config(**overrides) -> DepthPruningConfig:
    kwargs = dict(criterion="magnitude", protect_first=1, protect_last=1)
    kwargs.update(overrides)
    return DepthPruningConfig(**kwargs)


def test_one_shot_prunes_before_first_step_and_keeps_training(tmp_path):
    model = make_tiny_model("llama").train()
    original = {name: weakref.ref(param) for name, param in model.named_parameters()}
    probe = ConsistencyProbe()
    callback = DepthPruningCallback(block_config(num_layers_to_remove=2))
    args = training_args(tmp_path, max_steps=30)
    trainer = Trainer(model, args, train_dataset=CountingDataset(), callbacks=[callback, probe])
    trainer.train()

    assert probe.layers_at_step == [4] * 30  # pruned before the first optimizer step
    assert probe.problems == []
    (event,) = pruning_entries(trainer.state.log_history)
    assert event["step"] == 0 and len(event["pruning/removed_layers"]) == 2
    assert model.config.surviving_layers == [i for i in range(6) if i not in event["pruning/removed_layers"]]
    # The least important unprotected blocks went (magnitude, computed here from the logged scores).
    scores = {i: event[f"pruning/score/{i}"] for i in range(1, 5)}
    assert sorted(event["pruning/removed_layers"]) == sorted(sorted(scores, key=scores.get)[:2])

    history = losses(trainer.state.log_history)
    assert sum(history[-5:]) / 5 < 0.8 * sum(history[:5]) / 5
    # The linear LR schedule is the one of an unpruned run: lr_t = lr * (1 - t / max_steps).
    rates = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    assert rates == pytest.approx([3e-3 * (1 - t / 30) for t in range(30)])

    # The removed blocks' parameters are freed; the others are alive.
    del trainer
    gc.collect()
    removed = {f"model.layers.{i}." for i in event["pruning/removed_layers"]}
    for name, ref in original.items():
        assert (ref() is None) == any(name.startswith(prefix) for prefix in removed), name


def test_one_shot_parameter_budget(tmp_path):
    model = make_tiny_model("llama").train()
    total = sum(p.numel() for p in model.parameters())
    per_block = sum(p.numel() for p in model.model.layers[0].parameters())
    budget = total - 2 * per_block + 1  # two blocks must go, one is not enough
    trainer = Trainer(
        model,
        training_args(tmp_path, max_steps=2),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(block_config(target_num_params=budget))],
    )
    trainer.train()
    assert model.config.num_hidden_layers == 4
    assert sum(p.numel() for p in model.parameters()) <= budget


def test_iterative_every_n_steps_reaches_target(tmp_path):
    model = make_tiny_model("llama").train()
    probe = ConsistencyProbe()
    config = block_config(num_layers_to_remove=3, schedule="iterative", layers_per_step=1, prune_every_n_steps=4)
    trainer = Trainer(
        model,
        training_args(tmp_path),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(config), probe],
    )
    trainer.train()

    assert probe.problems == []
    assert probe.layers_at_step == [5] * 4 + [4] * 4 + [3] * 4
    events = pruning_entries(trainer.state.log_history)
    assert [e["step"] for e in events] == [0, 4, 8]
    assert [e["pruning/num_layers"] for e in events] == [5, 4, 3]
    assert model.config.num_hidden_layers == 3 and len(model.model.layers) == 3
    removed = sorted(i for e in events for i in e["pruning/removed_layers"])
    assert model.config.surviving_layers == [i for i in range(6) if i not in removed]
    assert 0 not in removed and 5 not in removed  # protect_first/last hold across events
    assert len(trainer.optimizer.state) == sum(1 for p in model.parameters() if p.requires_grad)


def test_iterative_rescoring_with_a_data_driven_criterion(tmp_path):
    model = make_tiny_model("llama").train()
    calibration = random_ids(4, 16, seed=3)
    config = DepthPruningConfig(
        criterion="block_influence",
        num_layers_to_remove=2,
        schedule="iterative",
        prune_at_steps=[0, 3],
        num_samples=4,
        seq_len=16,
        protect_first=1,
    )
    trainer = Trainer(
        model,
        training_args(tmp_path, max_steps=6),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(config, calibration=calibration)],
    )
    trainer.train()
    first, second = pruning_entries(trainer.state.log_history)
    # The second event rescored the 5 remaining blocks and removed the least important unprotected one.
    second_scores = {int(k.rsplit("/", 1)[1]): v for k, v in second.items() if k.startswith("pruning/score/")}
    assert len(second_scores) == 5 and first["pruning/removed_layers"][0] not in second_scores
    unprotected = {i: v for i, v in second_scores.items() if i != 0}
    assert second["pruning/removed_layers"] == [min(unprotected, key=unprotected.get)]
    assert model.config.num_hidden_layers == 4


def test_peft_lora_adapters_leave_with_their_blocks(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = make_tiny_model("llama")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).train()
    probe = ConsistencyProbe()
    config = block_config(num_layers_to_remove=2, schedule="iterative", layers_per_step=1, prune_every_n_steps=3)
    trainer = Trainer(
        model,
        training_args(tmp_path, max_steps=6),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(config), probe],
    )
    trainer.train()

    assert probe.problems == []  # the optimizer only ever held the trainable LoRA weights of present blocks
    held = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(held) == 4 * 2 * 2  # 4 blocks x (q, v) x (A, B)
    lora_names = [n for n, p in model.named_parameters() if "lora_" in n]
    assert len(lora_names) == 16 and all(".layers." in n for n in lora_names)
    assert base.config.num_hidden_layers == 4

    # The adapter saved from the pruned run applies to a freshly pruned base and gives the same outputs.
    model.save_pretrained(tmp_path / "adapter")
    fresh = make_tiny_model("llama")
    kept = base.config.surviving_layers
    remove_layers(fresh, [i for i in range(6) if i not in kept])
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    ids = random_ids(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model.eval()(ids).logits)


def run_resumable(tmp_path, name: str, max_steps: int, resume: str | None = None, restore_flag: bool = False):
    model = make_tiny_model("llama").train()
    if resume is not None:
        prepare_model_for_resume(model, resume)
    config = block_config(num_layers_to_remove=2, schedule="iterative", layers_per_step=1, prune_at_steps=[0, 4])
    args = resumable_args(tmp_path, name, max_steps, restore_flag)
    trainer = Trainer(model, args, train_dataset=CountingDataset(), callbacks=[DepthPruningCallback(config)])
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


@pytest.mark.parametrize("restore_flag", [False, True])
def test_resume_between_two_events_matches_uninterrupted_run(tmp_path, restore_flag):
    reference, ref_trainer = run_resumable(tmp_path, "full", max_steps=8)
    checkpoint = tmp_path / "full" / "checkpoint-2"
    assert read_pruning_state(checkpoint)["attributes"]["events_done"] == 1
    # A checkpoint written at an event's step already has the pruned structure.
    with open(tmp_path / "full" / "checkpoint-4" / "config.json") as handle:
        assert len(json.load(handle)["surviving_layers"]) == 4

    resumed, trainer = run_resumable(
        tmp_path, "resumed", max_steps=8, resume=str(checkpoint), restore_flag=restore_flag
    )
    assert resumed.config.surviving_layers == reference.config.surviving_layers
    expected = reference.state_dict()
    got = resumed.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
    events = pruning_entries(trainer.state.log_history)
    assert [e["step"] for e in events] == [0, 4]  # the first from the checkpoint's history, the second after resume
    assert resumed.config.pruning == reference.config.pruning


def test_resume_without_restructuring_the_model_is_refused(tmp_path):
    run_resumable(tmp_path, "full", max_steps=6)
    saved = read_pruning_state(tmp_path / "full" / "checkpoint-2")
    state = TrainerState(max_steps=8, global_step=2, stateful_callbacks={"DepthPruningCallback": saved})
    callback = DepthPruningCallback(block_config(num_layers_to_remove=1))
    unpruned = make_tiny_model("llama")
    with pytest.raises(ValueError, match="prepare_model_for_resume"):
        callback.on_train_begin(training_args(tmp_path), state, TrainerControl(), model=unpruned, optimizer=None)
    assert unpruned.config.num_hidden_layers == 6

    other = make_tiny_model("llama")
    remove_layers(other, [1, 2])  # neither the starting structure nor the checkpoint's
    with pytest.raises(ValueError, match="neither"):
        prepare_model_for_resume(other, tmp_path / "full")


def test_impossible_target_fails_before_anything_changes(tmp_path):
    model = make_tiny_model("llama").train()
    trainer = Trainer(
        model,
        training_args(tmp_path, max_steps=4),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(block_config(num_layers_to_remove=5))],
    )
    with pytest.raises(PruningTargetError):
        trainer.train()
    assert model.config.num_hidden_layers == 6 and len(model.model.layers) == 6

    late = block_config(num_layers_to_remove=2, schedule="iterative", layers_per_step=1, prune_at_steps=[0, 10])
    trainer = Trainer(
        model,
        training_args(tmp_path, max_steps=4),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(late)],
    )
    with pytest.raises(PruningTargetError, match="after the end of training"):
        trainer.train()
    assert len(model.model.layers) == 6


def test_events_reach_report_to_when_the_trainer_is_given(tmp_path):
    class Recorder(TrainerCallback):
        def __init__(self):
            self.logs: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

    recorder = Recorder()
    model = make_tiny_model("llama").train()
    trainer = Trainer(
        model, training_args(tmp_path, max_steps=3), train_dataset=CountingDataset(), callbacks=[recorder]
    )
    trainer.add_callback(DepthPruningCallback(block_config(num_layers_to_remove=1), trainer=trainer))
    trainer.train()
    (logged,) = [entry for entry in recorder.logs if "pruning/event" in entry]
    (stored,) = pruning_entries(trainer.state.log_history)
    assert logged["pruning/removed_layers"] == stored["pruning/removed_layers"]
    assert all(isinstance(v, (int, float)) for k, v in logged.items() if k.startswith("pruning/score/"))


def test_state_is_json_and_rebuilds_the_callback():
    calibration = random_ids(3, 8)
    config = DepthPruningConfig(criterion="ppl", num_layers_to_remove=1, num_samples=3, seq_len=8)
    callback = DepthPruningCallback(config, calibration=calibration)
    state = json.loads(json.dumps(callback.state()))
    rebuilt = DepthPruningCallback(**state["args"])
    assert rebuilt.config == config
    assert torch.equal(torch.as_tensor(rebuilt.calibration), calibration)
    assert math.isclose(rebuilt.config.magnitude_p, config.magnitude_p)


# ---------------------------------------------------------------------------------------------- building blocks
def test_optimizer_surgery_matches_an_optimizer_that_never_held_the_removed_params():
    from optimum_depth.training.optimizer_surgery import remove_parameters_from_optimizer

    torch.manual_seed(0)
    layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))
    reference = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))
    reference.load_state_dict(
        {
            k.replace("2.", "1.", 1) if k.startswith("2.") else k: v
            for k, v in layers.state_dict().items()
            if not k.startswith("1.")
        }
    )
    groups = [
        {"params": [layers[0].weight, layers[1].weight, layers[2].weight]},
        {"params": [layers[0].bias, layers[1].bias, layers[2].bias], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    ref_optimizer = torch.optim.AdamW(
        [
            {"params": [reference[0].weight, reference[1].weight]},
            {"params": [reference[0].bias, reference[1].bias], "weight_decay": 0.0},
        ],
        lr=0.1,
    )
    ref_scheduler = torch.optim.lr_scheduler.LambdaLR(ref_optimizer, lambda step: 1.0 / (1 + step))
    x = torch.randn(5, 4)

    def step(mods, opt, sched):
        opt.zero_grad()
        sum(m(x).square().sum() for m in mods).backward()
        opt.step()
        sched.step()

    step(list(layers), optimizer, scheduler)
    step(list(reference), ref_optimizer, ref_scheduler)
    removed = weakref.ref(layers[1].weight)
    assert remove_parameters_from_optimizer(optimizer, layers[1].parameters()) == 2
    del layers[1]
    gc.collect()
    assert removed() is None  # the optimizer no longer keeps it alive
    for _ in range(3):
        step(list(layers), optimizer, scheduler)
        step(list(reference), ref_optimizer, ref_scheduler)
    for ours, theirs in zip(layers.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)
    assert optimizer.state_dict()["param_groups"] == ref_optimizer.state_dict()["param_groups"]
    assert scheduler.get_last_lr() == ref_scheduler.get_last_lr()


def test_an_emptied_param_group_keeps_the_scheduler_working():
    from optimum_depth.training.optimizer_surgery import remove_parameters_from_optimizer

    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([{"params": [a]}, {"params": [b]}], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.5, total_iters=4)
    remove_parameters_from_optimizer(optimizer, [b])
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[1]["params"] == []
    for _ in range(2):
        a.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == pytest.approx([0.075, 0.075])


def test_schedules():
    from optimum_depth.training.schedule import PruningEvent, build_pruning_schedule

    def schedule(num_candidates=12, max_steps=None, **kwargs):
        config = DepthPruningConfig(criterion="magnitude", protect_first=0, protect_last=0, **kwargs)
        return [(e.step, e.num_to_remove) for e in build_pruning_schedule(config, num_candidates, max_steps)]

    assert schedule(pruning_ratio=0.25) == [(0, 3)]
    assert schedule(target_num_params=1000) == [(0, None)]
    every = dict(schedule="iterative", layers_per_step=2, prune_every_n_steps=10)
    assert schedule(num_layers_to_remove=5, **every) == [(0, 2), (10, 2), (20, 1)]
    assert schedule(pruning_ratio=0.5, **every) == [(0, 2), (10, 2), (20, 2)]
    at = dict(schedule="iterative", prune_at_steps=[0, 5, 7])
    assert schedule(num_layers_to_remove=5, **at) == [(0, 2), (5, 2), (7, 1)]
    assert schedule(num_layers_to_remove=3, layers_per_step=2, **at) == [(0, 2), (5, 1)]
    with pytest.raises(PruningTargetError, match="fewer than"):
        schedule(num_layers_to_remove=2, **at)
    with pytest.raises(PruningTargetError, match="lists only"):
        schedule(num_layers_to_remove=7, layers_per_step=2, **at)
    with pytest.raises(PruningTargetError, match="after the end of training"):
        schedule(num_layers_to_remove=5, max_steps=20, **every)
    assert PruningEvent.from_dict(PruningEvent(3, 1).to_dict()) == PruningEvent(3, 1)


def test_sublayer_granularity_is_accepted_and_checked_in_on_train_begin(tmp_path):
    # Sublayer pruning inside Trainer is covered in tests/test_callbacks_sublayer.py; here: an unsupported family is
    # refused when training starts, before anything changes.
    config = DepthPruningConfig(granularity="sublayer", criterion="finercut", num_layers_to_remove=2)
    callback = DepthPruningCallback(config, calibration=random_ids(2, 8))
    model = make_unsupported_model()
    state = TrainerState(max_steps=4)
    with pytest.raises(UnsupportedArchitectureError, match="Supported model types"):
        callback.on_train_begin(training_args(tmp_path), state, TrainerControl(), model=model, optimizer=None)
    assert type(model).__name__ == "GPT2LMHeadModel" and callback.pruning_schedule is None
