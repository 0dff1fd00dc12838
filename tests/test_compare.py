"`carerft compare` end to end on a miniature world: results.json schema, report, resume, CLI."
import json
from pathlib import Path
import pytest
from carerft import toyworld as tw
from carerft.compare import compare, plan_arms, arm_name, markdown_summary
from carerft.cli import main

WORLD = dict(base_steps=30, base_examples=3000, hidden=32, layers=1, heads=2, intermediate=64)
SMALL_RL = dict(steps=3, prompts_per_step=4, group_size=4, save_every=2)
EVAL = dict(n_questions=16, n_samples=4)

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp('cmp')
    arms = plan_arms(regs=('none', 'rkl', 'srkl'), seeds=(0, 1), entropy_coefs=(0.01,))
    res = compare(d / 'out', arms, tw.ToyWorldConfig(**WORLD), rl=SMALL_RL, eval_kw=EVAL, cache_dir=d / 'cache', progress=False)
    return d, arms, res

def test_results_schema(run):
    d, arms, res = run
    saved = json.loads((d / 'out' / 'results.json').read_text())
    assert json.dumps(saved['arms']) == json.dumps(res)
    assert len(res) == len(arms) + 2                                   # + one base-model entry per seed
    for a in res:
        for k in ('algo', 'reg', 'seed', 'accuracy', 'hallucination_rate', 'ece', 'brier', 'auroc'):
            assert k in a, (k, a)
        assert 0 <= a['accuracy'] <= 1 and 0 <= a['hallucination_rate'] <= 1 and 0 <= a['ece'] <= 1
    assert {a['reg'] for a in res} == {'base', 'none', 'rkl', 'srkl'}
    assert sum(a['entropy_coef'] > 0 for a in res) == 2
    for a in res:
        if a['reg'] != 'base':
            log = (d / 'out' / arm_name(a) / 'log.jsonl').read_text().splitlines()
            assert len(log) == SMALL_RL['steps']

def test_report(run):
    d, _, res = run
    rep = (d / 'out' / 'report.md').read_text()
    assert markdown_summary(res) in rep and '| base model | 2 |' in rep
    for f in ('accuracy_vs_ece.png', 'accuracy_vs_hallucination.png', 'curves.png'):
        assert (d / 'out' / f).stat().st_size > 5000 and f in rep

def test_resume_skips_finished_arms(run):
    d, arms, res = run
    calls = []
    import carerft.compare as cmp
    orig = cmp.run_arm
    cmp.run_arm = lambda *a, **k: calls.append(a) or orig(*a, **k)
    try:
        more = plan_arms(regs=('none', 'rkl', 'srkl'), seeds=(0, 1), betas=(0.04, 0.2), entropy_coefs=(0.01,))
        res2 = compare(d / 'out', more, tw.ToyWorldConfig(**WORLD), rl=SMALL_RL, eval_kw=EVAL, cache_dir=d / 'cache', progress=False)
    finally: cmp.run_arm = orig
    assert len(calls) == 4                                            # only the beta=0.2 rkl/srkl arms of both seeds
    assert json.dumps(res2[:len(res)]) == json.dumps(res)

def test_cli(tmp_path, capsys):
    argv = ['compare', '--out', str(tmp_path / 'o'), '--regs', 'none,srkl', '--steps', '2', '--base-steps', '10',
            '--n-questions', '8', '--n-samples', '2', '--cache-dir', str(tmp_path / 'c'), '--no-progress']
    import carerft.compare as cmp
    cmp.RL_DEFAULTS_BACKUP = dict(cmp.RL_DEFAULTS)
    cmp.RL_DEFAULTS.update(prompts_per_step=4, group_size=2)
    try: assert main(argv) == 0
    finally: cmp.RL_DEFAULTS.clear(); cmp.RL_DEFAULTS.update(cmp.RL_DEFAULTS_BACKUP)
    out = capsys.readouterr().out
    assert 'results.json' in out and '| grpo no KL |' in out
    assert [a['reg'] for a in json.loads((tmp_path / 'o' / 'results.json').read_text())['arms']] == ['base', 'none', 'srkl']
    assert main(['compare', '--regs', 'kl', '--out', str(tmp_path / 'x')]) == 2


def test_t_quantile_matches_scipy():
    "The t-interval's quantile (table to 30 degrees of freedom, expansion beyond) against scipy.stats.t.ppf(0.975, df)."
    stats = pytest.importorskip('scipy.stats')
    from carerft.compare import t975, mean_ci
    for df in list(range(1, 31)) + [31, 40, 60, 100, 1000]:
        assert abs(t975(df) - stats.t.ppf(0.975, df)) < 1e-3, df
    xs = [0.1, 0.4, 0.35, 0.8, 0.2, 0.55, 0.6, 0.05, 0.3, 0.45, 0.9, 0.15]       # n = 12: df = 11, not in the old table
    m, h = mean_ci(xs)
    sd = stats.tstd(xs)
    assert h == pytest.approx(stats.t.ppf(0.975, 11) * sd / len(xs) ** 0.5, rel=1e-3)
