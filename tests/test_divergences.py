"Property sweeps of carerft.divergences against independent float64 NumPy formulas (no torch in the reference)."
import math
import numpy as np
import pytest
import torch
from carerft.divergences import log_mixture, rkl_k3, srkl_k3, rkl_exact, srkl_exact, NoKL, RKL, SRKL, matched_beta

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
