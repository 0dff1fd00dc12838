"""carerft.algos against an independent float64 reference written with plain Python loops (no tensors, no autograd):
loss values, statistics and gradients (central finite differences of the reference) for every algorithm x regulariser
pair, on random masks with non-trivial old_logp. Plus advantages, dynamic sampling, dtypes and bad input."""
import math, statistics, warnings
import pytest
import torch
from carerft.algos import (GRPO, DAPO, GSPO, group_advantages, filter_groups, dynamic_sample, soft_overlong_punishment,
                           clipped_surrogate, token_mean, sequence_mean, IS_MODES, truncated_is_weights)
from carerft.divergences import NoKL, RKL, SRKL

# ---------------------------------------------------------------------------------------------------------------------
# The reference: one function per formula in DESIGN.md, lists of floats in, a float out.
# ---------------------------------------------------------------------------------------------------------------------
def ref_penalty(reg, lp, rlp):
    "beta * k3 per token, written from the formulas: RKL r = pi_ref/pi; SRKL r = (alpha pi + (1-alpha) pi_ref)/pi."
    kind = reg[0]
    if kind == 'none': return 0.0
    if kind == 'rkl': r = math.exp(rlp - lp)
    else: alpha = reg[2]; r = (alpha * math.exp(lp) + (1 - alpha) * math.exp(rlp)) / math.exp(lp)
    return reg[1] * (r - 1 - math.log(r))

def ref_surrogate(ratio, A, lo, hi):
    return -min(ratio * A, min(max(ratio, 1 - lo), 1 + hi) * A)

def ref_loss(algo, logp, old, ref, adv, mask, reg):
    "Loss and stats of `algo` = (name, eps_low, eps_high) by loops over sequences and tokens."
    name, lo, hi = algo
    N, T = len(logp), len(logp[0])
    per_seq, tok_sum, tok_n = [], 0.0, 0
    low = high = ratio_sum = pen_sum = 0.0; n_units = 0
    for i in range(N):
        toks = [t for t in range(T) if mask[i][t]]
        pens = [ref_penalty(reg, logp[i][t], ref[i][t]) for t in toks]
        pen_sum += sum(pens)
        if name == 'gspo':
            s = math.exp(sum(logp[i][t] - old[i][t] for t in toks) / max(len(toks), 1))
            per_seq.append((ref_surrogate(s, adv[i], lo, hi) + sum(pens) / len(toks)) if toks else 0.0)
            low += s < 1 - lo and adv[i] < 0; high += s > 1 + hi and adv[i] > 0; ratio_sum += s; n_units += 1
            continue
        terms = []
        for t, p in zip(toks, pens):
            rho = math.exp(logp[i][t] - old[i][t])
            terms.append(ref_surrogate(rho, adv[i], lo, hi) + p)
            low += rho < 1 - lo and adv[i] < 0; high += rho > 1 + hi and adv[i] > 0; ratio_sum += rho; n_units += 1
        per_seq.append(sum(terms) / len(terms) if terms else 0.0)
        tok_sum += sum(terms); tok_n += len(terms)
    loss = tok_sum / max(tok_n, 1) if name == 'dapo' else sum(per_seq) / N
    n_tok = sum(map(sum, mask))
    stats = dict(loss=loss, penalty=pen_sum / n_tok, clip_low_frac=low / n_units, clip_high_frac=high / n_units,
                 clip_frac=(low + high) / n_units, ratio_mean=ratio_sum / n_units)
    return loss, stats

def ref_grad(algo, logp, old, ref, adv, mask, reg, h=1e-6):
    "Central finite differences of the reference loss with respect to every logp entry."
    g = [[0.0] * len(logp[0]) for _ in logp]
    for i in range(len(logp)):
        for t in range(len(logp[0])):
            up = [row[:] for row in logp]; dn = [row[:] for row in logp]
            up[i][t] += h; dn[i][t] -= h
            g[i][t] = (ref_loss(algo, up, old, ref, adv, mask, reg)[0] - ref_loss(algo, dn, old, ref, adv, mask, reg)[0]) / (2 * h)
    return g

ALGOS = {'GRPO': (GRPO(), ('grpo', 0.2, 0.2)), 'DAPO': (DAPO(), ('dapo', 0.2, 0.28)), 'GSPO': (GSPO(), ('gspo', 3e-4, 4e-4))}
REGS = {'NoKL': (NoKL(), ('none',)), 'RKL': (RKL(0.04), ('rkl', 0.04)), 'SRKL': (SRKL(0.04, 0.8), ('srkl', 0.04, 0.8))}

def make_batch(seed, masks='random', N=6, T=7, gspo=False):
    "Random float64 inputs; old_logp far enough off-policy that both clip sides are hit (GSPO: rows in and out of its tiny range)."
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(N, T, generator=g, dtype=torch.float64) * 4 - 0.01
    scale = torch.full((N, 1), 0.35, dtype=torch.float64)
    if gspo: scale[: N // 2] = 2e-4
    old_logp = logp + scale * torch.randn(N, T, generator=g, dtype=torch.float64)
    ref_logp = logp + torch.randn(N, T, generator=g, dtype=torch.float64)
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    if masks == 'prefix':
        mask = (torch.arange(T) < torch.randint(1, T + 1, (N, 1), generator=g)).double()
    else:
        mask = (torch.rand(N, T, generator=g) < 0.6).double(); mask[:, 0] = 1.0
        if masks == 'empty_row': mask[1] = 0.0
    if gspo:   # make sure the last (large-ratio) sequence is on the clipped side of its advantage's sign
        seq = ((logp - old_logp) * mask)[-1].sum() / mask[-1].sum()
        adv[-1] = adv[-1].abs() * seq.sign()
    return logp, old_logp, ref_logp, adv, mask

@pytest.mark.parametrize('masks', ['random', 'prefix', 'empty_row'])
@pytest.mark.parametrize('reg_name', list(REGS))
@pytest.mark.parametrize('algo_name', list(ALGOS))
def test_loss_and_grad_match_reference(algo_name, reg_name, masks):
    algo, spec = ALGOS[algo_name]; reg, reg_spec = REGS[reg_name]
    seed = 100 * list(ALGOS).index(algo_name) + 10 * list(REGS).index(reg_name) + ['random', 'prefix', 'empty_row'].index(masks)
    logp, old_logp, ref_logp, adv, mask = make_batch(seed, masks, gspo=algo_name == 'GSPO')
    lp = logp.clone().requires_grad_()
    loss, stats = algo.loss(lp, old_logp, ref_logp, adv, mask, reg)
    loss.backward()
    args = (spec, logp.tolist(), old_logp.tolist(), ref_logp.tolist(), adv.tolist(), mask.tolist(), reg_spec)
    want, want_stats = ref_loss(*args)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(want, abs=1e-12, rel=1e-10)
    for k, v in want_stats.items(): assert stats[k] == pytest.approx(v, abs=1e-12), k
    assert 0 < stats['clip_low_frac'] + stats['clip_high_frac'] < 1   # both regions of the surrogate are exercised
    torch.testing.assert_close(lp.grad, torch.tensor(ref_grad(*args), dtype=torch.float64), atol=2e-8, rtol=1e-6)
    assert (lp.grad[mask == 0] == 0).all()                         # padding never gets a gradient

def test_float32_and_mask_dtypes():
    logp, old_logp, ref_logp, adv, mask = make_batch(7)
    want, _ = ref_loss(('dapo', 0.2, 0.28), logp.tolist(), old_logp.tolist(), ref_logp.tolist(), adv.tolist(), mask.tolist(), ('srkl', 0.04, 0.8))
    for m in [mask, mask.bool(), mask.long(), mask.float()]:
        loss, _ = DAPO().loss(logp.float(), old_logp.float(), ref_logp.float(), adv.float(), m, SRKL(0.04, 0.8))
        assert loss.dtype == torch.float32 and loss.item() == pytest.approx(want, abs=1e-5)

def test_on_policy_ratio_is_one_and_gradient_is_policy_gradient():
    logp, _, ref_logp, adv, mask = make_batch(3)
    for algo, agg in [(GRPO(), sequence_mean), (DAPO(), token_mean), (GSPO(), sequence_mean)]:
        lp = logp.clone().requires_grad_()
        loss, stats = algo.loss(lp, lp.detach(), ref_logp, adv, mask, NoKL())
        assert stats['ratio_mean'] == 1.0 and stats['clip_frac'] == 0.0
        lp2 = logp.clone().requires_grad_()
        (g_want,) = torch.autograd.grad(agg(-adv[:, None] * lp2, mask), lp2)   # REINFORCE with a group baseline
        (g,) = torch.autograd.grad(loss, lp)
        torch.testing.assert_close(g, g_want)

@pytest.mark.parametrize('A', [1.0, -1.0])
@pytest.mark.parametrize('algo_name', list(ALGOS))
def test_gradient_exactly_zero_in_clipped_region(algo_name, A):
    algo, (_, lo, hi) = ALGOS[algo_name]
    for log_ratio in [math.log(1 - lo) - 0.05, math.log(1 - lo) + 1e-5, 0.0, math.log(1 + hi) - 1e-5, math.log(1 + hi) + 0.05]:
        lp = torch.full((1, 3), -1.0, dtype=torch.float64, requires_grad=True)
        old = lp.detach() - log_ratio                         # every token (and the sequence) has this log ratio
        loss, stats = algo.loss(lp, old, None, torch.tensor([A], dtype=torch.float64), torch.ones(1, 3), NoKL())
        (g,) = torch.autograd.grad(loss, lp)
        clipped = (A > 0 and log_ratio > math.log(1 + hi)) or (A < 0 and log_ratio < math.log(1 - lo))
        assert (g == 0).all() if clipped else (g != 0).all(), (log_ratio, g)
        assert stats['clip_frac'] == float(clipped)

def test_group_advantages_against_statistics_module():
    g = torch.Generator().manual_seed(0)
    for G in [2, 3, 8]:
        r = torch.randint(0, 3, (5 * G,), generator=g).double()
        adv = group_advantages(r, G); adv0 = group_advantages(r, G, scale=False)
        for b in range(5):
            grp = r[b * G:(b + 1) * G].tolist(); mu, sd = statistics.mean(grp), statistics.stdev(grp)   # stdev: n - 1
            assert adv[b * G:(b + 1) * G].tolist() == pytest.approx([(x - mu) / (sd + 1e-4) for x in grp], abs=1e-12)
            assert adv0[b * G:(b + 1) * G].tolist() == pytest.approx([x - mu for x in grp], abs=1e-12)
    assert group_advantages([1, 0, 1, 1], 2).dtype == torch.get_default_dtype()   # lists and ints accepted

@pytest.mark.parametrize('bad', [0, 1, -2, 2.5, True, '2', None])
def test_group_size_errors(bad):
    with pytest.raises(ValueError, match='group_size'): group_advantages(torch.ones(4), bad)
    with pytest.raises(ValueError, match='group_size'): filter_groups(torch.ones(4), bad)

def test_rewards_errors():
    with pytest.raises(ValueError, match=r'rewards.*group_size=3'): group_advantages(torch.ones(4), 3)
    with pytest.raises(ValueError, match='rewards'): group_advantages(torch.ones(2, 2), 2)
    with pytest.raises(ValueError, match='rewards'): group_advantages(torch.ones(0), 2)
    with pytest.raises(ValueError, match='finite'): group_advantages(torch.tensor([1., math.inf]), 2)

def test_loss_input_errors():
    logp, old_logp, ref_logp, adv, mask = make_batch(1)
    for algo in [GRPO(), DAPO(), GSPO()]:
        with pytest.raises(ValueError, match=r'old_logp.*\(6, 7\)'): algo.loss(logp, old_logp[:, 1:], ref_logp, adv, mask, NoKL())
        with pytest.raises(ValueError, match='ref_logp'): algo.loss(logp, old_logp, ref_logp.T, adv, mask, RKL())
        with pytest.raises(ValueError, match=r'ref_logp.*SRKL'): algo.loss(logp, old_logp, None, adv, mask, SRKL())
        with pytest.raises(ValueError, match='mask'): algo.loss(logp, old_logp, ref_logp, adv, mask[:3], NoKL())
        with pytest.raises(ValueError, match=r'adv.*N=6'): algo.loss(logp, old_logp, ref_logp, adv[:, None], mask, NoKL())
        with pytest.raises(ValueError, match=r'adv.*N=6'): algo.loss(logp, old_logp, ref_logp, adv[:5], mask, NoKL())
        with pytest.raises(ValueError, match='logp'): algo.loss(logp[0], old_logp[0], ref_logp[0], adv, mask[0], NoKL())
        with pytest.raises(ValueError, match='old_logp'): algo.loss(logp, old_logp.tolist(), ref_logp, adv, mask, NoKL())
        algo.loss(logp, old_logp, None, adv, mask, RKL(beta=0.0))   # beta = 0 needs no reference

@pytest.mark.parametrize('make', [lambda: GRPO(eps=-0.1), lambda: GRPO(eps=1.0), lambda: DAPO(eps_low=float('nan')),
                                  lambda: DAPO(eps_high=-1), lambda: GSPO(eps_low='x'), lambda: DAPO(overlong_buffer=0),
                                  lambda: DAPO(overlong_penalty=-1.0)])
def test_constructor_errors(make):
    with pytest.raises(ValueError, match='eps_low|eps_high|overlong'): make()

def test_overlong_shaping_matches_dapo_formula():
    L_max, L_cache = 50, 10
    lengths = list(range(0, 60))
    def r_length(L):   # DAPO paper, eq. (13)
        if L <= L_max - L_cache: return 0.0
        if L <= L_max: return ((L_max - L_cache) - L) / L_cache
        return -1.0
    got = DAPO(overlong_buffer=L_cache, overlong_penalty=0.5).shape_rewards(torch.ones(60, dtype=torch.float64), torch.tensor(lengths), L_max)
    assert got.tolist() == pytest.approx([1 + 0.5 * r_length(L) for L in lengths], abs=1e-12)
    assert soft_overlong_punishment(lengths, L_max, L_cache).tolist() == pytest.approx([r_length(L) for L in lengths], abs=1e-6)
    with pytest.raises(ValueError, match='max_new_tokens'): DAPO().shape_rewards(torch.ones(2), torch.ones(2), 0)

def test_mask_truncated_removes_rows_from_dapo_loss():
    logp, old_logp, ref_logp, adv, mask = make_batch(5)
    truncated = torch.tensor([False, True, False, False, True, False])
    m = DAPO(mask_truncated=True).completion_mask(mask, truncated)
    keep = ~truncated
    l_masked, _ = DAPO().loss(logp, old_logp, ref_logp, adv, m, RKL())
    l_subset, _ = DAPO().loss(logp[keep], old_logp[keep], ref_logp[keep], adv[keep], mask[keep], RKL())
    assert l_masked.item() == pytest.approx(l_subset.item(), abs=1e-12)
    assert torch.equal(GRPO().completion_mask(mask, truncated), mask)

def test_dynamic_sample_fills_then_stops_and_warns():
    calls = []
    def sample():
        calls.append(1); k = len(calls)
        rewards = torch.tensor([[1., 1., 1.], [0., 1., 0.], [0., 0., 0.]]).roll(k, 0).reshape(-1)   # one useful group per call
        return rewards, [f'call{k}-group{j}' for j in range(3)]
    groups, rewards, info = dynamic_sample(sample, n_groups=2, group_size=3, max_rounds=5)
    assert len(calls) == 2 and info == dict(rounds=2, sampled=6, kept=2) and len(groups) == 2 and rewards.shape == (6,)
    assert filter_groups(rewards, 3).all()
    calls.clear()
    with pytest.warns(UserWarning, match='max_rounds=3'):
        groups, rewards, info = dynamic_sample(sample, n_groups=10, group_size=3, max_rounds=3)
    assert len(calls) == 3 and info['kept'] == 3 and len(groups) == 3
    with pytest.warns(UserWarning, match='max_rounds=1'):
        groups, rewards, info = dynamic_sample(lambda: (torch.zeros(6), ['a', 'b']), n_groups=1, group_size=3, max_rounds=1)
    assert groups == [] and rewards.numel() == 0
    with pytest.raises(ValueError, match='group_size=3'): dynamic_sample(lambda: (torch.zeros(5), ['a', 'b']), 1, 3)
    for kw, name in [(dict(n_groups=0), 'n_groups'), (dict(max_rounds=0), 'max_rounds'), (dict(group_size=1), 'group_size')]:
        args = dict(n_groups=1, group_size=3, max_rounds=2) | kw
        with pytest.raises(ValueError, match=name): dynamic_sample(sample, **args)

def test_clipped_surrogate_matches_reference_elementwise():
    ratio = torch.linspace(0.3, 2.0, 171, dtype=torch.float64)
    for A in [-2.0, -0.3, 0.0, 0.7, 1.5]:
        got = clipped_surrogate(ratio, torch.tensor(A, dtype=torch.float64), 0.2, 0.28)
        assert got.tolist() == pytest.approx([ref_surrogate(r, A, 0.2, 0.28) for r in ratio.tolist()], abs=1e-15)

# ---------------------------------------------------------------------------------------------------------------------
# Truncated importance sampling of the sampler mismatch (issue 11, item 7): a loop reference, TRL's semantics.
# ---------------------------------------------------------------------------------------------------------------------
def ref_is_weight(old, smp, mask, mode, cap):
    "Per-token weights from lists: w = exp(old - sampler) per token, or exp(sum over the row's tokens) per sequence."
    out = []
    for o_row, s_row, m_row in zip(old, smp, mask):
        seq = math.exp(sum((o - s) * m for o, s, m in zip(o_row, s_row, m_row)))
        row = []
        for o, s, m in zip(o_row, s_row, m_row):
            w = seq if mode.startswith('sequence') else math.exp((o - s) * m)
            row.append(min(w, cap) if mode.endswith('truncate') else (w if w <= cap else 0.0))
        out.append(row)
    return out

@pytest.mark.parametrize('mode', IS_MODES)
def test_truncated_is_weights_match_the_loop_reference(mode):
    g = torch.Generator().manual_seed(7)
    for cap in (1.0, 1.5, 3.0, 10.0):
        old = -torch.rand(5, 6, generator=g, dtype=torch.float64) * 3
        smp = old + torch.randn(5, 6, generator=g, dtype=torch.float64) * 0.4
        mask = (torch.rand(5, 6, generator=g) > 0.3).double()
        got = truncated_is_weights(old, smp, mask, mode, cap)
        want = ref_is_weight(old.tolist(), smp.tolist(), mask.tolist(), mode, cap)
        assert got.tolist() == [pytest.approx(r, rel=1e-12) for r in want]
        assert (got <= cap).all() and (got >= 0).all()

@pytest.mark.parametrize('algo', [GRPO(), DAPO(), GSPO()], ids=repr)
def test_is_weight_scales_the_surrogate_gradient_only(algo):
    "loss(w) gradient = gradient of aggregate(w * surrogate) + gradient of aggregate(penalty), for any w."
    g = torch.Generator().manual_seed(3)
    N, T = 6, 5
    logp = (-torch.rand(N, T, generator=g, dtype=torch.float64) * 2).requires_grad_()
    old = logp.detach() + torch.randn(N, T, generator=g, dtype=torch.float64) * 0.05
    ref = logp.detach() - 0.2
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    mask = (torch.rand(N, T, generator=g) > 0.2).double()
    w = torch.rand(N, T, generator=g, dtype=torch.float64) * 2
    loss, stats = algo.loss(logp, old, ref, adv, mask, RKL(0.1), is_weight=w)
    (grad,) = torch.autograd.grad(loss, logp)
    ratio = torch.exp(algo.log_ratio(logp, old, mask))
    pg = clipped_surrogate(ratio, adv[:, None], algo.eps_low, algo.eps_high)
    want = algo.aggregate(w * pg, mask) + algo.aggregate(RKL(0.1)(logp, ref), mask)
    (want_grad,) = torch.autograd.grad(want, logp)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-14)
    _, plain = algo.loss(logp, old, ref, adv, mask, RKL(0.1))
    assert stats['penalty'] == pytest.approx(plain['penalty'], rel=1e-12)   # the penalty never sees the weight

def test_truncated_is_weights_bad_input():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="mode must be one of"):
        truncated_is_weights(x, x, x, 'token_clip')
    for cap in (0, -1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match='cap must be a finite number > 0'):
            truncated_is_weights(x, x, x, cap=cap)
    with pytest.raises(ValueError, match='is_weight'):
        GRPO().loss(x, x, x, torch.zeros(2), x, NoKL(), is_weight=x[:, :2])


# ---- aggregation and truncation masking as options of every algorithm (the paper's loss for GRPO and GSPO) ----
def test_grpo_with_token_mean_is_dapo_with_equal_clips():
    torch.manual_seed(0)
    logp, old = torch.randn(4, 6), torch.randn(4, 6)
    mask = torch.ones(4, 6)
    mask[0, 2:] = 0
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    a = GRPO(aggregate=token_mean).loss(logp, old, None, adv, mask, NoKL())[0]
    b = DAPO(0.2, 0.2, dynamic_sampling=False, overlong_penalty=0).loss(logp, old, None, adv, mask, NoKL())[0]
    assert torch.allclose(a, b, atol=1e-7)
    assert (a - GRPO().loss(logp, old, None, adv, mask, NoKL())[0]).abs() > 1e-3   # the option changes the loss


@pytest.mark.parametrize('make', [GRPO, DAPO, GSPO])
def test_mask_truncated_for_every_algorithm(make):
    mask, truncated = torch.ones(3, 4), torch.tensor([False, True, False])
    assert torch.equal(make().completion_mask(mask, truncated), mask)
    want = torch.tensor([[1.0] * 4, [0.0] * 4, [1.0] * 4])
    assert torch.equal(make(mask_truncated=True).completion_mask(mask, truncated), want)
    with pytest.raises(ValueError, match='mask_truncated must be True or False, got 1'): make(mask_truncated=1)


def test_bad_aggregate_and_distinct_reprs():
    with pytest.raises(ValueError, match='aggregate must be token_mean or sequence_mean'): GRPO(aggregate=torch.mean)
    # config.json records repr(algo) and resume compares it: runs with different options must not look the same
    reprs = [repr(a) for a in (GRPO(), GRPO(aggregate=token_mean), GRPO(mask_truncated=True), DAPO(),
                               DAPO(mask_truncated=True), DAPO(overlong_buffer=4), GSPO(), GSPO(aggregate=token_mean))]
    assert len(set(reprs)) == len(reprs), reprs
    assert repr(GRPO(aggregate=sequence_mean)) == 'GRPO(eps=0.2)'   # the default, named or not
