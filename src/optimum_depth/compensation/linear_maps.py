"""The pure tensor math of training-free compensation: streaming least squares, ridge selection, folding.

The maths behind ReplaceMe (Shopkhoev et al., 2025, arXiv:2505.02819) and its extensions, in pure torch, with no
dependency on a model class:

* :class:`GramAccumulator` streams the sufficient statistics of a multi-output linear least-squares problem
  ``Y ~ X T`` (``XᵀX``, ``XᵀY``, ``ΣY²``) in float64 over calibration batches, so activations never need to be held.
* :func:`ridge_solve` solves the ridge problem, shrinking towards a *prior* map (the identity for ReplaceMe: a huge
  ridge gives back plain block removal, never something worse), and :func:`select_ridge` picks the ridge on
  held-out rows from their own Gram statistics (closed form: no extra forward pass per candidate ridge).
* :func:`ridge_solve_diagonal` is the same problem restricted to a *diagonal* map (one gain per feature), the map a
  family with a norm after its MLP (Gemma 2/3) can fold exactly into that norm's gain.
* :func:`fit_cosine_transform` is the cosine-distance variant of ReplaceMe (Adam on the rows).
* :func:`fold_output_transform` folds a map ``T`` applied to a ``Linear``'s output into its weight
  (``W <- Tᵀ W``), solving in float64 and casting back (bf16/fp16 safe); :func:`refit_linear_weight` re-fits a
  whole ``Linear`` weight by ridge regression towards its current value (the "refit the next down_proj" fold).

Conventions: ``nn.Linear`` computes ``y = x Wᵀ`` with ``W`` of shape ``(out, in)``. A transform ``T`` of shape
``(d, d)`` acts on row vectors: ``y' = y T``. Ridge strengths are given *relative* to ``trace(XᵀX) / d_in`` (the
mean eigenvalue of the Gram matrix), so one grid fits every layer and calibration size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "GramAccumulator",
    "RidgeSelection",
    "ridge_solve",
    "ridge_solve_diagonal",
    "select_ridge",
    "fit_cosine_transform",
    "fold_output_transform",
    "folded_gain_weight",
    "folded_output_weight",
    "refit_linear_weight",
    "DEFAULT_RELATIVE_RIDGES",
]

DEFAULT_RELATIVE_RIDGES: tuple[float, ...] = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 10.0, 1e6)
"""Relative ridge grid (times ``trace(XᵀX) / d_in``); ``1e6`` is, in practice, the prior itself."""


def _rows(t: torch.Tensor) -> torch.Tensor:
    """Flattens ``[..., d]`` to ``[rows, d]``."""
    return t.reshape(-1, t.shape[-1])


class GramAccumulator:
    """Streaming float64 statistics of a multi-output linear least-squares problem ``Y ~ X T``.

    Holds ``XᵀX`` (``d_in x d_in``), ``XᵀY`` (``d_in x d_out``), ``ΣY²`` (a scalar, enough to evaluate residuals) and
    the number of rows. Memory does not grow with the number of rows.

    Args:
        in_features: ``d_in``, the width of the regressors ``X``.
        out_features: ``d_out``, the width of the targets ``Y`` (defaults to ``in_features``).
        device: Where the statistics live (defaults to CPU).

    Example:
        >>> acc = GramAccumulator(576)
        >>> for x, y in batches:  # x, y: [batch, seq, 576]
        ...     acc.update(x, y)
        >>> t = ridge_solve(acc, relative_ridge=1e-2, prior="identity")
    """

    def __init__(self, in_features: int, out_features: int | None = None, device: torch.device | str | None = None):
        out_features = in_features if out_features is None else out_features
        self.in_features = in_features
        self.out_features = out_features
        self.xtx = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)
        self.xty = torch.zeros(in_features, out_features, dtype=torch.float64, device=device)
        self.yty = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Adds rows.

        Args:
            x: Regressors ``[..., d_in]`` (any leading shape; 2-D rows work as is).
            y: Targets ``[..., d_out]`` with the same leading shape.
            weight: Optional non-negative per-row weights with the leading shape (e.g. a mask dropping the
                attention-sink token or padding).

        Raises:
            ValueError: On mismatched shapes.
        """
        x2, y2 = _rows(x), _rows(y)
        if x2.shape[0] != y2.shape[0] or x2.shape[1] != self.in_features or y2.shape[1] != self.out_features:
            raise ValueError(
                f"Expected x [..., {self.in_features}] and y [..., {self.out_features}] with the same rows, got "
                f"{tuple(x.shape)} and {tuple(y.shape)}."
            )
        x2 = x2.to(self.xtx.device, torch.float64)
        y2 = y2.to(self.xtx.device, torch.float64)
        if weight is not None:
            w = weight.reshape(-1).to(x2.device, torch.float64)
            if w.numel() != x2.shape[0]:
                raise ValueError(f"`weight` has {w.numel()} entries for {x2.shape[0]} rows.")
            xw = x2 * w[:, None]
            self.xtx += xw.T @ x2
            self.xty += xw.T @ y2
            self.yty += (w[:, None] * y2.square()).sum()
            self.count += int((w > 0).sum())
        else:
            self.xtx += x2.T @ x2
            self.xty += x2.T @ y2
            self.yty += y2.square().sum()
            self.count += x2.shape[0]

    def merge(self, other: GramAccumulator) -> GramAccumulator:
        """Adds another accumulator's statistics in place (e.g. from another process) and returns ``self``."""
        self.xtx += other.xtx.to(self.xtx.device)
        self.xty += other.xty.to(self.xty.device)
        self.yty += other.yty.to(self.yty.device)
        self.count += other.count
        return self

    @torch.no_grad()
    def residual(self, t: torch.Tensor) -> float:
        """Sum of squared errors ``||X T - Y||²`` of a map on the accumulated rows (no rows needed).

        Args:
            t: ``[d_in, d_out]`` map.

        Returns:
            The residual sum of squares (clamped at 0 against round-off).
        """
        t = t.to(self.xtx.device, torch.float64)
        value = self.yty - 2.0 * (t * self.xty).sum() + (t * (self.xtx @ t)).sum()
        return float(value.clamp_min(0.0))

    @property
    def mean_eigenvalue(self) -> float:
        """``trace(XᵀX) / d_in``: the scale relative ridges are multiplied by."""
        return float(torch.diagonal(self.xtx).sum()) / self.in_features


def _prior_matrix(prior: str | torch.Tensor | None, d_in: int, d_out: int, like: torch.Tensor) -> torch.Tensor:
    if prior is None or (isinstance(prior, str) and prior == "zero"):
        return torch.zeros(d_in, d_out, dtype=torch.float64, device=like.device)
    if isinstance(prior, str):
        if prior != "identity":
            raise ValueError(f"`prior` must be 'identity', 'zero', None or a tensor, got {prior!r}.")
        if d_in != d_out:
            raise ValueError(f"The identity prior needs a square map, got {d_in} x {d_out}.")
        return torch.eye(d_in, dtype=torch.float64, device=like.device)
    if tuple(prior.shape) != (d_in, d_out):
        raise ValueError(f"`prior` must have shape {(d_in, d_out)}, got {tuple(prior.shape)}.")
    return prior.to(like.device, torch.float64)


@torch.no_grad()
def ridge_solve(
    stats: GramAccumulator,
    relative_ridge: float = 0.0,
    prior: str | torch.Tensor | None = "identity",
) -> torch.Tensor:
    """Ridge least squares shrunk towards a prior map.

    Minimises ``||X T - Y||² + λ ||T - P||²`` with ``λ = relative_ridge * trace(XᵀX) / d_in``:
    ``T = (XᵀX + λ I)⁻¹ (XᵀY + λ P)``. With ``prior="zero"`` this is ReplaceMe's own ``alpha`` regulariser; with
    ``prior="identity"`` a large ridge returns the identity, i.e. the uncompensated pruned model.

    Args:
        stats: Accumulated statistics.
        relative_ridge: Ridge relative to the mean eigenvalue of ``XᵀX`` (``0`` = plain least squares).
        prior: ``"identity"``, ``"zero"``/``None``, or a ``[d_in, d_out]`` tensor (e.g. the current weight, transposed).

    Returns:
        ``float64[d_in, d_out]`` map. Solved by Cholesky, falling back to an eigen-decomposition pseudo-inverse when
        the (unregularised) Gram matrix is singular, as with fewer rows than features.
    """
    if relative_ridge < 0:
        raise ValueError(f"`relative_ridge` must be non-negative, got {relative_ridge}.")
    xtx, xty = stats.xtx, stats.xty
    p = _prior_matrix(prior, stats.in_features, stats.out_features, xtx)
    lam = relative_ridge * stats.mean_eigenvalue
    a = xtx + lam * torch.eye(stats.in_features, dtype=torch.float64, device=xtx.device)
    b = xty + lam * p
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(b, chol)
    # Singular Gram (e.g. fewer rows than features, lam = 0): minimum-norm solution around the prior.
    evals, evecs = torch.linalg.eigh(a)
    keep = evals > evals.max().clamp_min(1e-300) * stats.in_features * torch.finfo(torch.float64).eps
    inv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T
    residual_target = b - a @ p
    return p + inv @ residual_target


@torch.no_grad()
def ridge_solve_diagonal(stats: GramAccumulator, relative_ridge: float = 0.0) -> torch.Tensor:
    """Ridge least squares over *diagonal* maps, shrunk towards the identity: one gain per feature.

    Minimises ``||X D - Y||² + Σ_j λ_j (d_j - 1)²`` over ``D = diag(d)``, with a ridge relative to each feature's
    own energy, ``λ_j = relative_ridge * (XᵀX)_jj``: ``d_j = ((XᵀY)_jj + λ_j) / ((XᵀX)_jj + λ_j)``, i.e. a convex
    combination of the per-feature least-squares gain and 1 (scale-free, so features of very different magnitude,
    such as Gemma's massive activations, are shrunk alike). Only the diagonals of the statistics are used.

    Args:
        stats: Accumulated statistics of a square problem (``d_in == d_out``).
        relative_ridge: Ridge relative to each feature's energy (``0`` = plain per-feature least squares).

    Returns:
        ``float64[d, d]`` diagonal map (a feature with no energy keeps the gain 1).
    """
    if relative_ridge < 0:
        raise ValueError(f"`relative_ridge` must be non-negative, got {relative_ridge}.")
    if stats.in_features != stats.out_features:
        raise ValueError(f"A diagonal map needs a square problem, got {stats.in_features} x {stats.out_features}.")
    xx, xy = torch.diagonal(stats.xtx), torch.diagonal(stats.xty)
    lam = relative_ridge * xx
    denominator = xx + lam
    gains = torch.where(denominator > 0, (xy + lam) / denominator.clamp_min(1e-300), torch.ones_like(xx))
    return torch.diag(gains)


@dataclass
class RidgeSelection:
    """The outcome of :func:`select_ridge`.

    Args:
        relative_ridge: The chosen relative ridge.
        transform: The map fitted on the training statistics with that ridge.
        heldout_errors: ``{relative ridge: held-out residual sum of squares}`` for the whole grid.
        prior_error: Held-out residual of the prior itself (no compensation).
    """

    relative_ridge: float
    transform: torch.Tensor
    heldout_errors: dict[float, float] = field(default_factory=dict)
    prior_error: float = float("nan")


@torch.no_grad()
def select_ridge(
    train: GramAccumulator,
    heldout: GramAccumulator,
    grid: Sequence[float] = DEFAULT_RELATIVE_RIDGES,
    prior: str | torch.Tensor | None = "identity",
    diagonal: bool = False,
) -> RidgeSelection:
    """Chooses the ridge minimising the held-out residual, computed from held-out Gram statistics alone.

    Args:
        train: Statistics of the fitting rows.
        heldout: Statistics of held-out rows of the same problem (same regressors/targets, other text).
        grid: Relative ridges to try.
        prior: The prior map (see :func:`ridge_solve`); a diagonal map is always shrunk towards the identity.
        diagonal: Fit diagonal maps (:func:`ridge_solve_diagonal`) instead of full ones.

    Returns:
        The selection, with the map refitted on ``train`` at the chosen ridge.
    """
    if not grid:
        raise ValueError("`grid` must not be empty.")
    errors: dict[float, float] = {}
    best: tuple[float, float, torch.Tensor] | None = None
    if diagonal and not (isinstance(prior, str) and prior == "identity"):
        raise ValueError("A diagonal map is shrunk towards the identity: pass prior='identity'.")
    for r in grid:
        t = ridge_solve_diagonal(train, r) if diagonal else ridge_solve(train, r, prior)
        e = heldout.residual(t)
        errors[float(r)] = e
        if best is None or e < best[0]:
            best = (e, float(r), t)
    assert best is not None
    p = _prior_matrix(prior, train.in_features, train.out_features, train.xtx)
    return RidgeSelection(best[1], best[2], errors, heldout.residual(p))


def fit_cosine_transform(
    x: torch.Tensor,
    y: torch.Tensor,
    base: torch.Tensor | None = None,
    init: torch.Tensor | None = None,
    epochs: int = 10,
    lr: float = 1e-4,
    batch_size: int = 1024,
    seed: int = 0,
    diagonal: bool = False,
) -> torch.Tensor:
    """ReplaceMe's cosine variant: ``T = argmin mean_rows(1 - cos(x T + base, y))`` by Adam.

    With ``base=None`` this is the paper's objective ``cos(M T, L - Y)`` (pass ``x = M``, ``y = L - Y``); passing
    ``base = Y`` and ``y = L`` gives the "accurate" form ``cos(M T + Y, L)`` on the whole residual stream.
    Unlike the least-squares map it needs the rows in memory (``[rows, d]`` each).

    Args:
        x: Regressors ``[..., d_in]``.
        y: Targets ``[..., d_out]``.
        base: Optional offset added to ``x T`` before the cosine, same shape as ``y``.
        init: Initial map (default: identity, as in the paper; pass a least-squares map to warm-start).
        epochs: Passes over the rows.
        lr: Adam learning rate (the paper's 1e-4).
        batch_size: Rows per step.
        seed: Seed of the row shuffling.
        diagonal: Fit a diagonal map (one gain per feature) instead of a full one.

    Returns:
        ``float64[d_in, d_out]`` map (diagonal with ``diagonal=True``).
    """
    x2, y2 = _rows(x).float(), _rows(y).float()
    b2 = _rows(base).float() if base is not None else None
    d_in, d_out = x2.shape[1], y2.shape[1]
    if init is None:
        if d_in != d_out:
            raise ValueError("The default identity initialisation needs a square map; pass `init`.")
        init = torch.eye(d_in)
    start = torch.diagonal(init) if diagonal else init
    t = start.detach().to(torch.float32).clone().requires_grad_(True)
    opt = torch.optim.Adam([t], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = x2.shape[0]
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(n, generator=gen).split(batch_size):
                pred = x2[idx] * t if diagonal else x2[idx] @ t
                if b2 is not None:
                    pred = pred + b2[idx]
                loss = 1.0 - torch.nn.functional.cosine_similarity(pred, y2[idx], dim=-1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    result = t.detach().to(torch.float64)
    return torch.diag(result) if diagonal else result


@torch.no_grad()
def folded_output_weight(weight: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """The weight of a ``Linear`` whose output is followed by ``y -> y T``: ``Tᵀ W``, formed in float64.

    Args:
        weight: ``[out, in]`` weight.
        transform: ``[out, out]`` map acting on the layer's output rows.

    Returns:
        ``Tᵀ W`` in the weight's dtype, on its device.

    Raises:
        ValueError: If the map's shape does not match the layer's output width.
    """
    out = weight.shape[0]
    if tuple(transform.shape) != (out, out):
        raise ValueError(f"`transform` must be {(out, out)} for this layer, got {tuple(transform.shape)}.")
    t = transform.to(weight.device, torch.float64)
    return (t.T @ weight.to(torch.float64)).to(weight.dtype)


@torch.no_grad()
def fold_output_transform(linear: nn.Linear, transform: torch.Tensor) -> None:
    """Folds ``y -> y T`` on a ``Linear``'s output into its weight, in place: ``W <- Tᵀ W`` (and ``b <- b T``).

    The product is formed in float64 and cast back to the weight's dtype and device, so bf16/fp16 checkpoints lose
    precision only once.

    Args:
        linear: The layer (e.g. a block's ``mlp.down_proj``).
        transform: ``[out, out]`` map acting on the layer's output rows.

    Raises:
        ValueError: If the map's shape does not match the layer's output width.
    """
    linear.weight.copy_(folded_output_weight(linear.weight, transform))
    if linear.bias is not None:
        t = transform.to(linear.bias.device, torch.float64)
        linear.bias.copy_((linear.bias.to(torch.float64) @ t).to(linear.bias.dtype))


@torch.no_grad()
def folded_gain_weight(weight: torch.Tensor, transform: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """The weight of a norm whose output is followed by a diagonal map ``y -> y D``, formed in float64.

    A norm computing ``n(x) * (offset + w)`` (RMSNorm: ``offset = 0``; Gemma's norms: ``offset = 1``) followed by
    ``D = diag(d)`` computes ``n(x) * (offset + w')`` with ``w' = (offset + w) * d - offset``: exact, whatever ``w``.

    Args:
        weight: The norm's ``[d]`` weight.
        transform: ``[d, d]`` diagonal map acting on the norm's output rows.
        offset: The constant the norm adds to its weight to form its gain.

    Returns:
        ``w'`` in the weight's dtype, on its device.

    Raises:
        ValueError: If the map's shape does not match or it is not diagonal.
    """
    d = weight.shape[0]
    if tuple(transform.shape) != (d, d):
        raise ValueError(f"`transform` must be {(d, d)} for this norm, got {tuple(transform.shape)}.")
    gains = torch.diagonal(transform).to(torch.float64)
    if not torch.equal(torch.diag(gains), transform.to(torch.float64)):
        raise ValueError("Only a diagonal map can be folded into a norm's gain.")
    folded = (offset + weight.to(torch.float64)) * gains.to(weight.device) - offset
    return folded.to(weight.dtype)


@torch.no_grad()
def refit_linear_weight(
    linear: nn.Linear,
    train: GramAccumulator,
    heldout: GramAccumulator | None = None,
    relative_ridge: float | None = None,
    grid: Sequence[float] = DEFAULT_RELATIVE_RIDGES,
) -> RidgeSelection:
    """Re-fits a bias-free ``Linear``'s whole weight by ridge regression towards its current weight, in place.

    The statistics describe ``target ~ input W'ᵀ`` (``train.update(layer_input, desired_output)``); the solution is
    shrunk towards the current ``Wᵀ``, so an infinite ridge keeps the layer unchanged. Used to re-fit the
    ``down_proj`` of the blocks after a cut so that the pruned residual stream tracks the dense model's.

    Args:
        linear: The layer, ``in_features == train.in_features`` and ``out_features == train.out_features``.
        train: Statistics of (layer input, desired layer output) on fitting rows.
        heldout: Statistics of held-out rows; when given (and ``relative_ridge`` is ``None``) the ridge is chosen on
            them from ``grid``.
        relative_ridge: A fixed relative ridge (overrides the held-out choice).
        grid: Candidate relative ridges for the held-out choice.

    Returns:
        The selection (``transform`` is the new ``Wᵀ`` in float64).

    Raises:
        ValueError: On a shape mismatch, a biased layer, or neither ``heldout`` nor ``relative_ridge`` given.
    """
    if linear.bias is not None:
        raise ValueError("Only bias-free layers are supported (no constant regressor is available to fold a bias).")
    if (linear.in_features, linear.out_features) != (train.in_features, train.out_features):
        raise ValueError("The statistics do not match the layer's shape.")
    prior = linear.weight.detach().to(torch.float64).T.to(train.xtx.device)
    if relative_ridge is not None:
        sel = RidgeSelection(float(relative_ridge), ridge_solve(train, relative_ridge, prior))
    elif heldout is not None:
        sel = select_ridge(train, heldout, grid, prior)
    else:
        raise ValueError("Give `heldout` statistics or a fixed `relative_ridge`.")
    linear.weight.copy_(sel.transform.T.to(linear.weight.device, linear.weight.dtype))
    return sel
