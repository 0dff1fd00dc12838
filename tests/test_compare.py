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


@pytest.fixture
def small_cli(monkeypatch, tmp_path_factory):
    "`carerft compare` on the miniature world and RL settings: returns the flags every test run shares."
    monkeypatch.setattr(tw, 'ToyWorldConfig', functools.partial(tw.ToyWorldConfig, **WORLD))
    for k, v in dict(SMALL_RL, steps=None).items():
        if v is not None: monkeypatch.setitem(cmp.RL_DEFAULTS, k, v)
    cache = tmp_path_factory.getbasetemp() / 'cli-cache'
    return ['--steps', '3', '--n-questions', '8', '--n-samples', '2', '--cache-dir', str(cache), '--no-progress']


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
    stale = tmp_path / 'o' / 'grpo-srkl-b0.04-a0.8-s0'                          # an unfinished arm of the old settings
    (stale / 'checkpoints' / 'step-2').mkdir(parents=True)
    res = compare(tmp_path / 'o', arms, rl=dict(SMALL_RL, steps=2), overwrite=True, **kw)
    assert [a['steps'] for a in res] == [0, 2] and not stale.exists()
    assert len((tmp_path / 'o' / 'grpo-none-s0' / 'log.jsonl').read_text().splitlines()) == 2
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
    (tmp_path / 'o' / 'grpo-none-s0').mkdir(parents=True)
    (tmp_path / 'o' / 'grpo-none-s0' / 'log.jsonl').write_text('{"step": 1}\n')
    res = compare(tmp_path / 'o', arms, **kw)
    assert len((tmp_path / 'o' / 'grpo-none-s0' / 'log.jsonl').read_text().splitlines()) == SMALL_RL['steps'] and len(res) == 2


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
    flags = ['--regs', 'srkl', '--steps', '60', '--n-questions', '8', '--n-samples', '2', '--cache-dir', str(tmp_path / 'c'), '--no-progress']
    run = lambda out, extra=(): subprocess.run([sys.executable, str(driver), '--out', str(out)] + flags + list(extra), env=env,
                                               capture_output=True, text=True, timeout=300)
    full = run(tmp_path / 'full')                                    # uninterrupted; also caches the base model
    assert full.returncode == 0, full.stderr
    out = tmp_path / 'cut'
    p = subprocess.Popen([sys.executable, str(driver), '--out', str(out)] + flags, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    log, t0 = out / 'grpo-srkl-b0.04-a0.8-s0' / 'log.jsonl', time.time()
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
    assert rows(tmp_path / 'full' / 'grpo-srkl-b0.04-a0.8-s0' / 'log.jsonl') == rows(log)   # the same training, step by step


def test_each_rl_arm_shows_a_step_bar(tmp_path, capfd):
    "Regression: compare showed no progress during each RL arm. Each arm gets a per-step bar named after it; progress=False is silent."
    arms = plan_arms(regs=('none',))
    kw = dict(world=tw.ToyWorldConfig(**WORLD), rl=SMALL_RL, eval_kw=EVAL, cache_dir=tmp_path / 'cache')
    compare(tmp_path / 'a', arms, progress=True, **kw)
    err = capfd.readouterr().err
    assert 'grpo-none-s0: ' in err and f"{SMALL_RL['steps']}/{SMALL_RL['steps']}" in err
    compare(tmp_path / 'b', arms, progress=False, **kw)
    assert capfd.readouterr().err.strip() == ''


@pytest.mark.parametrize('kw,said', [
    (dict(steps=0), 'steps must be an int >= 1, got 0'), (dict(threads=0), 'threads must be an int >= 1, got 0'),
    (dict(lr=float('inf')), 'lr must be a finite number > 0, got inf'),
    (dict(n_samples=2.0), 'n_samples must be an int >= 1'),
    (dict(entropy_coefs=(0.0,)), 'entropy_coefs must be finite numbers > 0'),
    (dict(regs=('kl',)), 'regs must be among')])
def test_run_compare_names_the_argument(tmp_path, kw, said):
    "run_compare is the library function behind `carerft compare`: every argument is checked before any work, by name."
    with pytest.raises(ValueError) as e:
        cmp.run_compare(tmp_path / 'o', **kw)
    assert str(e.value).startswith(said) and not (tmp_path / 'o').exists()
