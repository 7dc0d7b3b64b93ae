"""Sharded training in one process: detection, the CPU FSDP set-up's no-op cases, the callback's choices under
FSDP/DeepSpeed (prune in ``on_init_end``, refuse what cannot work before anything changes), and FSDP2 on a
1-process gloo group (teacher sharding, gathering and saving). The 2-process runs are in test_fsdp_distributed.py."""

from __future__ import annotations

import copy
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
from transformers.trainer_callback import TrainerControl, TrainerState

from optimum_depth import DepthPruningConfig, remove_layers
from optimum_depth.errors import ConfigError, UnsupportedParallelismError
from optimum_depth.training import (
    DepthPruningCallback,
    DistillationTrainer,
    PackedDataset,
    RecoveryConfig,
    build_recovery_trainer,
)
from optimum_depth.training.fsdp import (
    enable_fsdp_on_cpu,
    full_state_dict_on_main_rank,
    is_fsdp_managed,
    is_sharded_model,
    original_class,
    shard_like,
    sharded_training,
)
from optimum_depth.training.merge import merge_and_save, save_recovered_model

from tiny_models import make_tiny_model, random_ids
from trainer_helpers import CountingDataset, losses, pruning_entries, training_args


def one_shot(**overrides) -> DepthPruningConfig:
    kwargs = dict(criterion="block_influence", num_layers_to_remove=2, num_samples=4, seq_len=16)
    kwargs.update(overrides)
    return DepthPruningConfig(**kwargs)


# --------------------------------------------------------------------------------------------------- detection
def test_sharded_training_is_read_from_arguments_and_launcher_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert sharded_training(training_args(tmp_path)) is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert sharded_training(None) == "fsdp"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "1")
    assert sharded_training(None) == "deepspeed"


def test_enable_fsdp_on_cpu_does_nothing_unless_an_fsdp_launch_asks(monkeypatch):
    from accelerate import PartialState

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    before = dict(PartialState._shared_state)
    assert enable_fsdp_on_cpu() is False  # no FSDP launch
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert enable_fsdp_on_cpu() is False  # one process: nothing to shard
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert enable_fsdp_on_cpu() is False  # GPUs: accelerate does it itself (NCCL)
    assert dict(PartialState._shared_state) == before


def test_a_deepspeed_zero3_parameter_counts_as_sharded():
    model = make_tiny_model("llama")
    assert not is_sharded_model(model)
    next(model.parameters()).ds_id = 0  # what deepspeed.zero.Init attaches to partitioned parameters
    assert is_sharded_model(model)


# -------------------------------------------------------------- DepthPruningCallback when the Trainer shards
@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_iterative_pruning_is_refused_when_the_trainer_is_built(tmp_path, monkeypatch, variable):
    args = training_args(tmp_path)  # before the variable: TrainingArguments would set DeepSpeed up (not installed)
    monkeypatch.setenv(variable, "true")
    model = make_tiny_model("llama")
    weights = copy.deepcopy(model.state_dict())
    iterative = one_shot(schedule="iterative", layers_per_step=1, prune_every_n_steps=2)
    callback = DepthPruningCallback(iterative, calibration=random_ids(4, 16))
    with pytest.raises(UnsupportedParallelismError, match="Prune before training") as info:
        callback.on_init_end(args, TrainerState(), TrainerControl(), model=model)
    assert "schedule='one_shot'" in str(info.value) and "use DDP" in str(info.value)
    assert len(model.model.layers) == 6 and all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_a_user_optimizer_or_an_already_sharded_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    model = make_tiny_model("llama").train()
    callback = DepthPruningCallback(one_shot(), calibration=random_ids(4, 16))
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(UnsupportedParallelismError, match="optimizers="):
        Trainer(
            model,
            training_args(tmp_path),
            train_dataset=CountingDataset(),
            callbacks=[callback],
            optimizers=(optimizer, None),
        )
    next(model.parameters()).ds_id = 0
    with pytest.raises(UnsupportedParallelismError, match="already sharded"):
        callback.on_init_end(training_args(tmp_path), TrainerState(), TrainerControl(), model=model)
    assert len(model.model.layers) == 6


def test_one_shot_pruning_happens_before_wrapping_and_equals_the_usual_run(tmp_path, monkeypatch):
    calibration = random_ids(4, 16, seed=3)

    def run(sharded: bool):
        if sharded:
            monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` exports
        else:
            monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
        model = make_tiny_model("llama").train()
        callback = DepthPruningCallback(one_shot(), calibration=calibration)
        trainer = Trainer(
            model, training_args(tmp_path, max_steps=4), train_dataset=CountingDataset(), callbacks=[callback]
        )
        depth_after_init = len(model.model.layers)
        trainer.train()
        return depth_after_init, model.config.surviving_layers, trainer.state.log_history

    depth, surviving, history = run(sharded=True)
    usual_depth, usual_surviving, usual_history = run(sharded=False)
    assert depth == 4 and usual_depth == 6  # pruned while the Trainer was built, before any wrapping
    assert surviving == usual_surviving
    assert losses(history) == pytest.approx(losses(usual_history), abs=1e-6)
    events, usual_events = pruning_entries(history), pruning_entries(usual_history)
    assert len(events) == 1 and events[0]["step"] == 0  # logged in the training run's own history
    assert events[0]["pruning/removed_layers"] == usual_events[0]["pruning/removed_layers"]


def test_a_callback_added_after_the_trainer_was_built_is_refused_under_fsdp(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    model = make_tiny_model("llama").train()
    trainer = Trainer(model, training_args(tmp_path, max_steps=2), train_dataset=CountingDataset())
    trainer.add_callback(DepthPruningCallback(one_shot(), calibration=random_ids(4, 16)))
    with pytest.raises(UnsupportedParallelismError, match="add_callback"):
        trainer.train()
    assert len(model.model.layers) == 6


def test_qlora_is_refused_under_fsdp_before_anything_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    model = make_tiny_model("llama")
    ids = random_ids(4, 8)
    with pytest.raises(UnsupportedParallelismError, match="QLoRA"):
        build_recovery_trainer(model, PackedDataset(ids, ids.clone()), RecoveryConfig(method="qlora"))
    assert not hasattr(model, "peft_config")


# ------------------------------------------------------------------------------- FSDP2 on a 1-process group
@pytest.fixture
def process_group():
    """A 1-process gloo group, so ``fully_shard`` runs in the test process (world size 1: every shard is whole)."""
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    store_path = tempfile.mktemp(prefix="optimum-depth-store-")
    dist.init_process_group("gloo", store=dist.FileStore(store_path, 1), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        if os.path.exists(store_path):
            os.remove(store_path)


def fsdp2(model):
    from torch.distributed.fsdp import fully_shard

    for layer in model.get_base_model().model.layers if hasattr(model, "peft_config") else model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def test_gathered_fsdp2_lora_model_saves_once_merged_with_its_provenance(tmp_path, process_group):
    from peft import LoraConfig, get_peft_model

    model = make_tiny_model("llama")
    remove_layers(model, [2])
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    ids = random_ids(2, 8)
    with torch.no_grad():
        expected = peft_model(ids).logits
    fsdp2(peft_model)
    assert is_fsdp_managed(peft_model) and original_class(peft_model).__name__ == "PeftModel"
    state = full_state_dict_on_main_rank(peft_model)
    assert all(not isinstance(v, torch.distributed.tensor.DTensor) and v.device.type == "cpu" for v in state.values())
    with pytest.raises(ConfigError, match="in_place=True"):
        save_recovered_model(peft_model, tmp_path / "refused", in_place=True)
    with pytest.warns(FutureWarning, match="merge_and_save is deprecated"), pytest.raises(ConfigError):
        merge_and_save(peft_model, tmp_path / "refused")  # the deprecated name: the same function, in place
    path = save_recovered_model(peft_model, tmp_path / "merged", recovery={"method": "lora"})
    visible = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))  # and the save's manifest
    assert visible == ["config.json", "generation_config.json", "model.safetensors"]
    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    assert type(reloaded).__name__ == "LlamaForCausalLM" and reloaded.config.surviving_layers == [0, 1, 3, 4, 5]
    assert reloaded.config.recovery == {"method": "lora"}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(peft_model(ids).logits, expected, rtol=1e-5, atol=1e-5)  # the live model kept


def test_the_teacher_is_sharded_on_the_students_mesh(tmp_path, process_group):
    from torch.distributed.tensor import DTensor

    teacher = make_tiny_model("llama")
    student = fsdp2(remove_layers(copy.deepcopy(teacher), [1, 3]).train())
    ids = random_ids(8, 12, seed=5)
    with torch.no_grad():
        dense = teacher(ids[:2]).logits
    config = RecoveryConfig(method="full", objective="kd", max_steps=2, warmup_steps=0, gradient_accumulation_steps=1)
    args = TrainingArguments(str(tmp_path / "run"), use_cpu=True, report_to=[], max_steps=2, save_strategy="no")
    trainer = DistillationTrainer(
        model=student, args=args, train_dataset=PackedDataset(ids, ids.clone()), teacher=teacher, recovery=config
    )
    trainer.train()  # the first loss shards the teacher
    weight = teacher.model.layers[0].self_attn.q_proj.weight
    assert isinstance(weight, DTensor) and weight.device_mesh == next(student.parameters()).device_mesh
    assert is_fsdp_managed(teacher) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        torch.testing.assert_close(teacher(ids[:2]).logits, dense)
    with pytest.raises(ValueError, match="no FSDP2-sharded"):
        shard_like(make_tiny_model("llama"), make_tiny_model("llama"))
