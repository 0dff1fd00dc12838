"Calibration metrics: hand cases, edge rules, input validation, and parity with scikit-learn, netcal and torchmetrics."
import math
import numpy as np
import pytest
import torch
from carerft.calibration import (EDGE_ATOL, bin_width, bin_mass, calibration_bins, ece, mce, brier, log_score, auroc,
                                 risk_coverage, aurc, self_consistency, sample_consistency, answer_prob,
                                 answer_token_prob, parse_verbal_confidence, bootstrap_ci, reliability_diagram)

def data(n=3000, seed=0, power=2.0):
    "Continuous confidences and correctness drawn with P(correct) = c**power (overconfident for power > 1)."
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 1, n)
    return c, (rng.uniform(size=n) < c ** power).astype(float)

def ece_loop(c, y, M):
    "Independent float64 reference: explicit interval tests with exact rational edges k/M."
    from fractions import Fraction
    total = 0.0
    for k in range(M):
        lo, hi = Fraction(k, M), Fraction(k + 1, M)
        inb = [i for i, v in enumerate(c) if lo <= Fraction(v).limit_denominator(10**6) < hi or (k == M - 1 and v == 1.0)]
        if inb: total += len(inb) * abs(np.mean(y[inb]) - np.mean(c[inb]))
    return total / len(c)

# ---------------------------------------------------------------- edge rule and confidence 1.0
def test_grid_values_land_in_the_bin_they_start():
    for M in (5, 10, 20, 100):
        for N in (M, 2 * M, 3 * M):
            grid = np.arange(N + 1) / N
            assert bin_width(grid, M).tolist() == [min(k * M // N, M - 1) for k in range(N + 1)]

def test_confidence_one_is_in_the_last_bin_not_a_hidden_one():
    b = calibration_bins([1.0, 0.95, 1.0], [1, 0, 0], n_bins=10)
    assert b['count'].tolist() == [0] * 9 + [3] and len(b['count']) == 10
    assert ece([1.0, 0.9], [0, 1], n_bins=10) == pytest.approx(abs(0.5 - 0.95))

def test_edge_tolerance_is_small():
    assert bin_width(np.array([0.3 - 2 * EDGE_ATOL, 0.3 - 0.5 * EDGE_ATOL]), 10).tolist() == [2, 3]

@pytest.mark.parametrize('M', [1, 3, 10, 15])
def test_ece_matches_exact_rational_reference(M):
    rng = np.random.default_rng(M)
    c = np.r_[rng.integers(0, 21, 200) / 20, rng.uniform(size=200), [0.0, 1.0]]; y = (rng.uniform(size=402) < c).astype(float)
    assert ece(c, y, M) == pytest.approx(ece_loop(c, y, M), abs=1e-12)

def test_mass_bins_are_roughly_equal_and_keep_ties():
    c, y = data(1000)
    assert set(np.bincount(bin_mass(c, 10)).tolist()) == {100}
    grid = np.random.default_rng(0).integers(0, 5, 1000) / 4
    k = bin_mass(grid, 10)
    for v in np.unique(grid): assert len(set(k[grid == v])) == 1
    assert ece(grid, (grid > 0.5).astype(float), 10, bin_mass) == pytest.approx(ece(grid, (grid > 0.5).astype(float), 5))

def test_mce_is_max_gap():
    assert mce([0.1, 0.9, 0.9], [0, 1, 0], n_bins=10) == pytest.approx(0.4)
    assert mce([0.1, 0.9], [0, 1]) <= ece([0.1, 0.9], [0, 1]) + 0.1

# ---------------------------------------------------------------- input handling
@pytest.mark.parametrize('metric', [ece, mce, brier, log_score, auroc, aurc])
@pytest.mark.parametrize('conf,corr,msg', [
    ([0.5, 1.01], [1, 0], 'confidence must lie in'), ([-0.1], [1], 'confidence must lie in'),
    ([0.5, float('nan')], [1, 0], 'confidence must lie in'), ([0.5], [1, 0], 'same length'), ([], [], 'empty'),
    ([0.5], [0.5], 'correct must be 0/1'), ([[0.5]], [[1]], '1-D'), ('abc', [1, 1, 1], 'sequence of numbers')])
def test_bad_input_raises(metric, conf, corr, msg):
    with pytest.raises(ValueError, match=msg): metric(conf, corr)

def test_logits_are_not_squashed():
    with pytest.raises(ValueError, match='not logits'): ece(torch.tensor([2.3, -1.0]), torch.tensor([1, 0]))

def test_n_bins_validated():
    for bad in (0, -1, 2.5, True, '10'):
        with pytest.raises(ValueError, match='n_bins'): ece([0.5], [1], n_bins=bad)

@pytest.mark.parametrize('metric', [ece, mce, brier, log_score, auroc, aurc])
def test_lists_arrays_tensors_agree_and_return_float(metric):
    c, y = data(200, seed=3)
    ref = metric(c.tolist(), y.tolist())
    assert type(ref) is float
    for cc, yy in [(c, y), (torch.tensor(c), torch.tensor(y)), (torch.tensor(c, dtype=torch.float32), torch.tensor(y).bool())]:
        assert metric(cc, yy) == pytest.approx(ref, abs=1e-6)

# ---------------------------------------------------------------- parity with scikit-learn
@pytest.mark.parametrize('seed', range(3))
def test_brier_and_log_loss_match_sklearn(seed):
    from sklearn.metrics import brier_score_loss, log_loss
    c, y = data(2000, seed)
    c = np.clip(c, 1e-6, 1 - 1e-6)
    assert brier(c, y) == pytest.approx(brier_score_loss(y, c), abs=1e-14)
    assert log_score(c, y) == pytest.approx(log_loss(y, c), rel=1e-12)

@pytest.mark.parametrize('seed', range(3))
def test_auroc_matches_sklearn_with_and_without_ties(seed):
    from sklearn.metrics import roc_auc_score
    c, y = data(2000, seed)
    assert auroc(c, y) == pytest.approx(roc_auc_score(y, c), abs=1e-12)
    grid = np.round(c * 8) / 8                                   # heavy ties
    assert auroc(grid, y) == pytest.approx(roc_auc_score(y, grid), abs=1e-12)

def test_auroc_nan_with_one_class():
    assert math.isnan(auroc([0.1, 0.9], [1, 1])) and math.isnan(auroc([0.1, 0.9], [0, 0]))

# ---------------------------------------------------------------- parity with netcal and torchmetrics (continuous)
@pytest.mark.parametrize('M', [5, 10, 15])
@pytest.mark.parametrize('seed', range(3))
def test_ece_matches_netcal_on_continuous(M, seed):
    netcal = pytest.importorskip('netcal.metrics')
    c, y = data(3000, seed)
    assert ece(c, y, M) == pytest.approx(float(netcal.ECE(bins=M).measure(c, y)), abs=1e-9)

@pytest.mark.parametrize('M', [5, 10, 15])
@pytest.mark.parametrize('seed', range(3))
def test_ece_and_mce_match_torchmetrics_on_continuous(M, seed):
    tm = pytest.importorskip('torchmetrics.functional.classification')
    c, y = data(3000, seed)
    ct, yt = torch.tensor(c), torch.tensor(y).long()
    assert ece(c, y, M) == pytest.approx(tm.binary_calibration_error(ct, yt, n_bins=M).item(), abs=1e-12)
    assert mce(c, y, M) == pytest.approx(tm.binary_calibration_error(ct, yt, n_bins=M, norm='max').item(), abs=1e-12)

def test_libraries_disagree_on_grid_exactly_where_documented():
    "A value on 0.3 (an edge numpy.linspace rounds up) and a value of 1.0: netcal / torchmetrics move them."
    netcal = pytest.importorskip('netcal.metrics'); tm = pytest.importorskip('torchmetrics.functional.classification')
    c, y = np.array([0.3, 0.35, 1.0, 0.95]), np.array([0.0, 1.0, 0.0, 1.0])
    ours = ece(c, y)                                                   # bins 3: {0.3, 0.35}; 9: {0.95, 1.0}
    assert ours == pytest.approx((2 * abs(0.5 - 0.325) + 2 * abs(0.5 - 0.975)) / 4)
    assert float(netcal.ECE(bins=10).measure(c, y)) == pytest.approx((0.3 + 0.65 + 2 * abs(0.5 - 0.975)) / 4, abs=1e-9)
    assert tm.binary_calibration_error(torch.tensor(c), torch.tensor(y).long(), n_bins=10).item() == \
        pytest.approx((0.3 + 0.65 + 1.0 + 0.05) / 4)

# ---------------------------------------------------------------- risk-coverage
def test_aurc_equals_mean_selective_risk_without_ties():
    c, y = data(500, 4)
    order = np.argsort(-c)
    ref = np.mean(np.cumsum(1 - y[order]) / np.arange(1, len(c) + 1))
    assert aurc(c, y) == pytest.approx(ref, abs=1e-12)
    cov, risk, thr = risk_coverage(c, y)
    assert cov[-1] == 1.0 and risk[-1] == pytest.approx(1 - y.mean()) and np.all(np.diff(thr) < 0)

def test_aurc_does_not_depend_on_order_of_ties():
    c = np.array([0.5, 0.5, 0.5, 0.9]); y = np.array([1.0, 0.0, 0.0, 1.0])
    assert aurc(c, y) == aurc(c[::-1], y[::-1]) == pytest.approx(0.25 * 0 + 0.75 * 0.5)

# ---------------------------------------------------------------- confidence sources
def test_self_consistency_against_counter_reference():
    from collections import Counter
    rng = np.random.default_rng(0)
    for _ in range(200):
        answers = [str(a) for a in rng.integers(0, 4, rng.integers(1, 12))]
        counts = Counter(answers); top = max(counts.values())
        first = next(a for a in answers if counts[a] == top)
        assert self_consistency(answers) == (first, top / len(answers))
        assert sample_consistency(answers) == [counts[a] / len(answers) for a in answers]

def test_self_consistency_with_is_equivalent():
    from carerft.answers import is_equivalent
    assert self_consistency(['2', r'\frac{1}{2}', '0.5', '2', '1/2'], same=is_equivalent) == (r'\frac{1}{2}', 0.6)

@pytest.mark.parametrize('bad', [[], 'abc', None, 5])
def test_self_consistency_bad_input(bad):
    with pytest.raises(ValueError, match='answers'): self_consistency(bad)

def test_answer_probabilities():
    logp = torch.log(torch.rand(4, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    mask = torch.zeros(4, 7); mask[:, 2:5] = 1
    ref = torch.exp(logp[:, 2:5]).prod(-1)
    assert torch.allclose(answer_prob(logp, mask), ref)
    assert torch.allclose(answer_token_prob(logp, mask), ref ** (1 / 3))
    with pytest.raises(ValueError, match='same shape'): answer_prob(logp, mask[:, :3])
    with pytest.raises(ValueError, match='2-D'): answer_prob(logp[0], mask[0])

@pytest.mark.parametrize('text,want', [('Confidence: 85%', 0.85), ('I am 70 percent confident', 0.7),
    ('confidence level: 0.35', 0.35), ('Certainty: 9/10', 0.9), ('Probability that this is correct: 42/100', 0.42),
    ('answer 5 (confidence 2%)', 0.02), ('Confidence: high', None), ('Confidence: 250', None), ('', None)])
def test_verbal_confidence(text, want):
    got = parse_verbal_confidence(text)
    assert got == pytest.approx(want) if want is not None else got is None

# ---------------------------------------------------------------- bootstrap and plot
def test_bootstrap_interval_matches_normal_approximation_for_the_mean():
    c, y = data(3000, 5)
    est, lo, hi = bootstrap_ci(brier, c, y, n_boot=400, seed=1)
    se = np.std((c - y) ** 2) / np.sqrt(len(c))
    assert est == brier(c, y) and lo < est < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.15)
    assert bootstrap_ci(brier, c, y, n_boot=50, seed=1) == bootstrap_ci(brier, c, y, n_boot=50, seed=1)

def test_bootstrap_with_undefined_metric():
    est, lo, hi = bootstrap_ci(auroc, [0.2, 0.9], [1, 1], n_boot=20)
    assert math.isnan(est) and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match='level'): bootstrap_ci(brier, [0.5], [1], level=95)

def test_reliability_diagram_bars_are_the_bins():
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    c, y = data(500, 6)
    ax = reliability_diagram(c, y, n_bins=5)
    b = calibration_bins(c, y, 5)
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx(b['accuracy'].tolist())
    assert [t.get_text() for t in ax.texts] == [str(int(n)) for n in b['count']]
    plt.close('all')
