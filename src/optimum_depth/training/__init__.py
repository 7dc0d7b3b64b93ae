"""Training with a pruned (or pruning) model on ``transformers.Trainer``.

:mod:`.callback` (``DepthPruningCallback``: one-shot or iterative pruning during training), :mod:`.schedule` (when and
how much), :mod:`.resume` (giving a fresh model a checkpoint's pruned structure), :mod:`.distributed` (one decision
for every rank, and the checks of DDP / FSDP / DeepSpeed set-ups), :mod:`.optimizer_surgery` (dropping removed
parameters from an optimizer), and recovery: :mod:`.recovery` (LoRA / QLoRA / full recipes, LM or distillation
objectives), :mod:`.recovery_data` (Alpaca, raw text or the dense model's own text, packed), :mod:`.distillation`
(the KD ``Trainer``), :mod:`.distillation_losses` (the loss math), :mod:`.teacher_logits` (precomputed top-k teacher
logits), :mod:`.merge` (adapters merged into a native checkpoint, saved once from any wrapping: plain, peft, DDP,
FSDP2) and :mod:`.fsdp` (sharded training: detection, FSDP2 on CPU, the teacher sharded like the student, gathering).
"""

from .callback import DepthPruningCallback
from .distillation import DistillationTrainer, aligned_block_pairs
from .fsdp import CPU_FSDP_ACCELERATOR_CONFIG, enable_fsdp_on_cpu
from .merge import (
    merge_adapters,
    merge_and_save,  # noqa: F401  (deprecated alias, kept importable for one release)
    save_recovered_model,
)
from .recovery import (
    RECOVERY_METHODS,
    RecoveryConfig,
    build_recovery_trainer,
    load_model_for_recovery,
    prepare_model_for_recovery,
    recovery_training_arguments,
)
from .recovery_data import (
    ALPACA_PROMPT,
    ALPACA_PROMPT_WITH_INPUT,
    IGNORE_INDEX,
    ExampleDataset,
    PackedDataset,
    PadCollator,
    build_recovery_dataset,
    format_alpaca,
    load_instruction_records,
    pack_examples,
    self_generated_dataset,
    tokenize_instructions,
    tokenize_texts,
)
from .recovery_record import describe_recovery_data, recovery_record
from .resume import prepare_model_for_resume
from .teacher_logits import TeacherLogitsDataset, precompute_teacher_logits

__all__ = [
    "ALPACA_PROMPT",
    "CPU_FSDP_ACCELERATOR_CONFIG",
    "ALPACA_PROMPT_WITH_INPUT",
    "IGNORE_INDEX",
    "RECOVERY_METHODS",
    "DepthPruningCallback",
    "DistillationTrainer",
    "ExampleDataset",
    "PackedDataset",
    "PadCollator",
    "RecoveryConfig",
    "TeacherLogitsDataset",
    "aligned_block_pairs",
    "build_recovery_dataset",
    "build_recovery_trainer",
    "describe_recovery_data",
    "enable_fsdp_on_cpu",
    "format_alpaca",
    "load_instruction_records",
    "load_model_for_recovery",
    "merge_adapters",
    "pack_examples",
    "precompute_teacher_logits",
    "prepare_model_for_recovery",
    "prepare_model_for_resume",
    "recovery_record",
    "recovery_training_arguments",
    "save_recovered_model",
    "self_generated_dataset",
    "tokenize_instructions",
    "tokenize_texts",
]
