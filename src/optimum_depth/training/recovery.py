"""Ready recovery recipes on top of ``transformers.Trainer``: LoRA, QLoRA (4-bit base + LoRA) and full training.

Defaults follow Shortened LLaMA's LoRA retraining (``src/lora_retrain.py`` and the ``prune_*.sh`` scripts of
Nota-NetsPresso/shortened-llm, itself after alpaca-lora): r=8, alpha=16, dropout 0.05 on every attention and MLP
projection, learning rate 1e-4, 2 epochs, batch 64 (4 x 16 accumulation), 100 warm-up steps, 256-token sequences.
Full continued training uses 2e-5 by default (our choice; the paper's main recipe is LoRA).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import Trainer, TrainingArguments, default_data_collator

from ..constants import RECOVERY_CONFIG_NAME
from ..errors import ConfigError, UnsupportedParallelismError
from ..field_checks import check_positive_int, is_finite_number
from ..loading.zoo import load_pretrained_model
from ..persistence import JsonRecord
from .fsdp import CPU_FSDP_ACCELERATOR_CONFIG, enable_fsdp_on_cpu, sharded_training
from .recovery_data import ExampleDataset, PadCollator

logger = logging.getLogger(__name__)

__all__ = [
    "RECOVERY_METHODS",
    "RecoveryConfig",
    "load_model_for_recovery",
    "prepare_model_for_recovery",
    "recovery_training_arguments",
    "build_recovery_trainer",
]

RECOVERY_METHODS = ("lora", "qlora", "full")
OBJECTIVES = ("lm", "kd", "kd+lm")
ALIGNMENT_KINDS = ("nmse", "mse", "cosine")
ALIGNMENT_BLOCKS = ("all", "after_cuts")


@dataclass
class RecoveryConfig(JsonRecord):
    """Hyper-parameters of a recovery run.

    Args:
        method: ``"lora"``, ``"qlora"`` (bitsandbytes 4-bit base + LoRA) or ``"full"``.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA input.
        target_modules: Modules that get adapters; ``None`` means every linear layer except the output head
            (peft's ``"all-linear"``: q/k/v/o/gate/up/down for Llama, as Shortened LLaMA).
        learning_rate: Peak learning rate; ``None``: 1e-4 for (Q)LoRA, 2e-5 for full training.
        num_train_epochs: Epochs over the recovery data.
        max_steps: If > 0, stop after this many optimizer steps (overrides epochs).
        per_device_train_batch_size: Sequences per device per micro-batch.
        gradient_accumulation_steps: Micro-batches per optimizer step.
        warmup_steps: Linear warm-up steps.
        weight_decay: AdamW weight decay.
        lr_scheduler_type: Scheduler name understood by ``TrainingArguments``.
        gradient_checkpointing: Recompute activations in backward (saves memory on big models); non-reentrant, so
            it also works with DDP's ``find_unused_parameters=True``.
        bnb_4bit_quant_type: QLoRA: ``"nf4"`` or ``"fp4"``.
        bnb_4bit_use_double_quant: QLoRA: quantize the quantization constants too.
        seed: Training seed.
        objective: ``"lm"`` (the causal-LM loss on the data), ``"kd"`` (distil the dense teacher's next-token
            distributions, KL(teacher || student)) or ``"kd+lm"`` (both, mixed by ``alpha``). The KD objectives train
            with :class:`~optimum_depth.training.distillation.DistillationTrainer` and need the teacher (or
            precomputed teacher logits in the data).
        temperature: KD softmax temperature (the loss is scaled by its square, Hinton et al.).
        alpha: ``"kd+lm"``: weight of the LM loss (``1 - alpha`` weighs KD).
        hidden_alignment: Weight of the hidden-state alignment between each kept block's output and the output of the
            same original block in the teacher (0: off; needs the teacher model).
        hidden_alignment_kind: ``"nmse"`` (squared error relative to the teacher state's norm), ``"mse"`` or
            ``"cosine"``.
        hidden_alignment_blocks: ``"all"`` kept blocks, or ``"after_cuts"`` (the first kept block after each cut).
    """

    method: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | str | None = None
    learning_rate: float | None = None
    num_train_epochs: float = 2.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 16
    warmup_steps: int = 100
    weight_decay: float = 0.0
    lr_scheduler_type: str = "linear"
    gradient_checkpointing: bool = False
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    seed: int = 42
    objective: str = "lm"
    temperature: float = 1.0
    alpha: float = 0.5
    hidden_alignment: float = 0.0
    hidden_alignment_kind: str = "nmse"
    hidden_alignment_blocks: str = "all"

    file_name: ClassVar[str] = RECOVERY_CONFIG_NAME

    def __post_init__(self) -> None:
        if self.method not in RECOVERY_METHODS:
            raise ConfigError(f"`method` must be one of {RECOVERY_METHODS}, got {self.method!r}.")
        for name in ("lora_r", "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps"):
            check_positive_int(name, getattr(self, name))
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout!r}.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"`learning_rate` must be positive, got {self.learning_rate!r}.")
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"`bnb_4bit_quant_type` must be 'nf4' or 'fp4', got {self.bnb_4bit_quant_type!r}.")
        self._validate_distillation()

    def _validate_distillation(self) -> None:
        choices = {
            "objective": OBJECTIVES,
            "hidden_alignment_kind": ALIGNMENT_KINDS,
            "hidden_alignment_blocks": ALIGNMENT_BLOCKS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if not (is_finite_number(self.temperature) and self.temperature > 0):
            raise ConfigError(f"`temperature` must be a positive number, got {self.temperature!r}.")
        if not (is_finite_number(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise ConfigError(f"`alpha` must be in [0, 1], got {self.alpha!r}.")
        if not (is_finite_number(self.hidden_alignment) and self.hidden_alignment >= 0):
            raise ConfigError(f"`hidden_alignment` must be a number >= 0, got {self.hidden_alignment!r}.")
        if self.objective == "lm" and self.hidden_alignment > 0:
            raise ConfigError("`hidden_alignment` needs the teacher: use objective 'kd' or 'kd+lm'.")

    @property
    def distills(self) -> bool:
        """Whether the objective uses the dense teacher."""
        return self.objective != "lm"

    @property
    def resolved_alpha(self) -> float:
        """Weight of the LM loss: 1 for ``"lm"``, 0 for ``"kd"``, ``alpha`` for ``"kd+lm"``."""
        return {"lm": 1.0, "kd": 0.0}.get(self.objective, self.alpha)

    @property
    def resolved_learning_rate(self) -> float:
        """The learning rate, or the method's default."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-5 if self.method == "full" else 1e-4

    def _fields_to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["learning_rate"] = self.resolved_learning_rate  # what the run used
        return data


def _compute_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def load_model_for_recovery(path: str | os.PathLike, config: RecoveryConfig, **kwargs) -> nn.Module:
    """Loads a (pruned) checkpoint the way the recipe needs it: full precision, or 4-bit for QLoRA.

    Args:
        path: Directory of a saved (pruned) model.
        config: The recovery config.
        **kwargs: Passed to ``AutoModelForCausalLM.from_pretrained``.

    Returns:
        The model.

    Raises:
        ImportError: For QLoRA without bitsandbytes.
    """
    if config.method != "qlora":
        kwargs.setdefault("dtype", torch.float32)
        return load_pretrained_model(path, **kwargs)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ImportError("QLoRA needs bitsandbytes: pip install 'optimum-depth[quant]'.") from err
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=config.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=_compute_dtype(),
    )
    kwargs.setdefault("device_map", "cuda:0" if torch.cuda.is_available() else "cpu")
    return load_pretrained_model(path, quantization_config=quantization, **kwargs)


def _is_4bit(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False)) or any(
        type(m).__name__ == "Linear4bit" for m in model.modules()
    )


def prepare_model_for_recovery(model: nn.Module, config: RecoveryConfig) -> nn.Module:
    """Adds LoRA adapters (``lora``/``qlora``) or makes every weight trainable (``full``).

    Args:
        model: A transformers causal LM; for QLoRA, loaded in 4 bits (:func:`load_model_for_recovery`).
        config: The recovery config.

    Returns:
        The model to train (a ``PeftModel`` for LoRA and QLoRA).

    Raises:
        ValueError: If the model is already a peft model, or QLoRA is asked on a model that is not 4-bit.
    """
    if hasattr(model, "peft_config"):
        raise ConfigError("The model already has peft adapters; pass the plain model to prepare_model_for_recovery.")
    if config.method == "full":
        if _is_4bit(model):
            raise ConfigError("Full training needs a full-precision model, not a 4-bit one.")
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        if not _is_4bit(model):
            raise ConfigError(
                "QLoRA needs a 4-bit base model: load the pruned checkpoint with "
                "load_model_for_recovery(path, RecoveryConfig(method='qlora'))."
            )
        # Casts norms to fp32 and freezes the base; activation checkpointing is left to TrainingArguments.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    elif _is_4bit(model):
        raise ConfigError("This model is 4-bit; use method='qlora'.")
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules if config.target_modules is not None else "all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def recovery_training_arguments(
    output_dir: str | os.PathLike, config: RecoveryConfig, **overrides
) -> TrainingArguments:
    """``TrainingArguments`` of the recipe (any field can be overridden).

    Under ``accelerate launch`` with an FSDP config on a machine without GPUs, this first calls
    :func:`~optimum_depth.training.fsdp.enable_fsdp_on_cpu` (and reuses its process state), so the same script and
    config shard the model on CPU (gloo) as on GPUs (NCCL).

    Args:
        output_dir: Where checkpoints go.
        config: The recovery config.
        **overrides: Any ``TrainingArguments`` field, e.g. ``logging_steps``, ``save_steps``, ``report_to``.

    Returns:
        The training arguments.
    """
    kwargs: dict[str, Any] = dict(
        output_dir=os.fspath(output_dir),
        learning_rate=config.resolved_learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        logging_steps=10,
        save_strategy="epoch",
        report_to="none",
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )
    if config.gradient_checkpointing:
        kwargs.update(activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": False})
    kwargs.update(overrides)
    if enable_fsdp_on_cpu(timeout=kwargs.get("ddp_timeout")):  # accelerate launch with an FSDP config, no GPU
        kwargs["accelerator_config"] = {**(kwargs.get("accelerator_config") or {}), **CPU_FSDP_ACCELERATOR_CONFIG}
    return TrainingArguments(**kwargs)


def build_recovery_trainer(
    model: nn.Module,
    train_dataset,
    config: RecoveryConfig | None = None,
    output_dir: str | os.PathLike = "recovery_output",
    tokenizer=None,
    eval_dataset=None,
    callbacks: list | None = None,
    training_args: TrainingArguments | None = None,
    teacher: nn.Module | None = None,
    **overrides,
) -> Trainer:
    """A ``Trainer`` ready to recover a pruned model (a :class:`DistillationTrainer` for the KD objectives).

    Args:
        model: The pruned model (plain, or already prepared with :func:`prepare_model_for_recovery`).
        train_dataset: From :func:`~optimum_depth.training.build_recovery_dataset` (or any dataset of
            ``input_ids``/``labels``).
        config: The recipe (default: LoRA with Shortened LLaMA's settings).
        output_dir: Checkpoint directory (ignored when ``training_args`` is given).
        tokenizer: Saved with checkpoints; its pad (else EOS) id pads unpacked examples.
        eval_dataset: Optional evaluation data.
        callbacks: Extra callbacks, e.g. a :class:`~optimum_depth.training.callback.DepthPruningCallback`.
        training_args: Use these instead of :func:`recovery_training_arguments`.
        teacher: The frozen dense model, for ``objective="kd"``/``"kd+lm"`` (may be 4-bit or offloaded; not needed
            when the data carries precomputed teacher logits, see :mod:`.teacher_logits`).
        **overrides: ``TrainingArguments`` fields overriding the recipe's.

    Returns:
        The trainer; call ``trainer.train()``.

    Raises:
        ConfigError: If a KD objective has neither a teacher nor precomputed logits, or the teacher is given for
            the LM objective.
        UnsupportedParallelismError: QLoRA under FSDP or DeepSpeed.
    """
    config = config or RecoveryConfig()
    if config.method == "qlora" and sharded_training(training_args) is not None:
        raise UnsupportedParallelismError(
            "QLoRA (a bitsandbytes 4-bit base) is not supported under FSDP or DeepSpeed here: train it in one process "
            "or with DDP (examples/accelerate/ddp.yaml), or use method='lora' on a bf16 base under FSDP."
        )
    if hasattr(model, "peft_config"):
        if config.method == "full":
            raise ConfigError("method='full' trains a plain model; this one has peft adapters.")
    else:
        model = prepare_model_for_recovery(model, config)
    if training_args is None:  # count the tokens trained on, for the recovery record (padding excluded)
        counted = "non_padding" if isinstance(train_dataset, ExampleDataset) else "all"
        overrides.setdefault("include_num_input_tokens_seen", counted)
    args = training_args or recovery_training_arguments(output_dir, config, **overrides)
    collator: Any = default_data_collator
    if isinstance(train_dataset, ExampleDataset):
        pad = getattr(tokenizer, "pad_token_id", None)
        pad = pad if pad is not None else getattr(tokenizer, "eos_token_id", None)
        if pad is None:
            raise ConfigError("Unpacked recovery data needs a `tokenizer` with a pad or EOS token for padding.")
        collator = PadCollator(pad)
    logger.info("Recovery recipe: %s", config.to_dict())
    common = dict(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if not config.distills:
        if teacher is not None:
            raise ConfigError("A teacher was given but objective='lm' does not use it; use 'kd' or 'kd+lm'.")
        return Trainer(**common)
    stored_temperature = getattr(train_dataset, "temperature", None) if teacher is None else None
    if stored_temperature is not None and stored_temperature != config.temperature:
        raise ConfigError(
            f"The precomputed teacher logits are for temperature {stored_temperature}; the config asks "
            f"{config.temperature}. Precompute them again, or set the same temperature."
        )
    if teacher is None and not getattr(train_dataset, "has_teacher_logits", False):
        raise ConfigError(
            f"objective={config.objective!r} needs the dense `teacher` model, or training data with precomputed "
            "teacher logits (optimum_depth.training.teacher_logits)."
        )
    from .distillation import DistillationTrainer

    return DistillationTrainer(teacher=teacher, recovery=config, **common)
