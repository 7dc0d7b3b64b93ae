"""Recovery training after pruning: LoRA, QLoRA and full recipes on ``transformers.Trainer``, the data they train
on (Alpaca instructions or raw text, packed), and merging adapters into a native checkpoint."""

from .data import (
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
from .merge import merge_adapters, merge_and_save
from .recipes import (
    RECOVERY_METHODS,
    RecoveryConfig,
    build_recovery_trainer,
    load_model_for_recovery,
    prepare_model_for_recovery,
    recovery_training_arguments,
)

__all__ = [
    "ALPACA_PROMPT",
    "ALPACA_PROMPT_WITH_INPUT",
    "IGNORE_INDEX",
    "RECOVERY_METHODS",
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
    "recovery_training_arguments",
    "tokenize_instructions",
    "tokenize_texts",
]
