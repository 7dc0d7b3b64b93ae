"""Recovery scenarios run by tests/training/test_fsdp.py: 2 processes under ``accelerate launch --config_file
examples/accelerate/fsdp2.yaml`` (FSDP2, gloo on CPU), and the same functions in one process as the reference.

Every scenario trains a tiny Llama for a few steps with the library's recipes (``recovery_training_arguments``,
``build_recovery_trainer``) on the same global batch (``GLOBAL_BATCH`` rows per step, split over the processes),
saves the result with ``save_recovered_model`` and writes a report (losses, structure, how the model and teacher
were sharded) per rank:

* ``lora_prune``: LoRA + one-shot ``DepthPruningCallback`` (block influence) with *rank-dependent* calibration data;
* ``full_kd``: full training of a pre-pruned student, ``objective="kd+lm"`` with hidden alignment, the dense teacher
  sharded on the student's mesh by ``DistillationTrainer``;
* ``lora_topk``: LoRA, ``objective="kd"`` from precomputed top-k teacher logits (``TeacherLogitsDataset``);
* ``sublayer_full``: full training + one-shot FinerCut sublayer pruning by the callback;
* ``fail_rank0``: the callback's calibration is broken on rank 0 only (token ids beyond the vocabulary).

Usage: ``fsdp_recovery_script.py OUT_DIR LOGITS_DIR SCENARIO [SCENARIO ...]``, or :func:`launch` from a test or
benchmark.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: tiny_models

from transformers import TrainerCallback  # noqa: E402

from optimum_depth import DepthPruningConfig, remove_layers  # noqa: E402
from optimum_depth.training import (  # noqa: E402
    DepthPruningCallback,
    PackedDataset,
    RecoveryConfig,
    TeacherLogitsDataset,
    build_recovery_trainer,
    recovery_training_arguments,
)
from optimum_depth.training.distributed import rank, world_size  # noqa: E402
from optimum_depth.training.fsdp import enable_fsdp_on_cpu, is_fsdp_managed  # noqa: E402
from optimum_depth.training.merge import save_recovered_model  # noqa: E402

from process_group import end_process_group  # noqa: E402
from tiny_models import make_tiny_model, random_ids  # noqa: E402

FSDP_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "accelerate" / "fsdp2.yaml"
GLOBAL_BATCH = 4
STEPS = 4
SCENARIOS = ("lora_prune", "full_kd", "lora_topk", "sublayer_full", "fail_rank0")


def free_port() -> int:
    """A free local TCP port for the rendezvous of the launched processes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(out: Path, logits: Path, *names: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``accelerate launch`` of this script on 2 processes with the FSDP2 config (gloo on CPU), scenarios ``names``."""
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--config_file", str(FSDP_CONFIG), "--num_processes", "2",
        "--main_process_port", str(free_port()), str(Path(__file__).resolve()), str(out), str(logits), *names,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def calibration_for(rank_index: int) -> torch.Tensor:
    """Each rank's own calibration batch (they differ: only rank 0's may decide)."""
    return random_ids(4, 16, seed=100 + rank_index)


def training_data() -> PackedDataset:
    """Fixed-length rows (no padding): 32 rows of 16 tokens, so every global batch has the same token count."""
    ids = random_ids(32, 16, seed=7)
    return PackedDataset(ids, ids.clone())


class LossRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def _describe_sharding(model) -> dict[str, Any]:
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    return {
        "class": type(model).__name__,
        "fsdp_managed": is_fsdp_managed(model),
        "dtensor_params": sum(isinstance(p, DTensor) for p in params),
        "params": len(params),
        "local_numel": sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params),
        "global_numel": sum(p.numel() for p in params),
        "training": model.training,
        "requires_grad": any(p.requires_grad for p in params),
    }


def _args(out: Path, recovery: RecoveryConfig, **overrides):
    return recovery_training_arguments(
        out / "trainer",
        recovery,
        max_steps=STEPS,
        per_device_train_batch_size=GLOBAL_BATCH // world_size(),
        gradient_accumulation_steps=1,
        warmup_steps=0,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        data_seed=42,
        dataloader_drop_last=True,
        ddp_timeout=60,
        **overrides,
    )


def run_scenario(name: str, out: Path, logits_dir: Path | None = None) -> dict[str, Any]:
    """Trains, saves with ``save_recovered_model`` into ``out / "merged"``; returns this rank's report."""
    recorder = LossRecorder()
    callbacks: list = [recorder]
    teacher = None
    data: Any = training_data()
    pruning = None
    if name in ("lora_prune", "fail_rank0"):
        recovery = RecoveryConfig(method="lora", lora_r=4, lora_dropout=0.0, learning_rate=1e-2)
        model = make_tiny_model("llama").train()
        calibration = calibration_for(rank())
        if name == "fail_rank0" and rank() == 0:
            calibration = calibration + 1000  # beyond the vocabulary: rank 0's scoring raises a DataError
        pruning = DepthPruningConfig(
            criterion="block_influence",
            num_layers_to_remove=2,
            protect_first=0,
            protect_last=0,
            num_samples=4,
            seq_len=16,
        )
        callbacks.append(DepthPruningCallback(pruning, calibration=calibration))
    elif name == "sublayer_full":
        recovery = RecoveryConfig(method="full", learning_rate=1e-3)
        model = make_tiny_model("llama").train()
        pruning = DepthPruningConfig(
            granularity="sublayer", criterion="finercut", num_layers_to_remove=3, num_samples=4, seq_len=16
        )
        callbacks.append(DepthPruningCallback(pruning, calibration=calibration_for(0)))
    elif name == "full_kd":
        recovery = RecoveryConfig(
            method="full", objective="kd+lm", temperature=2.0, alpha=0.5, hidden_alignment=0.1, learning_rate=1e-3
        )
        teacher = make_tiny_model("llama")
        model = remove_layers(copy.deepcopy(teacher), [1, 3]).train()
    elif name == "lora_topk":
        recovery = RecoveryConfig(method="lora", lora_r=4, lora_dropout=0.0, objective="kd", learning_rate=1e-2)
        model = remove_layers(make_tiny_model("llama"), [1, 3]).train()
        data = TeacherLogitsDataset(logits_dir)
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    args = _args(out, recovery)
    trainer = build_recovery_trainer(model, data, recovery, training_args=args, callbacks=callbacks, teacher=teacher)
    trainer.train()
    merged = save_recovered_model(trainer.model, out / "merged", recovery={**recovery.to_dict(), "steps": STEPS})
    report: dict[str, Any] = {
        "scenario": name,
        "rank": rank(),
        "world_size": world_size(),
        "losses": recorder.losses,
        "merged": str(merged),
        "student": _describe_sharding(trainer.model),
        "teacher": _describe_sharding(trainer.teacher) if getattr(trainer, "teacher", None) is not None else None,
        "pruning_events": [e for e in trainer.state.log_history if "pruning/event" in e],
        "distributed_type": str(trainer.accelerator.distributed_type),
    }
    return report


def _forget_wrapped_class_names() -> None:
    """Test-only: accelerate records the block class it wrapped in the shared FSDP plugin; the next scenario of this
    process may have another one (``PrunedDecoderLayer``). A real run trains one model per process."""
    from accelerate.state import AcceleratorState

    plugin = AcceleratorState._shared_state.get("fsdp_plugin")
    if plugin is not None:
        plugin.transformer_cls_names_to_wrap = None


def main(out_dir: str, logits_dir: str, scenarios: list[str]) -> None:
    enable_fsdp_on_cpu(timeout=60)  # also done by recovery_training_arguments; explicit for the reader
    for name in scenarios:
        _forget_wrapped_class_names()
        try:
            report = run_scenario(name, Path(out_dir) / name, Path(logits_dir))
        except Exception as err:
            print(
                f"RANK {rank()} FAILED at {time.time():.3f}: {type(err).__name__}: {err}", file=sys.stderr, flush=True
            )
            raise
        with open(Path(out_dir) / f"{name}.rank{rank()}.json", "w", encoding="utf-8") as handle:
            json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    end_process_group()  # only after success: a failed rank must not wait at a barrier
