"""Training with a pruned (or pruning) model on ``transformers.Trainer``.

:mod:`.callback` (``DepthPruningCallback``: one-shot or iterative pruning during training), :mod:`.schedule` (when and
how much), :mod:`.resume` (giving a fresh model a checkpoint's pruned structure), :mod:`.distributed` (one decision
for every rank, and the checks of DDP / FSDP / DeepSpeed set-ups), :mod:`.optimizer_surgery` (dropping removed
parameters from an optimizer), and recovery: :mod:`.recovery` (LoRA / QLoRA / full recipes), :mod:`.recovery_data`
(Alpaca or raw text, packed) and :mod:`.merge` (adapters merged into a native checkpoint).
"""

from .callback import DepthPruningCallback
from .merge import merge_adapters, merge_and_save
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
    tokenize_instructions,
    tokenize_texts,
)
from .resume import prepare_model_for_resume

__all__ = [
    "ALPACA_PROMPT",
    "ALPACA_PROMPT_WITH_INPUT",
    "IGNORE_INDEX",
    "RECOVERY_METHODS",
    "DepthPruningCallback",
    "ExampleDataset",
    "PackedDataset",
    "PadCollator",
    "RecoveryConfig",
    "build_recovery_dataset",
    "build_recovery_trainer",
    "format_alpaca",
    "load_instruction_records",
    "load_model_for_recovery",
    "merge_adapters",
    "merge_and_save",
    "pack_examples",
    "prepare_model_for_recovery",
    "prepare_model_for_resume",
    "recovery_training_arguments",
    "tokenize_instructions",
    "tokenize_texts",
]
