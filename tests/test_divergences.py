"Property sweeps of carerft.divergences against independent float64 NumPy formulas (no torch in the reference)."
import math
import numpy as np
import pytest
import torch
from carerft.divergences import (log_mixture, rkl_k3, srkl_k3, rkl_k3_grad, srkl_k3_grad, rkl_exact, srkl_exact,
                                 NoKL, RKL, SRKL, matched_beta)

RNG = np.random.default_rng(0)
ALPHAS = [0.0, 1e-6, 0.2, 0.5, 0.8, 0.95, 0.999]

def np_k3(logq, logp):            # Schulman's k3 for KL(p || q) at a sample, r = q/p
    r = np.exp(logq - logp); return r - 1 - (logq - logp)

def np_mix(logp, ref, a):         # log(a p + (1-a) ref) via a stable max-shift, written independently
    if a == 0: return ref
    x, y = np.log(a) + logp, np.log1p(-a) + ref
    m = np.maximum(x, y); return m + np.log(np.exp(x - m) + np.exp(y - m))

def t(x): return torch.tensor(x, dtype=torch.float64)

@pytest.mark.parametrize('alpha', ALPHAS)
def test_per_token_values_and_gradients(alpha):
    logp, ref = RNG.uniform(-20, 0, 500), RNG.uniform(-20, 0, 500)
    np.testing.assert_allclose(log_mixture(t(logp), t(ref), alpha).numpy(), np_mix(logp, ref, alpha), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(srkl_k3(t(logp), t(ref), alpha).numpy(), np_k3(np_mix(logp, ref, alpha), logp), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rkl_k3(t(logp), t(ref)).numpy(), np_k3(ref, logp), rtol=1e-9, atol=1e-12)
    # gradient: central finite differences of the NumPy reference
    lp = t(logp).requires_grad_(); srkl_k3(lp, t(ref), alpha).sum().backward()
    h = 1e-6; fd = (np_k3(np_mix(logp + h, ref, alpha), logp + h) - np_k3(np_mix(logp - h, ref, alpha), logp - h)) / (2 * h)
    np.testing.assert_allclose(lp.grad.numpy(), fd, rtol=1e-5, atol=1e-6)
    # closed form from DESIGN.md: dk/dlogp = -(r-1)(r-alpha)/r, r = m/pi
    r = np.exp(np_mix(logp, ref, alpha) - logp)
    np.testing.assert_allclose(lp.grad.numpy(), -(r - 1) * (r - alpha) / r, rtol=1e-8, atol=1e-10)

@pytest.mark.parametrize('V', [2, 3, 10, 100])
@pytest.mark.parametrize('alpha', ALPHAS)
def test_exact_divergences_and_bound(V, alpha):
    z, zr = RNG.normal(0, 4, (200, V)), RNG.normal(0, 4, (200, V))
    lp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    lr = zr - np.log(np.exp(zr - zr.max(1, keepdims=True)).sum(1, keepdims=True)) - zr.max(1, keepdims=True)
    p = np.exp(lp)
    rkl = (p * (lp - lr)).sum(1); srkl = (p * (lp - np_mix(lp, lr, alpha))).sum(1)
    np.testing.assert_allclose(rkl_exact(t(z), t(zr)).numpy(), rkl, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(srkl_exact(t(z), t(zr), alpha).numpy(), srkl, rtol=1e-9, atol=1e-12)
    assert (srkl >= -1e-12).all() and (srkl <= rkl + 1e-9).all()          # the mixture anchor never costs more than RKL
    if alpha > 0: assert (srkl <= math.log(1 / alpha) + 1e-12).all()
    # unbiasedness of the per-token estimators, by enumeration
    np.testing.assert_allclose((p * srkl_k3(t(lp), t(lr), alpha).numpy()).sum(1), srkl, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose((p * rkl_k3(t(lp), t(lr)).numpy()).sum(1), rkl, rtol=1e-8, atol=1e-11)

def test_srkl_decreases_with_alpha():
    z, zr = t(RNG.normal(0, 3, (100, 6))), t(RNG.normal(0, 3, (100, 6)))
    vals = torch.stack([srkl_exact(z, zr, a) for a in [0.0, 0.3, 0.6, 0.9, 0.99]])
    assert (vals.diff(dim=0) <= 1e-12).all()

@pytest.mark.parametrize('alpha', [0.5, 0.8, 0.95])
def test_limits(alpha):
    x = t([30.0, 60.0])                         # log(pi/pi_ref) large: exploring
    k = srkl_k3(x - 50, torch.full_like(x, -50.0), alpha)
    np.testing.assert_allclose(k.numpy(), alpha - 1 - math.log(alpha), rtol=1e-9)
    lp = t([-40.0, -60.0])                      # pi << pi_ref: abandoning
    k = srkl_k3(lp, torch.zeros_like(lp), alpha)
    np.testing.assert_allclose((k / ((1 - alpha) * torch.exp(-lp))).numpy(), 1.0, rtol=1e-9)

@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('alpha', [0.0, 0.5, 0.8, 0.99])
def test_low_precision_extremes_stay_finite(dtype, alpha):
    grid = torch.tensor([0.0, -1e-4, -1.0, -10.0, -40.0, -80.0], dtype=dtype)
    lp, ref = torch.meshgrid(grid, grid, indexing='ij')
    lp = lp.contiguous().requires_grad_()
    for k in (srkl_k3(lp, ref, alpha), rkl_k3(lp, ref)):
        g, = torch.autograd.grad(k.sum(), lp)
        assert torch.isfinite(k).all() and torch.isfinite(g).all() and (k >= 0).all()
    want = np_mix(lp.detach().double().numpy(), ref.double().numpy(), alpha)
    np.testing.assert_allclose(log_mixture(lp.detach(), ref, alpha).double().numpy(), want, atol=0.05 * (1 + np.abs(want)).max() if dtype == torch.bfloat16 else 1e-4, rtol=1e-2)

@pytest.mark.parametrize('bad', [1.0, 1.5, -0.1, float('nan'), float('inf'), 'x', None])
def test_bad_alpha(bad):
    for f in (lambda: SRKL(alpha=bad), lambda: srkl_k3(t([0.0]), t([0.0]), bad), lambda: log_mixture(t([0.0]), t([0.0]), bad),
              lambda: srkl_exact(t([[0.0, 1.0]]), t([[0.0, 1.0]]), bad)):
        with pytest.raises(ValueError, match='alpha'): f()

@pytest.mark.parametrize('bad', [-1e-9, -1, float('nan'), float('inf'), 'x'])
def test_bad_beta(bad):
    for cls in (RKL, lambda beta: SRKL(beta=beta)):
        with pytest.raises(ValueError, match='beta'): cls(bad)

def test_shape_errors_name_arguments():
    with pytest.raises(ValueError, match='logp .* ref_logp'): srkl_k3(torch.zeros(2, 3), torch.zeros(3, 2), 0.5)
    with pytest.raises(ValueError, match='logits .* ref_logits'): rkl_exact(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match='ref_logp must be a torch.Tensor'): rkl_k3(torch.zeros(2), [0.0, 0.0])

def test_regularisers():
    lp, ref = t(RNG.uniform(-5, 0, (4, 7))), t(RNG.uniform(-5, 0, (4, 7)))
    assert torch.equal(NoKL()(lp, ref), torch.zeros_like(lp))
    np.testing.assert_allclose(RKL(0.3)(lp, ref).numpy(), 0.3 * np_k3(ref.numpy(), lp.numpy()), rtol=1e-9)
    np.testing.assert_allclose(SRKL(0.3, 0.8)(lp, ref).numpy(), 0.3 * np_k3(np_mix(lp.numpy(), ref.numpy(), 0.8), lp.numpy()), rtol=1e-9)
    assert matched_beta(0.04, 0.8) == pytest.approx(1.0)

# ---------------------------------------------------------------------------------------------------------------------
# Precision (float32 inside, input dtype out) and extreme log-ratios (item 8 of the reliability issue).
# ---------------------------------------------------------------------------------------------------------------------
# rtol: one rounding to the output dtype (unit roundoff 2^-8 for bf16, 2^-11 for fp16), 5% over for the float32 work;
# atol: float32's resolution of O(1) numbers that cancel near the reference (2^-24), which is also fp16's subnormal step.
TOL = {torch.bfloat16: (1.05 * 2 ** -8, 2 ** -24), torch.float16: (1.05 * 2 ** -11, 2 ** -24)}
PER_TOKEN = {'rkl_k3': rkl_k3, 'rkl_k3_grad': rkl_k3_grad, 'NoKL': NoKL(), 'RKL': RKL(0.04), 'SRKL': SRKL(0.04, 0.8),
             **{f'srkl_k3 a={a}': (lambda a: lambda lp, ref: srkl_k3(lp, ref, a))(a) for a in [0.0, 0.5, 0.8, 0.99]},
             **{f'srkl_k3_grad a={a}': (lambda a: lambda lp, ref: srkl_k3_grad(lp, ref, a))(a) for a in [0.0, 0.8]},
             'log_mixture a=0.8': lambda lp, ref: log_mixture(lp, ref, 0.8)}

def low_precision_pairs(dtype, n=3000):
    "Policy/reference log-probs in [-10, 0], near each other (as in training) and far apart, rounded to `dtype`."
    g = torch.Generator().manual_seed(8)
    logp = -torch.rand(3, n, generator=g, dtype=torch.float64) * 10
    ref = (logp + torch.randn(3, n, generator=g, dtype=torch.float64) * torch.tensor([[0.01], [0.3], [3.0]], dtype=torch.float64))
    return logp.to(dtype), ref.clamp(max=0).to(dtype)

def assert_close_to_float64(got, want, dtype, what):
    rtol, atol = TOL[dtype]
    err = (got.double() - want).abs()
    bad = err > rtol * want.abs() + atol
    rel = (err / want.abs())[want.abs() > atol]    # relative error where it means something
    assert not bad.any(), f'{what} {dtype}: {int(bad.sum())} of {bad.numel()} outside rtol={rtol:g}, atol={atol:g}; ' \
                          f'relative error median {rel.median().item():.3g}, worst {rel.max().item():.3g}'

@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize('name', list(PER_TOKEN))
def test_low_precision_inputs_match_float64_on_the_same_values(dtype, name):
    "Regression: bf16 SRKL was off by a median 11% (worst 208%) against float64 on the same values."
    fn, (logp, ref) = PER_TOKEN[name], low_precision_pairs(dtype)
    got = fn(logp, ref)
    assert got.dtype == dtype, f'{name}: returned {got.dtype} for {dtype} inputs'
    assert_close_to_float64(got, fn(logp.double(), ref.double()), dtype, name)

@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize('alpha', [0.0, 0.8])
def test_low_precision_autograd_matches_float64(dtype, alpha):
    logp, ref = low_precision_pairs(dtype)
    for fn in (rkl_k3, lambda lp, r: srkl_k3(lp, r, alpha)):
        lp, lp64 = logp.clone().requires_grad_(), logp.double().requires_grad_()
        g, = torch.autograd.grad(fn(lp, ref).sum(), lp)
        g64, = torch.autograd.grad(fn(lp64, ref.double()).sum(), lp64)
        assert g.dtype == dtype
        assert_close_to_float64(g, g64, dtype, 'autograd')

@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_exact_divergences(dtype):
    g = torch.Generator().manual_seed(9)
    z, zr = (torch.randn(500, 20, generator=g, dtype=torch.float64) * 3).to(dtype), (torch.randn(500, 20, generator=g, dtype=torch.float64) * 3).to(dtype)
    for fn in (rkl_exact, lambda a, b: srkl_exact(a, b, 0.8)):
        got = fn(z, zr)
        assert got.dtype == dtype
        assert_close_to_float64(got, fn(z.double(), zr.double()), dtype, 'exact')

def extreme_pairs(dtype):
    "log(pi/pi_ref) from -200 to 200 with both log-probs valid (<= 0): logp = min(x, 0), ref_logp = min(-x, 0)."
    x = torch.cat([torch.linspace(-200, 200, 81, dtype=torch.float64), torch.tensor([-100., -89., -88.5, 88.5, 89., 100.], dtype=torch.float64)]).sort().values
    return x, (-torch.relu(-x)).to(dtype), (-torch.relu(x)).to(dtype)

@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize('alpha', [None, 0.0, 0.5, 0.8, 0.99])   # None: RKL
def test_extreme_log_ratios_finite_with_the_right_sign(dtype, alpha):
    "RKL overflowed float32 at log(pi_ref/pi) ~ 89 and SRKL's gradient was NaN at 100: values and gradients stay finite."
    x, logp, ref = extreme_pairs(dtype)
    k_fn = rkl_k3 if alpha is None else (lambda lp, r: srkl_k3(lp, r, alpha))
    g_fn = rkl_k3_grad if alpha is None else (lambda lp, r: srkl_k3_grad(lp, r, alpha))
    lp = logp.clone().requires_grad_()
    k = k_fn(lp, ref)
    g, = torch.autograd.grad(k.sum(), lp)
    closed = g_fn(logp, ref)
    for v, what in ((k, 'value'), (g, 'autograd gradient'), (closed, 'closed-form gradient')):
        assert v.dtype == dtype and torch.isfinite(v).all(), f'{what} not finite at log-ratio {x[~torch.isfinite(v)].tolist()}'
    assert (k >= 0).all()
    left, right = x < 0, x > 0                     # abandoning: push logp up (gradient < 0); exploring: >= 0
    assert (g[left] < 0).all() and (closed[left] < 0).all() and (g[right] >= 0).all() and (closed[right] >= 0).all()
    assert (k[left].diff() <= 0).all() and (k[right].diff() >= 0).all()   # penalty still grows away from the reference
    assert k[0] > 1e18 and g[0] < -1e18            # a huge penalty and a huge pull back up, not a capped one
    rtol = 2 ** -7 if dtype == torch.bfloat16 else 1e-5
    # autograd sums (alpha/r - 1) from float32 terms near 1: absolute error ~1e-7 where the closed form is ~0
    np.testing.assert_allclose(g.double().numpy(), closed.double().numpy(), rtol=rtol, atol=1e-7)
    ordinary = x.abs() <= 40                       # away from the bound: the exact float64 values
    for got, want in ((k, k_fn(logp.double(), ref.double())), (closed, g_fn(logp.double(), ref.double()))):
        np.testing.assert_allclose(got.detach().double()[ordinary].numpy(), want[ordinary].numpy(), rtol=rtol, atol=2 ** -24)

@pytest.mark.parametrize('reg', [RKL(0.04), SRKL(0.04, 0.8)], ids=repr)
def test_extreme_token_keeps_the_loss_finite(reg):
    "A token the policy drove to e^-150 that the reference favours, next to masked padding: finite loss and gradients."
    from carerft.algos import GRPO, DAPO
    logp = torch.tensor([[-0.5, -150.0, 0.0], [-1.0, -2.0, 0.0]], requires_grad=True)   # (N, T) float32, 0 on padding
    ref = torch.tensor([[-0.7, -0.1, 0.0], [-1.2, -1.5, 0.0]])
    mask = torch.tensor([[1., 1., 0.], [1., 1., 0.]])
    for algo in (GRPO(), DAPO()):
        loss, stats = algo.loss(logp, logp.detach(), ref, torch.tensor([1.0, -1.0]), mask, reg)
        g, = torch.autograd.grad(loss, logp)
        assert math.isfinite(loss.item()) and math.isfinite(stats['penalty']) and torch.isfinite(g).all()
        assert g[0, 1] < 0                          # gradient descent raises the abandoned token's log-prob
