"""Run by tests/training/test_distillation_ddp.py under ``accelerate launch --multi_gpu --num_processes 2``.

Each rank compensates a pruned copy of the same tiny teacher with *its own* calibration data (rank 0's maps must win,
broadcast to every rank), then distils the teacher into it with KD + LM + hidden alignment through the Trainer under
DDP. Every rank writes digests of its student and teacher weights and its losses."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: tiny_models

from accelerate import PartialState  # noqa: E402

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, PruningPlan  # noqa: E402
from optimum_depth.calibration import CalibrationData  # noqa: E402
from optimum_depth.training import RecoveryConfig, build_recovery_trainer  # noqa: E402
from optimum_depth.training.recovery_data import PackedDataset  # noqa: E402

from process_group import end_process_group  # noqa: E402
from tiny_models import make_tiny_model, random_ids  # noqa: E402


def digest(module: torch.nn.Module) -> str:
    hasher = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        hasher.update(name.encode())
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()


def main(out_dir: str) -> None:
    state = PartialState(cpu=True)  # gloo on CPU (on GPUs: PartialState())
    rank = state.process_index
    teacher = make_tiny_model("llama").eval()
    teacher_before = digest(teacher)
    student = copy.deepcopy(teacher)
    calibration = CalibrationData(random_ids(24, 16, seed=100 + rank), {"source": f"rank {rank}"})
    plan = PruningPlan(granularity="block", removed_blocks=(2, 3), source_num_hidden_layers=6)
    settings = CompensationConfig(num_samples=24, seq_len=16, batch_size=4, ridge=0.01)  # data-dependent maps
    pruner = DepthPruner(DepthPruningConfig(num_layers_to_remove=2, compensation=settings))
    pruner.apply(student, plan, calibration=calibration)
    compensated = digest(student)
    ids = random_ids(32, 16, seed=7)
    recovery = RecoveryConfig(
        method="full", objective="kd+lm", alpha=0.5, hidden_alignment=0.5, learning_rate=1e-3, max_steps=3,
        per_device_train_batch_size=2, gradient_accumulation_steps=1, warmup_steps=0,
    )  # fmt: skip
    trainer = build_recovery_trainer(
        student, PackedDataset(ids, ids.clone()), recovery, output_dir=os.path.join(out_dir, "trainer"),
        teacher=teacher, logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    trainer.train()
    report = {
        "rank": rank,
        "world_size": state.num_processes,
        "wrapper": type(trainer.model_wrapped).__name__,
        "calibration_sha256": hashlib.sha256(calibration.input_ids.numpy().tobytes()).hexdigest(),
        "compensated_sha256": compensated,
        "maps": student.config.pruning["compensation"]["maps"],
        "student_sha256": digest(student),
        "teacher_unchanged": digest(teacher) == teacher_before,
        "teacher_requires_grad": any(p.requires_grad for p in teacher.parameters()),
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1])
    end_process_group()  # only after success: a failed rank must not wait at a barrier
