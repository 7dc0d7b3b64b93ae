"""The math of compensation: streaming least squares against lstsq, ridge selection, folding (pure torch)."""

import pytest
import torch
from torch import nn

from optimum_depth.compensation.linear_maps import (
    GramAccumulator,
    fit_cosine_transform,
    fold_output_transform,
    refit_linear_weight,
    ridge_solve,
    select_ridge,
)


def _data(n=600, d=16, e=12, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    t = torch.randn(d, e, generator=g, dtype=torch.float64)
    y = x @ t + noise * torch.randn(n, e, generator=g, dtype=torch.float64)
    return x, y, t


def test_streaming_equals_lstsq():
    x, y, _ = _data()
    acc = GramAccumulator(16, 12)
    for xb, yb in zip(x.split(77), y.split(77), strict=True):  # uneven batches, 2-D rows
        acc.update(xb.float(), yb.float())
    t = ridge_solve(acc, 0.0, prior="zero")
    ref = torch.linalg.lstsq(x.float().double(), y.float().double()).solution
    torch.testing.assert_close(t, ref, rtol=1e-8, atol=1e-8)
    assert acc.count == 600
    # The residual computed from the statistics equals the one on the rows.
    direct = float((x.float().double() @ t - y.float().double()).square().sum())
    assert acc.residual(t) == pytest.approx(direct, rel=1e-8)


def test_3d_inputs_and_weights():
    x, y, _ = _data(n=640)
    acc = GramAccumulator(16, 12)
    acc.update(x.view(10, 64, 16), y.view(10, 64, 12))
    ref = torch.linalg.lstsq(x, y).solution
    torch.testing.assert_close(ridge_solve(acc, 0.0, prior="zero"), ref, rtol=1e-8, atol=1e-8)
    # A 0/1 row weight equals dropping the rows.
    mask = torch.ones(10, 64)
    mask[:, 0] = 0
    accw = GramAccumulator(16, 12)
    accw.update(x.view(10, 64, 16), y.view(10, 64, 12), weight=mask)
    keep = mask.reshape(-1) > 0
    torch.testing.assert_close(
        ridge_solve(accw, 0.0, prior="zero"), torch.linalg.lstsq(x[keep], y[keep]).solution, rtol=1e-8, atol=1e-8
    )
    assert accw.count == 630


def test_exactly_linear_removed_block_is_recovered():
    """Toy ReplaceMe: the removed 'blocks' add a linear function of the MLP output; the fold undoes the removal."""
    torch.manual_seed(0)
    d, n = 24, 500
    m = torch.randn(n, d, dtype=torch.float64)  # MLP output of the last kept block
    y = torch.randn(n, d, dtype=torch.float64)  # residual stream before that MLP output
    a = torch.randn(d, d, dtype=torch.float64) / d**0.5
    target = y + m + m @ a  # dense state after the removed blocks: they added (M A)
    acc = GramAccumulator(d)
    acc.update(m, target - y)
    t = ridge_solve(acc, 0.0, prior="identity")
    torch.testing.assert_close(t, torch.eye(d, dtype=torch.float64) + a, rtol=1e-9, atol=1e-9)
    # Folded into a down_proj (out = d, in = 3d): the compensated block reproduces the dense state exactly.
    down = nn.Linear(3 * d, d, bias=False).double()
    inter = torch.randn(n, 3 * d, dtype=torch.float64)
    m2 = down(inter)
    target2 = y + m2 @ (torch.eye(d, dtype=torch.float64) + a)
    acc2 = GramAccumulator(d)
    acc2.update(m2, target2 - y)
    fold_output_transform(down, ridge_solve(acc2, 0.0))
    torch.testing.assert_close(y + down(inter), target2, rtol=1e-9, atol=1e-9)


def test_identity_prior_limits():
    x, y, _ = _data(d=12, e=12)
    acc = GramAccumulator(12)
    acc.update(x, y)
    torch.testing.assert_close(
        ridge_solve(acc, 1e12, "identity"), torch.eye(12, dtype=torch.float64), atol=1e-8, rtol=0
    )
    assert ridge_solve(acc, 1e12, "zero").abs().max() < 1e-8


def test_underdetermined_falls_back_to_min_norm_around_prior():
    x, y, _ = _data(n=5, d=16, e=16)
    acc = GramAccumulator(16)
    acc.update(x, y)
    t = ridge_solve(acc, 0.0, prior="identity")
    # Interpolates the rows...
    torch.testing.assert_close(x @ t, y, rtol=1e-6, atol=1e-6)
    # ...and leaves the directions the rows do not see at the prior.
    null = torch.linalg.svd(x, full_matrices=True).Vh[5:]  # [11, 16]
    torch.testing.assert_close(null @ t, null, rtol=1e-6, atol=1e-6)


def test_select_ridge_prefers_regularisation_when_few_rows():
    x, y, _ = _data(n=20, d=16, e=16, noise=3.0, seed=1)
    xh, yh, _ = _data(n=2000, d=16, e=16, noise=3.0, seed=1)
    tr, ho = GramAccumulator(16), GramAccumulator(16)
    tr.update(x, y)
    ho.update(xh, yh)
    sel = select_ridge(tr, ho, grid=(0.0, 0.1, 1.0, 10.0), prior="zero")
    assert sel.relative_ridge > 0
    assert sel.heldout_errors[sel.relative_ridge] == min(sel.heldout_errors.values())


def test_fold_output_transform_bf16_and_bias():
    torch.manual_seed(0)
    lin = nn.Linear(8, 6, bias=True)
    t = torch.randn(6, 6, dtype=torch.float64)
    x = torch.randn(4, 8)
    expected = lin(x).double() @ t
    fold_output_transform(lin, t)
    torch.testing.assert_close(lin(x).double(), expected, rtol=1e-5, atol=1e-5)
    lb = nn.Linear(8, 6, bias=False).to(torch.bfloat16)
    ref = lb.weight.double()
    fold_output_transform(lb, torch.eye(6, dtype=torch.float64) * 2)
    assert lb.weight.dtype == torch.bfloat16
    torch.testing.assert_close(lb.weight.double(), 2 * ref)
    with pytest.raises(ValueError):
        fold_output_transform(lb, torch.eye(5))


def test_refit_linear_weight_recovers_target_layer():
    torch.manual_seed(0)
    lin = nn.Linear(20, 8, bias=False).double()
    w_true = torch.randn(8, 20, dtype=torch.float64)
    x = torch.randn(400, 20, dtype=torch.float64)
    acc, held = GramAccumulator(20, 8), GramAccumulator(20, 8)
    acc.update(x[:300], x[:300] @ w_true.T)
    held.update(x[300:], x[300:] @ w_true.T)
    sel = refit_linear_weight(lin, acc, held, grid=(0.0, 1.0, 1e6))
    assert sel.relative_ridge == 0.0
    torch.testing.assert_close(lin.weight, w_true, rtol=1e-8, atol=1e-8)
    # An infinite ridge keeps the layer.
    before = lin.weight.clone()
    refit_linear_weight(lin, acc, relative_ridge=1e12)
    torch.testing.assert_close(lin.weight, before, rtol=1e-6, atol=1e-6)


def test_cosine_transform_improves_cosine():
    torch.manual_seed(0)
    d = 16
    x = torch.randn(2000, d)
    a = torch.eye(d) + 0.5 * torch.randn(d, d) / d**0.5
    y = x @ a

    def cos_loss(t):
        return float(1 - torch.nn.functional.cosine_similarity(x @ t.float(), y, dim=-1).mean())

    t = fit_cosine_transform(x, y, epochs=30, lr=1e-2, batch_size=256)
    assert cos_loss(t) < 0.1 * cos_loss(torch.eye(d))
    # Accurate form with an offset.
    base = torch.randn(2000, d)
    t2 = fit_cosine_transform(x, y + base, base=base, epochs=30, lr=1e-2, batch_size=256)
    c = torch.nn.functional.cosine_similarity(x @ t2.float() + base, y + base, dim=-1).mean()
    assert float(c) > 0.99
