"""Prune a causal LM, recover it with LoRA inside ``Trainer`` and save a native, merged checkpoint.

LoRA / full: the model is wrapped for training, then ``DepthPruningCallback`` prunes it inside ``Trainer`` (one-shot
before the first optimizer step by default, or ``--schedule iterative``) and training recovers it. QLoRA: the model is
pruned in full precision first (criteria read weights or gradients), saved, reloaded in 4 bits, then trained. Either
way the LoRA adapters are merged and a plain ``from_pretrained``-loadable checkpoint is written to
``<output-dir>/merged`` (``config.recovery`` records the recipe, the steps and the number of processes).

Default model (SmolLM2-135M-Instruct), Mag+ (first 4 / last 2 blocks protected), 25% of the blocks, Alpaca data:
    python examples/recover_lora.py --output-dir rec

Reduced run (5-block TinyStories model, 4 optimizer steps of 2 x 64 tokens):
    python examples/recover_lora.py --model ../shared/models/stories260K --protect-first 1 --protect-last 1 \
        --max-steps 4 --batch-size 2 --grad-accum 1 --block-size 64 --max-examples 40 --output-dir rec

Several processes with accelerate (gloo on CPU, NCCL on GPUs), same options; the configs are in examples/accelerate:
    accelerate launch --config_file examples/accelerate/ddp.yaml examples/recover_lora.py --output-dir rec ...
    accelerate launch --config_file examples/accelerate/fsdp2.yaml examples/recover_lora.py --output-dir rec ...
    # DDP: one-shot or iterative pruning. FSDP2: one-shot only; the callback prunes while the Trainer is built, before
    # the model is sharded (on CPU, recovery_training_arguments sets accelerate's FSDP up itself). QLoRA: one process
    # or DDP. examples/accelerate/deepspeed_zero3.yaml is provided but untested (see docs/distributed.md).

Resume an interrupted run (same arguments plus ``--save-steps N`` in the first run):
    --resume-from-checkpoint rec/checkpoints/checkpoint-10

Iterative pruning in a plain ``Trainer`` without the recipes: examples/iterative_pruning.py.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch

from optimum_depth import DepthPruner, DepthPruningConfig, save_pruned_model
from optimum_depth.data import default_data_dir
from optimum_depth.loading import load_model_and_tokenizer
from optimum_depth.training import (
    RecoveryConfig,
    build_recovery_dataset,
    build_recovery_trainer,
    load_model_for_recovery,
    prepare_model_for_recovery,
    recovery_record,
    save_recovered_model,
)
from optimum_depth.training.callback import DepthPruningCallback
from optimum_depth.training.fsdp import sharded_training
from optimum_depth.training.resume import prepare_model_for_resume

logger = logging.getLogger("recover_lora")


def parse_args() -> argparse.Namespace:
    data_dir = default_data_dir()
    default_data = str(data_dir / "alpaca" / "alpaca_small_antelofski.json") if data_dir else None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Path, Hub id or .gguf (default: SmolLM2-135M-Instruct).")
    parser.add_argument("--data", default=default_data, help="Alpaca JSON/JSONL, or raw text file/directory.")
    parser.add_argument("--calibration", default=None, help="Calibration source (default: the training data).")
    parser.add_argument("--criterion", default="magnitude")
    parser.add_argument("--pruning-ratio", type=float, default=0.25)
    parser.add_argument("--protect-first", type=int, default=None)
    parser.add_argument("--protect-last", type=int, default=None)
    parser.add_argument("--schedule", choices=["one_shot", "iterative"], default="one_shot")
    parser.add_argument("--layers-per-step", type=int, default=None)
    parser.add_argument("--prune-every-n-steps", type=int, default=None)
    parser.add_argument("--method", choices=["lora", "qlora", "full"], default="lora")
    parser.add_argument("--max-steps", type=int, default=-1, help="Optimizer steps (default: 2 epochs).")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=4, help="Per-device micro-batch.")
    parser.add_argument("--grad-accum", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--save-steps", type=int, default=0, help="Checkpoint every N steps (0: at the end only).")
    parser.add_argument("--resume-from-checkpoint", default=None)
    parser.add_argument("--output-dir", required=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, tokenizer = load_model_and_tokenizer(args.model)
    pruning = DepthPruningConfig(
        criterion=args.criterion,
        pruning_ratio=args.pruning_ratio,
        schedule=args.schedule,
        layers_per_step=args.layers_per_step,
        prune_every_n_steps=args.prune_every_n_steps,
        protect_first=args.protect_first,
        protect_last=args.protect_last,
    )
    recovery = RecoveryConfig(
        method=args.method,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
    )
    data = build_recovery_dataset(args.data, tokenizer, block_size=args.block_size, max_examples=args.max_examples)
    calibration = args.calibration or args.data
    save = {"save_strategy": "steps", "save_steps": args.save_steps} if args.save_steps else {"save_strategy": "no"}
    output = os.path.join(args.output_dir, "checkpoints")

    full_precision_base = None
    sharded = sharded_training() is not None  # accelerate launch with an FSDP (or DeepSpeed) config
    callbacks = []
    if args.method == "qlora":
        if args.schedule != "one_shot":
            raise ValueError("QLoRA prunes once, in full precision, before quantizing: use --schedule one_shot.")
        if sharded:
            raise ValueError("QLoRA (bitsandbytes 4-bit) is not supported under FSDP here: use one process or DDP.")
        pruned_dir = os.path.join(args.output_dir, "pruned")
        DepthPruner(pruning).prune(model, calibration=calibration, tokenizer=tokenizer)
        save_pruned_model(model, pruned_dir, tokenizer=tokenizer)
        full_precision_base = model
        model = prepare_model_for_recovery(load_model_for_recovery(pruned_dir, recovery), recovery)
    else:
        model = prepare_model_for_recovery(model, recovery)
        if args.resume_from_checkpoint:
            prepare_model_for_resume(model, args.resume_from_checkpoint)
        # Given to the constructor, so that under FSDP it prunes while the Trainer is built, before sharding. A
        # resumed sharded run already has the pruned structure (prepare_model_for_resume): no callback then.
        if not (sharded and args.resume_from_checkpoint):
            callbacks.append(DepthPruningCallback(pruning, calibration=calibration, tokenizer=tokenizer))
    trainer = build_recovery_trainer(
        model, data, recovery, output_dir=output, tokenizer=tokenizer, callbacks=callbacks, **save
    )
    for callback in callbacks:
        callback.trainer = trainer  # pruning events also reach the report_to integrations
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)

    # Every rank calls it: gathers sharded weights on rank 0, merges LoRA, writes once.
    merged = save_recovered_model(
        trainer.model,
        os.path.join(args.output_dir, "merged"),
        tokenizer=tokenizer,
        full_precision_base=full_precision_base,
        recovery=recovery_record(recovery, trainer, args.data),  # method, objective, data by name, steps, tokens
    )
    logger.info("Merged checkpoint: %s (loads with AutoModelForCausalLM.from_pretrained)", merged)
    # Under accelerate launch: every rank waits, then the process group is destroyed, so that no rank aborts at exit.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()
