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
    arms = plan_arms(regs=('none', 'rkl', 'srkl'), base_seeds=(0, 1), entropy_coefs=(0.01,))
    res = compare(d / 'out', arms, tw.ToyWorldConfig(**WORLD), rl=SMALL_RL, eval_kw=EVAL, cache_dir=d / 'cache', progress=False,
                  workers=1)
    return d, arms, res

def test_results_schema(run):
    d, arms, res = run
    saved = json.loads((d / 'out' / 'results.json').read_text())
    assert json.dumps(saved['arms']) == json.dumps(res)
    assert len(res) == len(arms) + 2                                   # + one base-model entry per base seed
    for a in res:
        for k in ('algo', 'reg', 'seed', 'base_seed', 'base_sha256', 'accuracy', 'hallucination_rate', 'ece', 'brier', 'auroc'):
            assert k in a, (k, a)
        assert 0 <= a['accuracy'] <= 1 and 0 <= a['hallucination_rate'] <= 1 and 0 <= a['ece'] <= 1
    assert {a['reg'] for a in res} == {'base', 'none', 'rkl', 'srkl'}
    sha = {a['base_seed']: a['base_sha256'] for a in res if a['reg'] == 'base'}
    assert len(set(sha.values())) == 2 and all(a['base_sha256'] == sha[a['base_seed']] for a in res)   # each arm's base
    assert saved['base'] == {'version': tw.BASE_VERSION}
    assert sum(a['entropy_coef'] > 0 for a in res) == 2
    for a in res:
        if a['reg'] != 'base':
            log = (d / 'out' / arm_name(a) / 'log.jsonl').read_text().splitlines()
            assert len(log) == SMALL_RL['steps']

def test_report(run):
    d, _, res = run
    rep = (d / 'out' / 'report.md').read_text()
    assert markdown_summary(res) in rep and '| base model | 2 |' in rep
    from carerft.compare import uncertainty_words
    words = uncertainty_words(res)
    assert words and all(w in rep for w in words) and 'minus no KL' in words[0]   # uncertainty said in words
    for f in ('accuracy_vs_ece.png', 'accuracy_vs_hallucination.png', 'curves.png'):
        assert (d / 'out' / f).stat().st_size > 5000 and f in rep

def test_resume_skips_finished_arms(run):
    d, arms, res = run
    calls = []
    import carerft.compare as cmp
    orig = cmp.run_arm
    cmp.run_arm = lambda *a, **k: calls.append(a) or orig(*a, **k)
    try:
        more = plan_arms(regs=('none', 'rkl', 'srkl'), base_seeds=(0, 1), betas=(0.04, 0.2), entropy_coefs=(0.01,))
        res2 = compare(d / 'out', more, tw.ToyWorldConfig(**WORLD), rl=SMALL_RL, eval_kw=EVAL, cache_dir=d / 'cache', progress=False,
                       workers=1)
    finally: cmp.run_arm = orig
    assert len(calls) == 4                                            # only the beta=0.2 rkl/srkl arms of both bases
    assert json.dumps(res2[:len(res)]) == json.dumps(res)

def test_cli(tmp_path, capsys):
    argv = ['compare', '--out', str(tmp_path / 'o'), '--regs', 'none,srkl', '--steps', '2', '--base-steps', '10', '--base-seeds', '0',
            '--n-questions', '8', '--n-samples', '2', '--cache-dir', str(tmp_path / 'c'), '--no-progress']
    import carerft.compare as cmp
    cmp.RL_DEFAULTS_BACKUP = dict(cmp.RL_DEFAULTS)
    cmp.RL_DEFAULTS.update(prompts_per_step=4, group_size=2)
    try: assert main(argv) == 0
    finally: cmp.RL_DEFAULTS.clear(); cmp.RL_DEFAULTS.update(cmp.RL_DEFAULTS_BACKUP)
    out = capsys.readouterr().out
    assert 'results.json' in out and '| grpo no KL |' in out
    arms = json.loads((tmp_path / 'o' / 'results.json').read_text())['arms']
    assert [(a['reg'], a['beta']) for a in arms] == [('base', 0.0), ('none', 0.0), ('srkl', 0.04), ('srkl', 1.0)]  # matched
    assert main(['compare', '--regs', 'kl', '--out', str(tmp_path / 'x')]) == 2


def test_default_main_job_plan(tmp_path, monkeypatch):
    "carerft compare with no flags: GRPO, no KL + RKL + CARE at the paper's beta and at matched strength, bases 0 and 1."
    import carerft.compare as cmp
    seen = {}
    monkeypatch.setattr(cmp, 'compare', lambda out, arms, *a, **k: seen.setdefault('arms', arms) and [])
    monkeypatch.setattr('carerft.cli.markdown_summary', lambda res: '')
    assert main(['compare', '--out', str(tmp_path / 'o'), '--no-progress']) == 0
    plan = {(a['algo'], a['reg'], a['beta'], a['alpha'], a['base_seed'], a['seed']) for a in seen['arms']}
    assert plan == {('grpo', r, b, al, base, 0) for base in (0, 1) for r, b, al in
                    (('none', 0.0, 0.0), ('rkl', 0.04, 0.0), ('srkl', 0.04, 0.8), ('srkl', 1.0, 0.8))}


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


# ---------------------------------------------------------------- reliability regressions (named after their bugs)
import functools
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import types
import carerft.compare as cmp
from carerft.trainer import checkpoint_paths


@pytest.fixture
def small_cli(monkeypatch, tmp_path_factory):
    "`carerft compare` on the miniature world and RL settings: returns the flags every test run shares."
    monkeypatch.setattr(tw, 'ToyWorldConfig', functools.partial(tw.ToyWorldConfig, **WORLD))
    for k, v in dict(SMALL_RL, steps=None).items():
        if v is not None: monkeypatch.setitem(cmp.RL_DEFAULTS, k, v)
    cache = tmp_path_factory.getbasetemp() / 'cli-cache'
    return ['--steps', '3', '--base-seeds', '0', '--n-questions', '8', '--n-samples', '2', '--cache-dir', str(cache), '--no-progress']


def test_rerun_with_other_settings_is_refused_naming_each_setting(run):
    "Regression: a rerun with other settings in the same folder reused the old arms and mixed settings in results.json."
    d, arms, res = run
    before = (d / 'out' / 'results.json').read_text()
    world = tw.ToyWorldConfig(**dict(WORLD, hidden=48))
    with pytest.raises(ValueError) as e:
        compare(d / 'out', arms, world, rl=dict(SMALL_RL, steps=4), eval_kw=dict(EVAL, n_samples=2), cache_dir=d / 'cache', progress=False)
    msg = str(e.value)
    for said in ('world.hidden: 32 -> 48', 'rl.steps: 3 -> 4', 'eval.n_samples: 4 -> 2', 'overwrite'):
        assert said in msg, (said, msg)
    assert (d / 'out' / 'results.json').read_text() == before                     # nothing touched
    saved = json.loads(before)
    assert saved['world']['hidden'] == 32 and saved['rl']['steps'] == 3 and saved['eval']['n_samples'] == 4


def test_overwrite_starts_the_folder_afresh(tmp_path):
    arms = plan_arms(regs=('none',))
    kw = dict(world=tw.ToyWorldConfig(**WORLD), eval_kw=EVAL, cache_dir=tmp_path / 'cache', progress=False)
    compare(tmp_path / 'o', arms, rl=SMALL_RL, **kw)
    stale = tmp_path / 'o' / 'grpo-srkl-b0.04-a0.8-base0-s0'                          # an unfinished arm of the old settings
    (stale / 'checkpoints' / 'step-2').mkdir(parents=True)
    res = compare(tmp_path / 'o', arms, rl=dict(SMALL_RL, steps=2), overwrite=True, **kw)
    assert [a['steps'] for a in res] == [0, 2] and not stale.exists()
    assert len((tmp_path / 'o' / 'grpo-none-base0-s0' / 'log.jsonl').read_text().splitlines()) == 2
    assert json.loads((tmp_path / 'o' / 'results.json').read_text())['rl']['steps'] == 2


def test_run_arm_resumes_a_checkpoint_and_otherwise_overwrites(tmp_path, monkeypatch):
    "The trainer refuses a used output_dir: run_arm resumes an arm with a checkpoint and restarts one without (compare's own unfinished work)."
    seen = []
    class Trainer:
        def __init__(self, model, tok, rows, reward, cfg, **kw):
            seen.append(cfg)
            self.config, self.callbacks, self.state = cfg, [], types.SimpleNamespace(step=0)
        def train(self): raise KeyboardInterrupt
    monkeypatch.setattr(cmp, 'RFTTrainer', Trainer)
    arm, world = plan_arms(regs=('none',))[0], tw.ToyWorldConfig(**WORLD)
    folder = tmp_path / 'o' / arm_name(arm)
    for make, want in ((None, (False, True)), ('log.jsonl', (False, True)), ('checkpoints/step-2', (True, False))):
        if make: (folder / make).parent.mkdir(parents=True, exist_ok=True); (folder / make).mkdir() if 'step' in make else (folder / make).write_text('{}\n')
        with pytest.raises(KeyboardInterrupt): cmp.run_arm(arm, world, tmp_path / 'o', SMALL_RL, EVAL, tmp_path / 'cache')
        assert (seen[-1].resume, seen[-1].overwrite) == want, make


def test_unfinished_arm_without_checkpoint_is_restarted(tmp_path):
    "An arm folder with a log but no checkpoint (interrupted before its first save) does not block the rerun."
    arms = plan_arms(regs=('none',))
    kw = dict(world=tw.ToyWorldConfig(**WORLD), rl=SMALL_RL, eval_kw=EVAL, cache_dir=tmp_path / 'cache', progress=False)
    (tmp_path / 'o' / 'grpo-none-base0-s0').mkdir(parents=True)
    (tmp_path / 'o' / 'grpo-none-base0-s0' / 'log.jsonl').write_text('{"step": 1}\n')
    res = compare(tmp_path / 'o', arms, **kw)
    assert len((tmp_path / 'o' / 'grpo-none-base0-s0' / 'log.jsonl').read_text().splitlines()) == SMALL_RL['steps'] and len(res) == 2


@pytest.mark.parametrize('flags,said', [
    (['--regs', ''], '--regs'), (['--algos', ''], '--algos'), (['--seeds', ''], '--seeds'),
    (['--regs', 'rkl', '--betas', ''], '--betas'), (['--regs', 'srkl', '--alphas', ''], '--alphas')])
def test_empty_arm_lists_are_refused(tmp_path, capsys, small_cli, flags, said):
    "Regression: `--regs ''` exited 0 and claimed to have written a results.json that did not exist."
    assert main(['compare', '--out', str(tmp_path / 'o')] + small_cli + flags) == 2
    cap = capsys.readouterr()
    assert said in cap.err and 'empty' in cap.err and 'wrote' not in cap.out
    assert not (tmp_path / 'o' / 'results.json').exists()


@pytest.mark.parametrize('flag,value,said', [
    ('--steps', '-1', '--steps must be an int >= 1, got -1'), ('--steps', '0', '--steps must be an int >= 1, got 0'),
    ('--lr', '0', '--lr must be a finite number > 0, got 0.0'), ('--lr', 'nan', '--lr must be a finite number > 0, got nan'),
    ('--base-steps', '0', '--base-steps must be an int >= 1, got 0'),
    ('--n-questions', '0', '--n-questions must be an int >= 1, got 0'), ('--n-samples', '-2', '--n-samples must be an int >= 1, got -2'),
    ('--threads', '0', '--threads must be an int >= 1, got 0'),
    ('--betas', '-0.1', '--betas must be finite numbers >= 0, got -0.1'), ('--betas', 'inf', '--betas must be finite numbers >= 0, got inf'),
    ('--alphas', '1', '--alphas must be numbers in [0, 1), got 1.0'), ('--alphas', '-0.5', '--alphas must be numbers in [0, 1), got -0.5'),
    ('--entropy-coefs', '-0.01', '--entropy-coefs must be finite numbers > 0, got -0.01'),
    ('--entropy-coefs', '0', '--entropy-coefs must be finite numbers > 0, got 0.0'),
    ('--seeds', '-1', '--seeds must be ints >= 0, got -1'), ('--seeds', '0,0', '--seeds lists 0 twice'),
    ('--betas', '0.1,0.1', '--betas lists 0.1 twice'), ('--regs', 'none,none', '--regs lists none twice')])
def test_numeric_options_are_checked_at_the_boundary(tmp_path, capsys, small_cli, flag, value, said):
    "Regression: `--steps -1` said `n must be an int >= 0, got -32`; every option is checked before any work, naming the flag."
    argv = ['compare', '--out', str(tmp_path / 'o'), '--regs', 'none,rkl,srkl'] + small_cli + [flag, value]
    assert main(argv) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()                                           # refused before anything was written


def test_grid_with_algos_or_seeds_is_refused(tmp_path, capsys):
    assert main(['compare', '--out', str(tmp_path / 'o'), '--grid', '--seeds', '0']) == 2
    assert '--grid' in capsys.readouterr().err


def test_bad_list_item_names_the_list_type(capsys):
    with pytest.raises(SystemExit): main(['compare', '--seeds', '0,x'])
    assert "invalid comma list of ints value: '0,x'" in capsys.readouterr().err


def test_resume_command_drops_overwrite_and_keeps_the_rest(monkeypatch, capsys):
    "The Ctrl-C line's command: the options not at their defaults, less --overwrite; main returns 130 (no SystemExit)."
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cmp, 'compare', interrupted)                  # Ctrl-C as soon as the arms would run

    def resume_command(argv):
        assert main(['compare'] + argv) == 130
        line = capsys.readouterr().err.strip()
        assert len(line.splitlines()) == 1 and line.startswith('carerft compare: interrupted (0 finished entries'), line
        return line.split('resume with: ')[1]
    cmd = resume_command(['--out', 'my runs', '--regs', 'none,srkl', '--steps', '40', '--overwrite', '--no-progress'])
    assert cmd == "carerft compare --out 'my runs' --regs none,srkl --steps 40 --no-progress"
    assert resume_command(shlex.split(cmd)[2:]) == cmd
    assert not Path('my runs').exists()


DRIVER = """
import functools, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)     # a background job may start with SIGINT ignored
import carerft.toyworld as tw, carerft.compare as cmp
tw.ToyWorldConfig = functools.partial(tw.ToyWorldConfig, **{world!r})
cmp.RL_DEFAULTS.update({rl!r})
from carerft.cli import main
sys.exit(main(['compare'] + sys.argv[1:]))
"""

def test_ctrl_c_prints_one_line_with_the_resume_command_and_resumes_exactly(tmp_path):
    "Regression: an interrupted compare printed ~115 lines of traceback. Now: one line, exit 130, and the printed command resumes."
    driver = tmp_path / 'driver.py'
    driver.write_text(DRIVER.format(world=WORLD, rl=dict(prompts_per_step=4, group_size=4, save_every=10)))
    env = dict(os.environ, HF_HUB_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    flags = ['--regs', 'srkl', '--base-seeds', '0', '--steps', '60', '--n-questions', '8', '--n-samples', '2', '--cache-dir', str(tmp_path / 'c'), '--no-progress', '--no-matched']
    run = lambda out, extra=(): subprocess.run([sys.executable, str(driver), '--out', str(out)] + flags + list(extra), env=env,
                                               capture_output=True, text=True, timeout=300)
    full = run(tmp_path / 'full')                                    # uninterrupted; also caches the base model
    assert full.returncode == 0, full.stderr
    out = tmp_path / 'cut'
    p = subprocess.Popen([sys.executable, str(driver), '--out', str(out)] + flags, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    log, t0 = out / 'grpo-srkl-b0.04-a0.8-base0-s0' / 'log.jsonl', time.time()
    while not (log.exists() and log.read_text().count('\n') >= 2) and p.poll() is None and time.time() - t0 < 240: time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, (stdout, stderr)
    text = stdout + stderr
    assert 'Traceback' not in text, text
    lines = [l for l in text.splitlines() if 'carerft compare --out' in l]
    assert len(lines) == 1 and len(text.strip().splitlines()) == 1, text
    assert 'results.json' in lines[0] and 'checkpoint' in lines[0]
    cmd = shlex.split(lines[0].split('resume with: ')[1])
    assert cmd[:2] == ['carerft', 'compare']
    again = subprocess.run([sys.executable, str(driver)] + cmd[2:], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    a, b = (json.loads((o / 'results.json').read_text())['arms'] for o in (tmp_path / 'full', out))
    drop = lambda e: {k: v for k, v in e.items() if k != 'seconds'}
    assert [drop(e) for e in a] == [drop(e) for e in b]
    rows = lambda p: [{k: v for k, v in json.loads(l).items() if not k.startswith('time_')} for l in p.read_text().splitlines()]
    assert rows(tmp_path / 'full' / 'grpo-srkl-b0.04-a0.8-base0-s0' / 'log.jsonl') == rows(log)   # the same training, step by step


def test_each_rl_arm_shows_a_step_bar(tmp_path, capfd):
    "Regression: compare showed no progress during each RL arm. Each arm gets a per-step bar named after it; progress=False is silent."
    arms = plan_arms(regs=('none',))
    kw = dict(world=tw.ToyWorldConfig(**WORLD), rl=SMALL_RL, eval_kw=EVAL, cache_dir=tmp_path / 'cache')
    compare(tmp_path / 'a', arms, progress=True, **kw)
    err = capfd.readouterr().err
    assert 'grpo-none-base0-s0: ' in err and f"{SMALL_RL['steps']}/{SMALL_RL['steps']}" in err
    compare(tmp_path / 'b', arms, progress=False, **kw)
    assert capfd.readouterr().err.strip() == ''


@pytest.mark.parametrize('kw,said', [
    (dict(steps=0), 'steps must be an int >= 1, got 0'), (dict(threads=0), 'threads must be an int >= 1, got 0'),
    (dict(lr=float('inf')), 'lr must be a finite number > 0, got inf'),
    (dict(n_samples=2.0), 'n_samples must be an int >= 1'),
    (dict(entropy_coefs=(0.0,)), 'entropy_coefs must be finite numbers > 0'),
    (dict(regs=('kl',)), 'regs must be among'), (dict(workers=0), 'workers must be an int >= 1, got 0'),
    (dict(base_seeds=(0, 0)), 'base_seeds lists 0 twice'), (dict(base_seeds=()), 'base_seeds is empty')])
def test_run_compare_names_the_argument(tmp_path, kw, said):
    "run_compare is the library function behind `carerft compare`: every argument is checked before any work, by name."
    with pytest.raises(ValueError) as e:
        cmp.run_compare(tmp_path / 'o', **kw)
    assert str(e.value).startswith(said) and not (tmp_path / 'o').exists()


# ---------------------------------------------------------------- base seeds and parallel arms (issue 13, items 2-3)
LEARNS = dict(WORLD, base_steps=100, lr=1e-2, max_steps=1)          # a miniature world whose base gets some answers right
PAR_RL = dict(steps=3, prompts_per_step=4, group_size=4, save_every=2)
PAR_EVAL = dict(n_questions=16, n_samples=4)


def _rows(path):
    return [{k: v for k, v in json.loads(l).items() if not k.startswith('time_')} for l in path.read_text().splitlines()]


def test_one_and_two_workers_write_the_same_results(tmp_path):
    "Two bases x one RL seed x (no KL, CARE): one worker and two give the same results.json and logs, bases included."
    arms = plan_arms(regs=('none', 'srkl'), base_seeds=(0, 1))
    kw = dict(world=tw.ToyWorldConfig(**LEARNS), rl=PAR_RL, eval_kw=PAR_EVAL, progress=False)
    res = {n: compare(tmp_path / f'w{n}', arms, cache_dir=tmp_path / f'c{n}', workers=n, **kw) for n in (1, 2)}
    saved = {n: json.loads((tmp_path / f'w{n}' / 'results.json').read_text())['arms'] for n in (1, 2)}
    drop = lambda es: json.dumps([{k: v for k, v in e.items() if k != 'seconds'} for e in es])   # NaN == NaN in JSON
    assert drop(res[1]) == drop(res[2]) == drop(saved[1]) == drop(saved[2])
    assert [(e['reg'], e['base_seed']) for e in saved[2]] == [('base', 0), ('base', 1), ('none', 0), ('srkl', 0),
                                                             ('none', 1), ('srkl', 1)]              # the plan's order
    for a in arms:
        assert _rows(tmp_path / 'w1' / arm_name(a) / 'log.jsonl') == _rows(tmp_path / 'w2' / arm_name(a) / 'log.jsonl')
    assert any(e['accuracy'] > 0 for e in res[2])                     # numbers worth comparing, not all zeros
    sha = [e['base_sha256'] for e in saved[2]]
    assert sha[0] != sha[1] and sha[2:] == [sha[0], sha[0], sha[1], sha[1]]


def test_bases_and_rl_seeds_are_paired(tmp_path):
    "Every RL seed runs on every base; an arm and its base are evaluated on the same held-out questions."
    arms = plan_arms(regs=('none',), seeds=(0, 1), base_seeds=(0, 1))
    assert [(a['base_seed'], a['seed']) for a in arms] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len({arm_name(a) for a in arms}) == 4
    seen = []
    orig = tw.evaluate_world
    def spy(model, tok, world, seed, **kw):
        seen.append(seed)
        return orig(model, tok, world, seed=seed, **kw)
    import unittest.mock
    with unittest.mock.patch.object(tw, 'evaluate_world', spy):
        res = compare(tmp_path / 'o', arms, tw.ToyWorldConfig(**WORLD), rl=dict(SMALL_RL, steps=1), eval_kw=EVAL,
                      cache_dir=tmp_path / 'c', progress=False, workers=1)
    assert [(e['reg'], e['base_seed'], e['seed']) for e in res] == [('base', 0, 0), ('base', 1, 1)] + [
        ('none', b, s) for b in (0, 1) for s in (0, 1)]
    assert seen == [10_000, 10_001, 10_000, 10_000, 10_001, 10_001]    # the eval seed follows the base seed
    rows = {(b, s): _rows(tmp_path / 'o' / f'grpo-none-base{b}-s{s}' / 'log.jsonl') for b in (0, 1) for s in (0, 1)}
    assert rows[0, 0] != rows[0, 1] and rows[0, 0] != rows[1, 0]      # the RL seed and the base both change the run


def test_results_of_the_old_base_recipe_are_not_resumed(run, tmp_path):
    "Regression: a results.json written with bases of the earlier recipe (no 'base' section) would have been extended."
    d, arms, _ = run
    old = json.loads((d / 'out' / 'results.json').read_text())
    del old['base']
    (tmp_path / 'o').mkdir()
    (tmp_path / 'o' / 'results.json').write_text(json.dumps(old))
    with pytest.raises(ValueError, match='base: unset -> {"version": 2}'):
        compare(tmp_path / 'o', arms, tw.ToyWorldConfig(**WORLD), rl=SMALL_RL, eval_kw=EVAL, cache_dir=d / 'cache',
                progress=False, workers=1)


def test_workers_show_a_step_bar_per_arm(tmp_path, capfd):
    arms = plan_arms(regs=('none', 'rkl'))
    compare(tmp_path / 'o', arms, tw.ToyWorldConfig(**WORLD), rl=SMALL_RL, eval_kw=EVAL, cache_dir=tmp_path / 'c',
            progress=True, workers=2)
    err = capfd.readouterr().err
    for a in arms:
        assert f'{arm_name(a)}: ' in err, err
    assert f"{SMALL_RL['steps']}/{SMALL_RL['steps']}" in err and 'Traceback' not in err


PAR_DRIVER = """
import functools, signal, sys
import carerft.toyworld as tw, carerft.compare as cmp, carerft.cli as cli

def small_world(out, arms, world, *args):
    return compare(out, arms, tw.ToyWorldConfig(**{world!r}), *args)

if __name__ == '__main__':                                   # the spawned workers import this file again
    signal.signal(signal.SIGINT, signal.default_int_handler)
    compare = cmp.compare
    cmp.compare = small_world
    cmp.RL_DEFAULTS.update({rl!r})
    cli.run_compare = functools.partial(cmp.run_compare, workers=int(sys.argv[1]))
    sys.exit(cli.main(['compare'] + sys.argv[2:]))
"""


def test_ctrl_c_with_two_workers_keeps_checkpoints_and_resumes_exactly(tmp_path):
    "Ctrl-C reaches the main process only; it stops both training workers, which checkpoint; the rerun equals one worker's run."
    driver = tmp_path / 'driver.py'
    driver.write_text(PAR_DRIVER.format(world=WORLD, rl=dict(prompts_per_step=4, group_size=4, save_every=10)))
    env = dict(os.environ, HF_HUB_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    flags = ['--regs', 'none,srkl', '--base-seeds', '0', '--steps', '150', '--n-questions', '8', '--n-samples', '2', '--no-progress']
    def run(workers, out, extra=()):
        return subprocess.run([sys.executable, str(driver), str(workers), '--out', str(out), '--cache-dir',
                               str(tmp_path / f'c{workers}')] + flags + list(extra), env=env, capture_output=True,
                              text=True, timeout=300)
    full = run(1, tmp_path / 'full')
    assert full.returncode == 0, full.stderr
    out = tmp_path / 'cut'
    p = subprocess.Popen([sys.executable, str(driver), '2', '--out', str(out), '--cache-dir', str(tmp_path / 'c2')] + flags,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs, t0 = [out / n / 'log.jsonl' for n in ('grpo-none-base0-s0', 'grpo-srkl-b0.04-a0.8-base0-s0')], time.time()
    while not all(l.exists() and l.read_text().count('\n') >= 12 for l in logs) and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)                                     # to the main process alone, as the test can
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, (stdout, stderr)
    text = stdout + stderr
    assert 'Traceback' not in text and len(text.strip().splitlines()) == 1, text
    assert 'checkpoint' in text and 'resume with: carerft compare' in text
    last = [max(int(c.name.split('-')[1]) for c in checkpoint_paths(l.parent / 'checkpoints')) for l in logs]
    assert min(last) >= 12 and min(last) < 150, last                  # both saved their progress, one at least mid-way
    again = run(2, out)
    assert again.returncode == 0, again.stderr
    a, b = (json.loads((o / 'results.json').read_text())['arms'] for o in (tmp_path / 'full', out))
    drop = lambda e: {k: v for k, v in e.items() if k != 'seconds'}
    assert [drop(e) for e in a] == [drop(e) for e in b]
    for l in logs:
        assert _rows(tmp_path / 'full' / l.parent.name / 'log.jsonl') == _rows(l)


def test_a_failing_arm_stops_the_other_workers(tmp_path):
    "A task that fails in a worker stops the arms still training (they keep their progress) before its error is raised."
    arms = plan_arms(regs=('none', 'rkl'))
    broken = tmp_path / 'o' / arm_name(arms[1]) / 'checkpoints' / 'step-1'
    broken.mkdir(parents=True)                                        # a checkpoint that cannot load: this arm fails
    with pytest.raises(RuntimeError, match='checkpoint'):
        compare(tmp_path / 'o', arms, tw.ToyWorldConfig(**WORLD), rl=dict(SMALL_RL, steps=400, save_every=50), eval_kw=EVAL,
                cache_dir=tmp_path / 'c', progress=False, workers=2)
    saved = json.loads((tmp_path / 'o' / 'results.json').read_text())['arms']
    assert [e['reg'] for e in saved] == ['base']                      # the base was kept, neither arm finished
    log = tmp_path / 'o' / arm_name(arms[0]) / 'log.jsonl'
    assert not log.exists() or log.read_text().count('\n') < 400       # the other arm was stopped, not run to the end


def test_cli_base_seeds_and_workers(tmp_path, capsys):
    "--base-seeds pairs every RL seed with every base; --workers is a flag whose errors name it."
    argv = ['compare', '--out', str(tmp_path / 'o'), '--regs', 'none', '--steps', '2', '--base-steps', '10',
            '--n-questions', '8', '--n-samples', '2', '--cache-dir', str(tmp_path / 'c'), '--no-progress',
            '--base-seeds', '0,1', '--seeds', '3', '--workers', '1']
    import carerft.compare as cmp
    backup = dict(cmp.RL_DEFAULTS)
    cmp.RL_DEFAULTS.update(prompts_per_step=4, group_size=2)
    try: assert main(argv) == 0
    finally: cmp.RL_DEFAULTS.clear(); cmp.RL_DEFAULTS.update(backup)
    arms = json.loads((tmp_path / 'o' / 'results.json').read_text())['arms']
    assert sorted((a['reg'], a['base_seed']) for a in arms) == [('base', 0), ('base', 1), ('none', 0), ('none', 1)]
    assert all(a['seed'] == 3 for a in arms if a['reg'] == 'none')
    assert len({a['base_sha256'] for a in arms}) == 2                  # two different bases, each arm names its own
    capsys.readouterr()
    assert main(argv[:-1] + ['0']) == 2
    assert '--workers' in capsys.readouterr().err
