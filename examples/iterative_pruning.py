"""Iterative depth pruning inside a plain ``transformers.Trainer`` with ``DepthPruningCallback``.

The callback removes ``--layers-per-step`` blocks at steps 0, N, 2N, ... (N = ``--prune-every-n-steps``) until
``--num-layers-to-remove`` blocks are gone. Every event rescores the *current* model on the calibration data, so a
data-driven criterion sees what the training since the previous event did. Between events the model trains
(full fine-tuning here, on raw C4 text). The result is saved natively, with the pruning events of the run.

    python examples/iterative_pruning.py --output-dir iterative

Reduced run (5-block TinyStories model, 2 events of 1 block, 6 steps):
    python examples/iterative_pruning.py --model ../shared/models/stories260K --num-layers-to-remove 2 \
        --layers-per-step 1 --prune-every-n-steps 3 --max-steps 6 --num-samples 4 --max-examples 50 \
        --output-dir iterative

Outputs: ``<output-dir>/model`` (loads with ``AutoModelForCausalLM.from_pretrained``; ``config.surviving_layers``
gives the original indices of the kept blocks) and ``<output-dir>/pruning_events.json`` (step, removed blocks and
every candidate's score, per event).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from optimum_depth import DepthPruningCallback, DepthPruningConfig, save_pruned_model
from optimum_depth.data import default_data_dir
from optimum_depth.loading import load_model_and_tokenizer
from optimum_depth.training import build_recovery_dataset


def parse_args() -> argparse.Namespace:
    data_dir = default_data_dir()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Path, Hub id or .gguf (default: SmolLM2-135M-Instruct).")
    parser.add_argument("--data", default=data_dir and str(data_dir / "c4" / "c4_validation_2k.jsonl"))
    parser.add_argument("--calibration", default=data_dir and str(data_dir / "calib" / "c4_demo_llamafactory.jsonl"))
    parser.add_argument("--criterion", default="block_influence", help="Any block criterion (ShortGPT's default).")
    parser.add_argument("--num-layers-to-remove", type=int, default=8)
    parser.add_argument("--layers-per-step", type=int, default=2)
    parser.add_argument("--prune-every-n-steps", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=10, help="Calibration sequences per event.")
    parser.add_argument("--max-examples", type=int, default=None, help="Use only the first N training documents.")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--output-dir", required=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    model, tokenizer = load_model_and_tokenizer(args.model)
    pruning = DepthPruningConfig(
        criterion=args.criterion,
        num_layers_to_remove=args.num_layers_to_remove,
        schedule="iterative",
        layers_per_step=args.layers_per_step,
        prune_every_n_steps=args.prune_every_n_steps,
        num_samples=args.num_samples,
        protect_first=1,
        protect_last=1,
    )
    train = build_recovery_dataset(
        args.data, tokenizer, block_size=args.block_size, data_format="text", max_examples=args.max_examples
    )
    training_args = TrainingArguments(
        output_dir=os.path.join(args.output_dir, "checkpoints"),
        max_steps=args.max_steps,
        per_device_train_batch_size=4,
        learning_rate=2e-5,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
    )
    callback = DepthPruningCallback(pruning, calibration=args.calibration, tokenizer=tokenizer)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, callbacks=[callback])
    trainer.train()

    output = Path(args.output_dir)
    save_pruned_model(trainer.model, output / "model", tokenizer=tokenizer)
    events = [entry for entry in trainer.state.log_history if "pruning/event" in entry]
    (output / "pruning_events.json").write_text(json.dumps(events, indent=2))
    for event in events:
        print(f"step {event['step']}: removed original blocks {event['pruning/removed_layers']}")
    print(f"surviving blocks {model.config.surviving_layers}; saved to {output / 'model'}")


if __name__ == "__main__":
    main()
