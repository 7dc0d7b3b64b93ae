"""Run by tests/test_callbacks_ddp.py under ``accelerate launch --multi_gpu --num_processes 2``: iterative pruning
during DDP training of a tiny model (plain or with LoRA adapters), of blocks or, with ``finercut``, of sublayers; every
rank writes its final structure and a digest of its weights, and every rank calls ``save_recovered_model`` on the DDP
wrapper (rank 0 writes the merged checkpoint)."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: tiny_models

from transformers import Trainer, TrainingArguments  # noqa: E402

from optimum_depth import DepthPruningConfig  # noqa: E402
from optimum_depth.architectures import unwrap_model  # noqa: E402
from optimum_depth.sublayers.candidates import list_sublayers  # noqa: E402
from optimum_depth.training.callback import DepthPruningCallback  # noqa: E402
from optimum_depth.training.merge import save_recovered_model  # noqa: E402
from optimum_depth.training.optimizer_surgery import optimizer_parameters  # noqa: E402

from process_group import end_process_group  # noqa: E402
from tiny_models import make_tiny_model, random_ids  # noqa: E402


class CountingDataset(torch.utils.data.Dataset):
    def __init__(self, size: int = 64, length: int = 16):
        starts = torch.randint(0, 125, (size, 1), generator=torch.Generator().manual_seed(0))
        self.ids = (starts + torch.arange(length)) % 125 + 3

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def main(out_dir: str, criterion: str, wrapping: str) -> None:
    model = make_tiny_model("llama").train()
    if wrapping == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).train()
    config = DepthPruningConfig(
        granularity="sublayer" if criterion == "finercut" else "block",
        criterion=criterion,
        num_layers_to_remove=2,
        schedule="iterative",
        layers_per_step=1,
        prune_every_n_steps=3,
        protect_first=1,
        protect_last=1,
        num_samples=4,
        seq_len=16,
    )
    args = TrainingArguments(
        os.path.join(out_dir, "trainer"),
        use_cpu=True,
        report_to=[],
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    callback = DepthPruningCallback(config, calibration=random_ids(4, 16, seed=1))
    trainer = Trainer(model, args, train_dataset=CountingDataset(), callbacks=[callback])
    trainer.train()
    merged = save_recovered_model(trainer.model_wrapped, os.path.join(out_dir, "merged"))  # every rank calls it
    model.eval()
    with torch.no_grad():
        live_logits = model(input_ids=random_ids(2, 8, seed=9)).logits
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    report = {
        "rank": args.process_index,
        "world_size": args.world_size,
        "wrapper": type(trainer.model_wrapped).__name__,
        "surviving_layers": unwrap_model(model).config.surviving_layers,
        "model_class": type(unwrap_model(model)).__name__,
        "sublayers": [s.name for s in list_sublayers(model)],
        "weights_sha256": digest.hexdigest(),
        "optimizer_params": len(optimizer_parameters(trainer.optimizer)),
        "trainable_params": sum(1 for p in model.parameters() if p.requires_grad),
        "events": [e for e in trainer.state.log_history if "pruning/event" in e],
        "merged": str(merged),
        "live_logits": live_logits.tolist(),
    }
    with open(os.path.join(out_dir, f"rank{args.process_index}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
    end_process_group()  # only after success: a failed rank must not wait at a barrier
