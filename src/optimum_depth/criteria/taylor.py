"""Taylor criterion (Shortened LLaMA's Taylor / Taylor+): first-order estimate of the loss change without a block."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..architectures import get_decoder_layers
from ..blocks.engine import progress_bar
from .base import Criterion, CriterionResult, ScoringContext, register_criterion


def block_weights(block: nn.Module) -> list[nn.Parameter]:
    """The weight matrices of a block that the Taylor and magnitude criteria score (2-D and up, LoRA excluded)."""
    return [param for name, param in block.named_parameters() if param.dim() >= 2 and "lora_" not in name]


def check_differentiable(weights: list[nn.Parameter]) -> None:
    """Refuses weights the criterion cannot take gradients of (offloaded to meta, or quantized to integers).

    Raises:
        ValueError: Naming the first offending weight's problem.
    """
    for param in weights:
        if param.device.type == "meta":
            raise ValueError(
                "The 'taylor' criterion needs gradients, but some block weights are offloaded (meta device); load the "
                "model fully into memory, or use a forward-only criterion (ppl, block_influence, angular, sleb)."
            )
        if not param.dtype.is_floating_point:
            raise ValueError(
                f"The 'taylor' criterion needs floating-point weights, found {param.dtype} (a quantized model?); "
                "use a forward-only criterion (ppl, block_influence, angular, sleb) on quantized models."
            )


@contextmanager
def gradient_sandbox(model: nn.Module, weights: list[nn.Parameter]):
    """Lets gradients accumulate into ``.grad`` of ``weights`` only, then restores the model's gradient state.

    On entry every parameter's ``.grad`` is put aside and cleared and only ``weights`` require gradients; on exit
    (even after an error) every ``requires_grad`` flag and every original ``.grad`` (``None`` or a tensor) is back.
    """
    saved = [(param, param.requires_grad, param.grad) for param in model.parameters()]
    try:
        for param, _, _ in saved:
            param.requires_grad_(False)
            param.grad = None
        for param in weights:
            param.requires_grad_(True)
        yield
    finally:
        for param, flag, grad in saved:
            param.requires_grad_(flag)
            param.grad = grad


def accumulate_gradients(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Backpropagates the causal-LM loss (token mean) of each calibration batch, summing gradients in ``.grad``.

    One backward pass per batch; the gradients add up in place, so the only extra memory is one ``.grad`` per
    scored weight (no second accumulator).
    """
    device = model.get_input_embeddings().weight.device  # type: ignore[operator]
    with torch.enable_grad():
        for input_ids in progress_bar(batches, desc="taylor: backward passes"):
            input_ids = input_ids.to(device)
            model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.backward()


def weight_saliency(param: nn.Parameter) -> float:
    """``sum_ij |W_ij * G_ij|`` with ``G`` the accumulated gradient in ``param.grad`` (0 if none flowed)."""
    if param.grad is None:
        return 0.0
    return float((param.detach().double() * param.grad.double()).abs().sum())


def taylor_criterion(context: ScoringContext) -> CriterionResult:
    """Scores each block by the first-order Taylor estimate of the loss change when its weights are zeroed.

    Shortened LLaMA (Kim et al., 2024), "Taylor": I(block) = sum_k sum_{i,j} | sum_b W^k_{ij} dL_b/dW^k_{ij} |,
    over the block's weight matrices W^k (norm gains and biases excluded, as in Mag) and the calibration batches b,
    L_b the causal-LM loss (mean token NLL) of batch b. The gradients are accumulated over the batches before the
    absolute value is taken. Higher = more important. "Taylor+" is the default protection of the first four and last
    two blocks (``DepthPruningConfig``).

    The model's ``requires_grad`` flags, grad mode and ``.grad`` attributes are restored afterwards (gradients are
    accumulated in ``.grad`` meanwhile, which costs one gradient per scored weight).

    Args:
        context: Model, calibration data and config (``batch_size``).

    Returns:
        The importance per block.

    Raises:
        ValueError: On offloaded (meta) or quantized weights, before anything is changed.
    """
    if context.calibration is None:
        raise ValueError("The 'taylor' criterion needs calibration data.")
    per_block = [block_weights(block) for block in get_decoder_layers(context.model)]
    weights = [param for params in per_block for param in params]
    check_differentiable(weights)
    with gradient_sandbox(context.model, weights):
        accumulate_gradients(context.model, context.calibration.batches(context.config.batch_size))
        saliency = {id(param): weight_saliency(param) for param in weights}
    values = [sum(saliency[id(p)] for p in params) for params in per_block]
    return CriterionResult(values=values, extra={"quantity": "sum |W * sum_b dL_b/dW| over block weights"})


TAYLOR = register_criterion(Criterion("taylor", taylor_criterion, needs_calibration=True, needs_gradients=True))
