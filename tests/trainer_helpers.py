"""Shared pieces of the Trainer tests: a learnable toy task, optimizer consistency checks, training arguments."""

from __future__ import annotations

import torch
from transformers import TrainingArguments

VOCAB = 128


class CountingDataset(torch.utils.data.Dataset):
    """A learnable toy task: each sequence counts up by one from a random start (mod the usable vocabulary)."""

    def __init__(self, size: int = 64, length: int = 16, seed: int = 0):
        starts = torch.randint(0, VOCAB - 3, (size, 1), generator=torch.Generator().manual_seed(seed))
        self.ids = (starts + torch.arange(length)) % (VOCAB - 3) + 3

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def optimizer_problems(model, optimizer, step: int) -> list[str]:
    """What is wrong with ``optimizer`` for ``model``: params other than the trainable ones, or stale state."""
    problems = []
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if {id(p) for p in held} != trainable or len(held) != len(trainable):
        problems.append(f"step {step}: optimizer params differ from the trainable params")
    stale = [p for p in optimizer.state if id(p) not in trainable]
    if stale:
        problems.append(f"step {step}: {len(stale)} stale optimizer states")
    return problems


def training_args(tmp_path, **overrides) -> TrainingArguments:
    """Small CPU training arguments for the toy task (no saving, no reporting) with ``overrides``."""
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to=[],
        max_steps=12,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def resumable_args(tmp_path, name: str, max_steps: int, restore_flag: bool) -> TrainingArguments:
    """Arguments of a run that saves a checkpoint every 2 steps into ``tmp_path / name``."""
    return training_args(
        tmp_path,
        output_dir=str(tmp_path / name),
        max_steps=max_steps,
        save_strategy="steps",
        save_steps=2,
        restore_callback_states_from_checkpoint=restore_flag,
    )


def pruning_entries(log_history: list[dict]) -> list[dict]:
    """The pruning events logged into ``log_history``."""
    return [entry for entry in log_history if "pruning/event" in entry]


def losses(log_history: list[dict]) -> list[float]:
    """The training losses logged into ``log_history``."""
    return [entry["loss"] for entry in log_history if "loss" in entry]
