"""DepthPruningCallback with granularity="sublayer" (FinerCut) inside transformers.Trainer: one-shot and iterative
schedules, optimizer consistency, peft LoRA, resume between two events, saving and reloading, refusals."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback

from optimum_depth import DepthPruningConfig, PruningTargetError, UnsupportedArchitectureError
from optimum_depth.architectures import unwrap_model
from optimum_depth.modeling import PrunedLlamaForCausalLM
from optimum_depth.plan import PruningPlan
from optimum_depth.pruner import DepthPruner
from optimum_depth.publishing.saving import save_pruned_model
from optimum_depth.sublayers.candidates import list_sublayers
from optimum_depth.sublayers.surgery import convert_to_pruned_class
from optimum_depth.training.callback import DepthPruningCallback
from optimum_depth.training.resume import prepare_model_for_resume, read_pruning_state

from tiny_models import make_tiny_model, make_unsupported_model, random_ids
from trainer_helpers import CountingDataset, losses, optimizer_problems, pruning_entries, resumable_args, training_args

CALIBRATION = random_ids(4, 16, seed=3)


class SublayerProbe(TrainerCallback):
    """Before every optimizer step: records the sublayer count, checks the optimizer holds exactly the trainable
    parameters (and no stale state), and that the Trainer still trains the very model object it started with."""

    def __init__(self):
        self.sublayers_at_step: list[int] = []
        self.problems: list[str] = []
        self.model_id: int | None = None

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.model_id = self.model_id or id(model)
        if id(model) != self.model_id:
            self.problems.append(f"step {state.global_step}: the Trainer's model object changed")
        self.sublayers_at_step.append(len(list_sublayers(model)))
        self.problems += optimizer_problems(model, optimizer, state.global_step)


def sublayer_config(**overrides) -> DepthPruningConfig:
    kwargs = dict(
        granularity="sublayer", criterion="finercut", protect_first=1, protect_last=1, num_samples=4, seq_len=16
    )
    kwargs.update(overrides)
    return DepthPruningConfig(**kwargs)


def present(model) -> set[tuple[int, str]]:
    return {(s.original_block, s.kind) for s in list_sublayers(model)}


def test_one_shot_prunes_sublayers_before_first_step_and_keeps_training(tmp_path):
    model = make_tiny_model("llama").train()
    original = {name: weakref.ref(param) for name, param in model.named_parameters()}
    probe = SublayerProbe()
    callback = DepthPruningCallback(sublayer_config(num_layers_to_remove=3), calibration=CALIBRATION)
    trainer = Trainer(model, training_args(tmp_path, max_steps=30), train_dataset=CountingDataset())
    trainer.add_callback(callback)
    trainer.add_callback(probe)
    trainer.train()

    assert probe.sublayers_at_step == [9] * 30  # pruned before the first optimizer step
    assert probe.problems == []
    assert trainer.model is model and isinstance(model, PrunedLlamaForCausalLM)
    (event,) = pruning_entries(trainer.state.log_history)
    assert event["step"] == 0 and event["pruning/num_removed"] == 3 and event["pruning/num_sublayers"] == 9
    removed = {(b, "attention") for b in event["pruning/removed_attention"]}
    removed |= {(b, "mlp") for b in event["pruning/removed_mlp"]}
    removed |= {(b, kind) for b in event["pruning/removed_layers"] for kind in ("attention", "mlp")}
    assert removed == present(make_tiny_model("llama")) - present(model) and len(removed) == 3
    assert all(block not in (0, 5) for block, _ in removed)  # protect_first / protect_last
    assert len([k for k in event if k.startswith("pruning/score/")]) == 12  # one per sublayer, e.g. score/mlp_3
    assert model.config.pruning["granularity"] == "sublayer"

    history = losses(trainer.state.log_history)
    assert sum(history[-5:]) / 5 < 0.8 * sum(history[:5]) / 5
    rates = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    assert rates == pytest.approx([3e-3 * (1 - t / 30) for t in range(30)])  # the schedule of an unpruned run

    # Surviving parameters are the very tensors the run started with; removed ones are freed.
    del trainer, callback, probe
    gc.collect()
    survivors = dict(model.named_parameters())
    for name, ref in original.items():
        if name in survivors:
            assert ref() is survivors[name], name
        else:
            assert ref() is None, name
    assert len(survivors) < len(original)


def test_one_shot_parameter_budget(tmp_path):
    model = make_tiny_model("llama").train()
    total = sum(p.numel() for p in model.parameters())
    block = model.model.layers[2]
    largest = sum(p.numel() for m in (block.mlp, block.post_attention_layernorm) for p in m.parameters())
    budget = total - largest - 1  # removing one sublayer (the largest: an MLP and its norm) is not enough
    trainer = Trainer(
        model,
        training_args(tmp_path, max_steps=2),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(sublayer_config(target_num_params=budget), calibration=CALIBRATION)],
    )
    trainer.train()
    assert sum(p.numel() for p in model.parameters()) <= budget
    (event,) = pruning_entries(trainer.state.log_history)
    assert event["pruning/num_removed"] >= 2


def test_iterative_sublayer_schedule_reaches_target_with_rescoring(tmp_path):
    model = make_tiny_model("qwen3").train()
    probe = SublayerProbe()
    config = sublayer_config(num_layers_to_remove=5, schedule="iterative", layers_per_step=2, prune_every_n_steps=4)
    trainer = Trainer(
        model,
        training_args(tmp_path),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(config, calibration=CALIBRATION), probe],
    )
    trainer.train()

    assert probe.problems == []
    assert probe.sublayers_at_step == [10] * 4 + [8] * 4 + [7] * 4
    events = pruning_entries(trainer.state.log_history)
    assert [e["step"] for e in events] == [0, 4, 8]
    assert [e["pruning/num_removed"] for e in events] == [2, 2, 1]
    assert [e["pruning/num_sublayers"] for e in events] == [10, 8, 7]
    # Each event rescored only the sublayers still present.
    assert [len([k for k in e if k.startswith("pruning/score/")]) for e in events] == [12, 10, 8]
    assert len(list_sublayers(model)) == 7
    assert len(trainer.optimizer.state) == sum(1 for p in model.parameters() if p.requires_grad)
    history = losses(trainer.state.log_history)
    assert sum(history[-3:]) < sum(history[:3])  # training goes on between and after the events
    with torch.no_grad():
        assert torch.isfinite(model.eval()(random_ids(1, 8)).logits).all()


def test_peft_lora_model_is_sublayer_pruned_in_place(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = make_tiny_model("llama")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    model = get_peft_model(base, lora).train()
    lora_before = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
    probe = SublayerProbe()
    config = sublayer_config(num_layers_to_remove=4, schedule="iterative", layers_per_step=2, prune_every_n_steps=3)
    callback = DepthPruningCallback(config, calibration=CALIBRATION)
    trainer = Trainer(
        model, training_args(tmp_path, max_steps=6), train_dataset=CountingDataset(), callbacks=[callback, probe]
    )
    trainer.train()

    assert probe.problems == []  # the optimizer only ever held the LoRA weights of present sublayers
    assert model.get_base_model() is base and isinstance(base, PrunedLlamaForCausalLM)
    assert len(list_sublayers(model)) == 8
    # Each removed attention takes q and v adapters (4 tensors), each removed MLP its down adapter (2 tensors).
    gone = present(make_tiny_model("llama")) - present(model)
    expected_lora = lora_before - sum(4 if kind == "attention" else 2 for _, kind in gone)
    held = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(held) == expected_lora == sum(1 for n, _ in model.named_parameters() if "lora_" in n)

    # The adapter saved after pruning applies to a base pruned the same way and gives the same outputs.
    model.save_pretrained(tmp_path / "adapter")
    fresh = make_tiny_model("llama")
    for entry in callback.event_log:
        fresh = DepthPruner(config).apply(fresh, PruningPlan.from_dict(entry["plan"]))
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    ids = random_ids(2, 12)
    with torch.no_grad():
        expected = model.eval()(ids).logits
        torch.testing.assert_close(reloaded(ids).logits, expected)

    # Merged and saved, it reloads as a pruned checkpoint with the adapted outputs.
    path = save_pruned_model(model.merge_and_unload(), tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    assert isinstance(merged, PrunedLlamaForCausalLM)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, expected, rtol=1e-4, atol=1e-4)


def run_resumable(tmp_path, name: str, max_steps: int, resume: str | None = None, restore_flag: bool = False):
    model = make_tiny_model("llama").train()
    if resume is not None:
        assert prepare_model_for_resume(model, resume) is model
    config = sublayer_config(num_layers_to_remove=4, schedule="iterative", layers_per_step=2, prune_at_steps=[0, 4])
    args = resumable_args(tmp_path, name, max_steps, restore_flag)
    callback = DepthPruningCallback(config, calibration=CALIBRATION)
    trainer = Trainer(model, args, train_dataset=CountingDataset(), callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


@pytest.mark.parametrize("restore_flag", [False, True])
def test_resume_between_two_sublayer_events_matches_uninterrupted_run(tmp_path, restore_flag):
    reference, _ = run_resumable(tmp_path, "full", max_steps=8)
    checkpoint = tmp_path / "full" / "checkpoint-2"
    state = read_pruning_state(checkpoint)["attributes"]
    assert state["events_done"] == 1 and state["event_log"][0]["plan"]["granularity"] == "sublayer"

    resumed, trainer = run_resumable(
        tmp_path, "resumed", max_steps=8, resume=str(checkpoint), restore_flag=restore_flag
    )
    assert type(resumed) is type(reference)
    for key in ("surviving_layers", "skipped_attention", "skipped_mlp", "layer_types"):
        assert getattr(resumed.config, key) == getattr(reference.config, key), key
    expected, got = reference.state_dict(), resumed.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
    assert [e["step"] for e in pruning_entries(trainer.state.log_history)] == [0, 4]
    assert resumed.config.pruning == reference.config.pruning


def test_final_model_saves_and_reloads_with_identical_logits(tmp_path):
    model = make_tiny_model("llama").train()
    config = sublayer_config(num_layers_to_remove=3)
    trainer = Trainer(
        model,
        training_args(tmp_path, max_steps=3),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(config, calibration=CALIBRATION)],
    )
    trainer.train()
    path = save_pruned_model(model, tmp_path / "pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    assert type(reloaded) is type(model)
    assert reloaded.config.skipped_attention == model.config.skipped_attention
    assert reloaded.config.skipped_mlp == model.config.skipped_mlp
    ids = random_ids(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("family", "config", "error", "message"),
    [
        ("gpt2", sublayer_config(num_layers_to_remove=2), UnsupportedArchitectureError, "Supported model types"),
        ("llama", sublayer_config(num_layers_to_remove=9), PruningTargetError, "may go"),
        (
            "llama",
            sublayer_config(num_layers_to_remove=4, schedule="iterative", layers_per_step=2, prune_at_steps=[0, 9]),
            PruningTargetError,
            "after the end of training",
        ),
    ],
)
def test_bad_sublayer_requests_fail_in_on_train_begin_before_anything_changes(
    tmp_path, family, config, error, message
):
    model = (make_unsupported_model() if family == "gpt2" else make_tiny_model(family)).train()
    before, model_class = _state(model), type(model)
    trainer = Trainer(
        model,
        training_args(tmp_path, max_steps=4),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(config, calibration=CALIBRATION)],
    )
    with pytest.raises(error, match=message):
        trainer.train()
    assert type(model) is model_class and model.config.model_type == family
    assert trainer.state.global_step == 0
    got = model.state_dict()
    assert got.keys() == before.keys() and all(torch.equal(before[k], got[k]) for k in before)


def test_a_model_that_cannot_be_converted_in_place_fails_in_on_train_begin(tmp_path):
    model = make_tiny_model("llama").train()
    model.model.layers[3].extra = torch.nn.Linear(4, 4)  # weights the pruned block class has no place for
    config = sublayer_config(num_layers_to_remove=2, schedule="iterative", layers_per_step=1, prune_at_steps=[2, 3])
    trainer = Trainer(
        model,
        training_args(tmp_path, max_steps=4),
        train_dataset=CountingDataset(),
        callbacks=[DepthPruningCallback(config, calibration=CALIBRATION)],
    )
    with pytest.raises(RuntimeError, match="in place"):
        trainer.train()
    assert trainer.state.global_step == 0 and type(model).__name__ == "LlamaForCausalLM"


def test_peft_wrapped_conversion_keeps_the_wrapper_working():
    from peft import LoraConfig, get_peft_model

    base = make_tiny_model("qwen2")
    wrapped = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    ids = random_ids(1, 8)
    with torch.no_grad():
        expected = wrapped(ids).logits
    assert convert_to_pruned_class(wrapped) is wrapped
    assert unwrap_model(wrapped) is base and base.config.model_type == "pruned_qwen2"
    with torch.no_grad():
        torch.testing.assert_close(wrapped(ids).logits, expected, rtol=0, atol=1e-6)
