"Toy world: question generator against an independent evaluator, unanswerable twins, splits, reward, data mix, base-model cache."
import json
import math
import random
import pytest
import torch
from carerft.toyworld import (IDK, ToyWorldConfig, base_path, encode_examples, evaluate_world, fit_base, lm_loss,
                              make_questions, noisy_target, question_split, reward, shortcut_answer, train_base, world_model,
                              world_tokenizer)
from carerft.rollout import sample, token_logprobs
from carerft.calibration import ece

CONFIGS = [ToyWorldConfig(), ToyWorldConfig(digits=7, operations='+-*<>', min_steps=2, max_steps=4),
           ToyWorldConfig(digits=2, operations='+', min_steps=1, max_steps=1, seed=5)]
TINY = dict(base_examples=400, base_steps=4, batch_size=16, hidden=16, layers=1, heads=2, intermediate=32)


def reference_answer(prompt: str, digits: int):
    "Independent evaluator: rewrite the chain as a nested Python expression (min/max for < and >) and eval it."
    expr = prompt.rstrip('=')
    e = expr[0]
    for o, d in zip(expr[1::2], expr[2::2]):
        e = f'min({e}, {d})' if o == '<' else f'max({e}, {d})' if o == '>' else f'(({e}){o}{d}) % {digits}'
    return eval(e)


def parse(prompt: str):
    "(operands, ops) of a prompt like '3+5*2='; '?' kept as is."
    expr = prompt.rstrip('=')
    return list(expr[0::2]), expr[1::2]


@pytest.mark.parametrize('cfg', CONFIGS, ids=['default', 'mod7', 'mod2'])
def test_answerable_answers_match_independent_evaluator(cfg):
    qs = make_questions(500, 11, 'answerable', cfg)
    for q in qs:
        operands, ops = parse(q['prompt'])
        assert q['answerable'] is True and '?' not in q['prompt'] and q['prompt'].endswith('=')
        assert cfg.min_steps <= len(ops) <= cfg.max_steps and set(ops) <= set(cfg.operations)
        assert all(0 <= int(d) < cfg.digits for d in operands)
        assert q['answer'] == str(reference_answer(q['prompt'], cfg.digits)), q
    assert len({len(parse(q['prompt'])[1]) for q in qs}) == cfg.max_steps - cfg.min_steps + 1   # every length occurs


@pytest.mark.parametrize('cfg', CONFIGS[:2], ids=['default', 'mod7'])
def test_unanswerable_twins_differ_by_one_unknown_and_are_really_unknowable(cfg):
    for q in make_questions(300, 2, 'unanswerable', cfg):
        assert q['answerable'] is False and q['answer'] == IDK
        operands, ops = parse(q['prompt'])
        assert operands.count('?') == 1 and q['prompt'].count('?') == 1 and set(ops) <= set(cfg.operations)
        i = operands.index('?')
        answers = {reference_answer(q['prompt'][:2 * i] + str(d) + q['prompt'][2 * i + 1:], cfg.digits) for d in range(cfg.digits)}
        assert len(answers) >= 2, q   # filling in the unknown gives different answers
    positions = [parse(q['prompt'])[0].index('?') for q in make_questions(400, 3, 'unanswerable', cfg)]
    assert len(set(positions)) == cfg.max_steps + 1   # the unknown lands on every operand position, first included


def test_mod2_twins_skip_knowable_questions():
    "Mod 2 with '*': a twin like '0*?=' is knowable and must never be produced."
    cfg = ToyWorldConfig(digits=2, operations='*', min_steps=1, max_steps=1)
    qs = make_questions(100, 0, 'unanswerable', cfg, 'train') + make_questions(100, 0, 'unanswerable', cfg, 'eval')
    assert {q['prompt'] for q in qs} == {'1*?=', '?*1='}


def test_mixed_share_and_splits():
    cfg = ToyWorldConfig(unanswerable_frac=0.3)
    qs = make_questions(2000, 0, 'mixed', cfg)
    share = sum(not q['answerable'] for q in qs) / len(qs)
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 2000)
    train = {q['prompt'] for q in make_questions(3000, 0, 'mixed', cfg, 'train')}
    held = {q['prompt'] for q in make_questions(1000, 0, 'mixed', cfg, 'eval')}
    assert not train & held
    assert all(question_split(p, cfg) == 'eval' for p in held)
    assert make_questions(5, 0, 'answerable', ToyWorldConfig(seed=1), 'eval') != make_questions(5, 0, 'answerable', cfg, 'eval')


def test_determinism_per_seed():
    for kind in ('answerable', 'unanswerable', 'mixed'):
        assert make_questions(100, 7, kind) == make_questions(100, 7, kind)
        assert make_questions(100, 7, kind) != make_questions(100, 8, kind)
    assert make_questions(50, 7)[:20] == make_questions(20, 7)   # a prefix does not depend on n


def test_reward():
    prompts = ['3+5*2='] * 5 + ['3+?*2='] * 2
    completions = ['6', '7', IDK, '6\n', '', IDK, '6']
    answer = ['6'] * 5 + [IDK] * 2
    answerable = [True] * 5 + [False] * 2
    assert reward(prompts, completions, answer, answerable, extra_column=[0] * 7) == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match='same length'): reward(prompts, completions, answer[:3])


def test_noisy_target_mix():
    cfg = ToyWorldConfig(hedge_frac=0.2, noise_frac=0.3, guess_frac=0.25)
    rng, n = random.Random(0), 40_000
    q, u = dict(prompt='1+2=', answer='3', answerable=True), dict(prompt='1+?=', answer=IDK, answerable=False)
    t = [noisy_target(q, rng, cfg) for _ in range(n)]
    for value, p in ((IDK, 0.2), ('3', 0.5 + 0.03), ('4', 0.03)):
        assert abs(t.count(value) / n - p) < 4 * math.sqrt(p * (1 - p) / n), value
    t = [noisy_target(u, rng, cfg) for _ in range(n)]
    assert abs(t.count(IDK) / n - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)
    assert set(t) <= {IDK} | {str(d) for d in range(10)}


@pytest.mark.parametrize('cfg', CONFIGS[:2])
def test_shortcut_answer_is_the_chain_without_its_last_operation(cfg):
    "Against the independent evaluator on the prompt cut before its last operation, on every chain length."
    for q in make_questions(300, 1, 'answerable', cfg):
        cut = q['prompt'].rstrip('=')[:-2] + '='
        assert shortcut_answer(q['prompt'], cfg) == str(reference_answer(cut, cfg.digits)), q['prompt']


def test_noisy_target_shortcut_only_on_long_chains():
    cfg, n = ToyWorldConfig(hedge_frac=0.1, noise_frac=0.0, shortcut_frac=0.5, shortcut_min_steps=3), 20_000
    for prompt, answer, shortcut, steps in (('7+5+4=', '6', '2', 2), ('7+5+4+1=', '7', '6', 3), ('1+1+1+1+1=', '5', '4', 4)):
        rng = random.Random(steps)
        t = [noisy_target(dict(prompt=prompt, answer=answer, answerable=True), rng, cfg) for _ in range(n)]
        assert shortcut_answer(prompt, cfg) == shortcut
        p_short = 0.5 if steps >= 3 else 0.0
        for value, p in ((shortcut, p_short), (answer, 0.9 - p_short), (IDK, 0.1)):
            assert abs(t.count(value) / n - p) <= 4 * math.sqrt(max(p * (1 - p), 1e-4) / n), (prompt, value)


def test_noisy_target_without_shortcut_is_the_first_edition_mix():
    "shortcut_frac=0 draws exactly the targets of the first edition's formula from the same random stream."
    cfg = ToyWorldConfig(hedge_frac=0.15, noise_frac=0.1, guess_frac=0.1, shortcut_frac=0.0)
    qs = make_questions(500, 2, 'mixed', cfg)
    new, old = random.Random(7), random.Random(7)
    for q in qs:
        u, digit = old.random(), str(old.randrange(cfg.digits))
        if not q['answerable']:
            want = digit if u < cfg.guess_frac else IDK
        else:
            want = IDK if u < cfg.hedge_frac else digit if u < cfg.hedge_frac + cfg.noise_frac else q['answer']
        assert noisy_target(q, new, cfg) == want


@pytest.mark.parametrize('kw, name', [
    (dict(digits=1), 'digits'), (dict(digits=11), 'digits'), (dict(digits=3.0), 'digits'),
    (dict(operations=''), 'operations'), (dict(operations='+/'), 'operations'), (dict(min_steps=0), 'min_steps'),
    (dict(min_steps=3, max_steps=2), 'max_steps'), (dict(unanswerable_frac=1.5), 'unanswerable_frac'),
    (dict(hedge_frac=-0.1), 'hedge_frac'), (dict(hedge_frac=0.6, noise_frac=0.6), 'hedge_frac'),
    (dict(shortcut_frac=1.5), 'shortcut_frac'), (dict(hedge_frac=0.5, shortcut_frac=0.6), 'shortcut_frac'),
    (dict(shortcut_min_steps=0), 'shortcut_min_steps'),
    (dict(eval_frac=0.0), 'eval_frac'), (dict(eval_frac=1.0), 'eval_frac'), (dict(lr=0.0), 'lr'),
    (dict(lr=float('nan')), 'lr'), (dict(hidden=True), 'hidden'), (dict(base_steps=0), 'base_steps')])
def test_bad_config(kw, name):
    with pytest.raises(ValueError, match=name): ToyWorldConfig(**kw)


def test_bad_arguments():
    with pytest.raises(ValueError, match='kind'): make_questions(3, 0, 'easy')
    with pytest.raises(ValueError, match='split'): make_questions(3, 0, 'mixed', split='test')
    with pytest.raises(ValueError, match='n must'): make_questions(2.5, 0)
    with pytest.raises(ValueError, match='seed'): train_base(ToyWorldConfig(**TINY), seed=-1)


def test_lm_loss_matches_rollout_logprobs():
    "The training loss equals minus the mean per-token log-prob that the RL sampler's scorer computes."
    cfg, tok = ToyWorldConfig(**TINY), world_tokenizer()
    model = world_model(cfg, tok, seed=3)
    prompts, targets = ['3+5*2=', '1+?=', '7-2*9+1='], ['6', IDK, '2']
    ids, mask, loss_mask = encode_examples(tok, prompts, targets)
    P = max(map(len, prompts))
    with torch.no_grad():
        loss = lm_loss(model, ids, mask, loss_mask)
        logp = token_logprobs(model, ids[:, :P], mask[:, :P], ids[:, P:], loss_mask[:, P:])
    torch.testing.assert_close(loss, -logp.sum() / loss_mask.sum())


def test_train_base_caches_and_is_deterministic(tmp_path):
    cfg = ToyWorldConfig(**TINY)
    m1, tok1 = train_base(cfg, seed=2, cache_dir=tmp_path / 'a', progress=False)
    m2, _ = train_base(cfg, seed=2, cache_dir=tmp_path / 'b', progress=False)          # trained again, elsewhere
    m3, tok3 = train_base(cfg, seed=2, cache_dir=tmp_path / 'a', progress=False)       # loaded
    for a, b, c in zip(m1.state_dict().values(), m2.state_dict().values(), m3.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0); torch.testing.assert_close(a, c, rtol=0, atol=0)
    info = json.loads((base_path(cfg, 2, tmp_path / 'a') / 'train_info.json').read_text())
    assert info['world'] == json.loads(json.dumps(cfg.__dict__)) and info['seed'] == 2
    assert tok3.padding_side == 'left' and tok3('3+?=')['input_ids'] == tok1('3+?=')['input_ids']
    assert sorted(p.name for p in (tmp_path / 'a').iterdir()) == [base_path(cfg, 2).name]   # no temporary folder left


def test_fit_base_learns_a_one_step_world():
    "A short supervised run must beat chance clearly on a tiny clean world (min and max of two digits below 5)."
    torch.manual_seed(0)
    cfg = ToyWorldConfig(digits=5, operations='<>', min_steps=1, max_steps=1, hedge_frac=0, noise_frac=0, guess_frac=0,
                         unanswerable_frac=0.0, base_examples=200, base_steps=150, batch_size=32, hidden=32, layers=1,
                         intermediate=64, lr=1e-2)
    tok = world_tokenizer(); model = world_model(cfg, tok, seed=0)
    losses = fit_base(model, tok, cfg, seed=0, progress=False)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    qs = make_questions(30, 1, 'answerable', cfg, 'train')
    greedy = sample(model.eval(), tok, [q['prompt'] for q in qs], 1, cfg.max_new_tokens, top_k=1).completions
    assert sum(g == q['answer'] for g, q in zip(greedy, qs)) / len(qs) > 0.8   # a constant answer gets at most ~1/3 (answer 4 under max)


def test_make_questions_refuses_an_empty_split():
    "A world too small to have questions in a split must raise, not loop forever."
    cfg = ToyWorldConfig(digits=2, operations='+', min_steps=1, max_steps=1, eval_frac=0.01)
    with pytest.raises(ValueError, match='split'): make_questions(5, 0, 'answerable', cfg, 'eval')


def test_evaluate_world_records_and_metrics():
    cfg, tok = ToyWorldConfig(**TINY), world_tokenizer()
    model = world_model(cfg, tok, seed=0)
    res = evaluate_world(model, tok, cfg, n_questions=20, n_samples=5, seed=3)
    ans, unans = res['records'][:20], res['records'][20:]
    assert all(r['answerable'] for r in ans) and not any(r['answerable'] for r in unans)
    for r in res['records']:
        assert len(r['samples']) == 5 and r['samples'].count(r['majority']) == max(map(r['samples'].count, r['samples']))
        assert r['confidence'] == r['samples'].count(r['majority']) / 5
    assert res['accuracy'] == sum(r['majority'] == r['answer'] for r in ans) / 20
    assert res['sample_accuracy'] == pytest.approx(sum(s == r['answer'] for r in ans for s in r['samples']) / 100)
    assert res['hallucination_rate'] == sum(r['majority'] != IDK for r in unans) / 20
    assert res['ece'] == pytest.approx(ece([r['confidence'] for r in ans], [r['correct'] for r in ans]))
    with pytest.raises(ValueError, match='n_questions'): evaluate_world(model, tok, cfg, n_questions=0)


# ---------------------------------------------------------------- machine-independent bases (issue 13, item 2)
import os
import subprocess
import sys
from carerft.toyworld import BASE_VERSION, config_hash, torch_threads, weights_sha256

THREADS_WORLD = dict(base_examples=2000, base_steps=20, batch_size=64, hidden=32, layers=1, heads=2, intermediate=64)
THREADS_DRIVER = """
import json, sys, torch
n = int(sys.argv[1])
torch.set_num_threads(n)
from carerft import toyworld as tw
model, _ = tw.train_base(tw.ToyWorldConfig(**{world!r}), seed=3, cache_dir=sys.argv[2], progress=False)
info = json.loads((tw.base_path(tw.ToyWorldConfig(**{world!r}), 3, sys.argv[2]) / 'train_info.json').read_text())
print(json.dumps(dict(sha=tw.weights_sha256(model), saved=info['sha256'], threads=torch.get_num_threads())))
"""


def test_base_is_bit_identical_for_1_2_and_4_threads(tmp_path):
    "Regression (issue 13): the base's weights changed with the torch thread count; this small base did at 1 vs 4 threads."
    driver = tmp_path / 'driver.py'
    driver.write_text(THREADS_DRIVER.format(world=THREADS_WORLD))
    seen = {}
    for n in (1, 2, 4):
        env = dict(os.environ, OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n), HF_HUB_OFFLINE='1')
        r = subprocess.run([sys.executable, str(driver), str(n), str(tmp_path / f'cache{n}')], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        seen[n] = json.loads(r.stdout.strip().splitlines()[-1])
        assert seen[n]['threads'] == n                                   # the caller's count is restored afterwards
        assert seen[n]['saved'] == seen[n]['sha']                        # train_info.json records the loaded weights
    assert seen[1]['sha'] == seen[2]['sha'] == seen[4]['sha'], seen


def test_weights_sha256_sees_every_bit_and_only_the_weights():
    cfg, tok = ToyWorldConfig(**TINY), world_tokenizer()
    a, b = world_model(cfg, tok, seed=0), world_model(cfg, tok, seed=0)
    assert weights_sha256(a) == weights_sha256(b) and len(weights_sha256(a)) == 64
    assert weights_sha256(world_model(cfg, tok, seed=1)) != weights_sha256(a)
    with torch.no_grad():
        w = b.model.layers[0].mlp.up_proj.weight
        w[3, 5] = torch.nextafter(w[3, 5], torch.tensor(math.inf))   # one weight, one unit in the last place
    assert weights_sha256(b) != weights_sha256(a)
    assert weights_sha256(a.to(torch.float64)) != weights_sha256(world_model(cfg, tok, seed=0))   # the dtype counts


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before


def test_bases_of_the_old_recipe_are_not_loaded(tmp_path):
    "Regression: a base cached before the one-thread recipe sat at <hash>-seed<k> and would have been reused as is."
    cfg = ToyWorldConfig(**TINY)
    old = tmp_path / f'{config_hash(cfg)}-seed0'
    old.mkdir()
    (old / 'config.json').write_text('not a model')                   # loading it would fail loudly
    model, _ = train_base(cfg, seed=0, cache_dir=tmp_path, progress=False)
    path = base_path(cfg, 0, tmp_path)
    assert path.name == f'{config_hash(cfg)}-v{BASE_VERSION}-seed0' and path.is_dir()
    info = json.loads((path / 'train_info.json').read_text())
    assert (info['base_version'], info['torch_threads'], info['sha256']) == (BASE_VERSION, 1, weights_sha256(model))
