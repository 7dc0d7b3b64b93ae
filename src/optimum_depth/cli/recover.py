"""``optimum-depth recover``: LoRA / QLoRA / full recovery training of a pruned checkpoint, saved natively."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_output_arguments, check_output_dir, positive_int

NAME = "recover"
HELP = "Recover a pruned checkpoint with LoRA, QLoRA or full training on Alpaca JSON or raw text; save merged."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the subcommand's options."""
    parser.add_argument("checkpoint", help="A pruned checkpoint folder.")
    parser.add_argument("--data", required=True, help="Alpaca-format JSON/JSONL, or a raw text file or folder.")
    parser.add_argument(
        "--method", default="lora", choices=["lora", "qlora", "full"], help="Recovery recipe (default: lora)."
    )
    parser.add_argument("--max-steps", type=positive_int, default=None, help="Stop after this many optimizer steps.")
    parser.add_argument("--epochs", type=float, default=None, help="Epochs (default: the recipe's, 2).")
    parser.add_argument("--learning-rate", type=float, default=None, help="Learning rate (default: the recipe's).")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="Per-device batch size.")
    parser.add_argument("--block-size", type=positive_int, default=256, help="Packed sequence length (default 256).")
    parser.add_argument(
        "--max-examples", type=positive_int, default=None, help="Use at most this many training examples."
    )
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Trains, merges the adapters (if any) and writes a native checkpoint through a staging folder."""
    import dataclasses
    import tempfile

    from transformers import AutoTokenizer

    from ..constants import MODEL_CONFIG_NAME
    from ..errors import DataNotFoundError
    from ..model_zoo import load_pretrained_model
    from ..training import (
        RecoveryConfig,
        build_recovery_dataset,
        build_recovery_trainer,
        load_model_for_recovery,
        merge_and_save,
        prepare_model_for_recovery,
    )

    checkpoint = Path(args.checkpoint)
    if not (checkpoint / MODEL_CONFIG_NAME).is_file():
        raise DataNotFoundError(f"{str(checkpoint)!r} is not a checkpoint folder (no {MODEL_CONFIG_NAME}).")
    if not Path(args.data).exists():
        raise DataNotFoundError(f"--data {args.data!r} does not exist.")
    check_output_dir(args)
    overrides = {
        "max_steps": args.max_steps,
        "num_train_epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.batch_size,
    }
    config = dataclasses.replace(
        RecoveryConfig(method=args.method), **{k: v for k, v in overrides.items() if v is not None}
    )
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    dataset = build_recovery_dataset(args.data, tokenizer, block_size=args.block_size, max_examples=args.max_examples)
    # QLoRA: merge into full-precision weights, not the 4-bit ones.
    full_precision_base = load_pretrained_model(checkpoint) if args.method == "qlora" else None
    model = prepare_model_for_recovery(load_model_for_recovery(checkpoint, config), config)
    with tempfile.TemporaryDirectory() as work:
        trainer = build_recovery_trainer(model, dataset, config, output_dir=work, tokenizer=tokenizer)
        trainer.train()
    merge_and_save(model, args.output_dir, tokenizer=tokenizer, full_precision_base=full_precision_base)
    print(f"Recovered ({args.method}) checkpoint written to {args.output_dir}")
    return 0
