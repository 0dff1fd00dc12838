"The `carerft` command end to end: explain, train from flags and from a config file, and its errors."
import json, os, shlex, shutil, subprocess, sys
from pathlib import Path
import pytest
from carerft.cli import main, load_tokenizer
from carerft.tiny import char_tokenizer, tiny_model
from test_trainer import launch_cpu2          # the one 2-process CPU launcher

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp('tiny')
    tok = char_tokenizer('abcx0123456789 ')
    tiny_model(tok, hidden=32, layers=1, heads=2).save_pretrained(d / 'model'); tok.save_pretrained(d / 'model')
    (d / 'data.jsonl').write_text('\n'.join(json.dumps(dict(question=f'x{i}', answer=str(i % 3))) for i in range(6)))
    (d / 'rew.py').write_text('def reward(prompts, completions, answer, **_):\n    return [float(a in c) for c, a in zip(completions, answer)]\n')
    return d

def test_tokenizer_round_trip(tiny):
    tok = load_tokenizer(str(tiny / 'model'))
    assert tok.decode(tok('ab 12').input_ids) == 'ab 12'      # AutoTokenizer would drop the space here

def test_train_from_flags(tiny, tmp_path):
    out = tmp_path / 'run'
    code = main(['train', '--model', str(tiny / 'model'), '--data', str(tiny / 'data.jsonl'), '--prompt-field', 'question',
                 '--reward', f"{tiny / 'rew.py'}:reward", '--algo', 'dapo', '--reg', 'rkl', '--beta', '0.1',
                 '--group-size', '2', '--prompts-per-step', '2', '--max-new-tokens', '3', '--steps', '2', '--lr', '1e-3',
                 '--output-dir', str(out)])
    assert code == 0
    rows = [json.loads(l) for l in (out / 'log.jsonl').read_text().splitlines()]
    assert len(rows) == 2 and all(r['rkl'] >= 0 for r in rows)
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['reg'] == 'RKL(beta=0.1)' and cfg['algo'].startswith('DAPO')
    assert (out / 'final' / 'config.json').exists()

def test_train_from_config_file_flags_win(tiny, tmp_path):
    out = tmp_path / 'run2'
    (tmp_path / 'c.yaml').write_text(f"model: {tiny / 'model'}\ndata: {tiny / 'data.jsonl'}\nprompt-field: question\n"
                                     f"reward: {tiny / 'rew.py'}:reward\nreg: srkl\ngroup_size: 2\nprompts_per_step: 2\n"
                                     f"max_new_tokens: 2\nsteps: 5\noutput_dir: {out}\n")
    assert main(['train', '--config', str(tmp_path / 'c.yaml'), '--steps', '1']) == 0
    assert len((out / 'log.jsonl').read_text().splitlines()) == 1
    assert json.loads((out / 'config.json').read_text())['reg'] == 'SRKL(beta=0.04, alpha=0.8)'

@pytest.mark.parametrize('argv, msg', [
    (['--algo', 'ppo'], 'algo must be one of'),
    (['--reg', 'kl'], 'reg must be one of'),
    (['--alpha', '1.0'], 'alpha must be in [0, 1)'),
    (['--group-size', '1'], '--group-size must be'),
    (['--prompt-field', 'nope'], "no field 'nope'"),
    (['--reward', 'nomodule'], 'reward must be'),
])
def test_train_errors_name_the_argument(tiny, tmp_path, capsys, argv, msg):
    base = ['train', '--model', str(tiny / 'model'), '--data', str(tiny / 'data.jsonl'), '--prompt-field', 'question',
            '--reward', f"{tiny / 'rew.py'}:reward", '--steps', '1', '--output-dir', str(tmp_path)]
    assert main(base + argv) == 2
    assert msg in capsys.readouterr().err

def test_console_script_explain(tmp_path):
    r = subprocess.run(['carerft', 'explain', '--alpha', '0.5', '--out', str(tmp_path / 'f.png')], capture_output=True, text=True)
    assert r.returncode == 0 and 'SRKL <= log(1/alpha) = 0.6931' in r.stdout and (tmp_path / 'f.png').stat().st_size > 10_000

def test_train_two_processes(tiny, tmp_path):
    """`carerft train` under `accelerate launch` with 2 CPU processes, as the trainer chapter shows: both processes score
    completions (the reward records each caller's rank), the run ends with exit code 0 (the command ends with
    `trainer.end()`: without it a process can abort at exit) and the main process writes the log and the final model."""
    exe = shutil.which('carerft') or str(Path(sys.executable).parent / 'carerft')
    (tmp_path / 'rew.py').write_text(
        f"import os\ndef reward(prompts, completions, answer, **_):\n"
        f"    open({str(tmp_path / 'ranks.txt')!r}, 'a').write(os.environ.get('RANK', '?') + '\\n')\n"
        f"    return [float(a in c) for c, a in zip(completions, answer)]\n")
    out = tmp_path / 'run'
    launch_cpu2(exe, 'train', '--model', str(tiny / 'model'), '--data', str(tiny / 'data.jsonl'), '--prompt-field', 'question',
                '--reward', f"{tmp_path / 'rew.py'}:reward", '--group-size', '2', '--prompts-per-step', '2',
                '--max-new-tokens', '3', '--steps', '2', '--output-dir', str(out))
    assert sorted(set((tmp_path / 'ranks.txt').read_text().split())) == ['0', '1']
    assert len((out / 'log.jsonl').read_text().splitlines()) == 2 and (out / 'final' / 'config.json').exists()


# ---- reliability: Ctrl-C, broken files, used folders (each failed before its fix) ----
import signal, time

def train_argv(tiny, out, *extra):
    return ['train', '--model', str(tiny / 'model'), '--data', str(tiny / 'data.jsonl'), '--prompt-field', 'question',
            '--reward', f"{tiny / 'rew.py'}:reward", '--group-size', '2', '--prompts-per-step', '2', '--max-new-tokens', '3',
            '--output-dir', str(out), *extra]

def test_ctrl_c_prints_one_line_with_the_resume_command(tiny, tmp_path):
    """SIGINT to a running `carerft train`: no traceback, one line naming the checkpoint and the exact command to
    resume (with --resume), exit code 130; that command then finishes the run and every step is logged once."""
    exe = shutil.which('carerft') or str(Path(sys.executable).parent / 'carerft')
    out = tmp_path / 'run'
    p = subprocess.Popen([exe, *train_argv(tiny, out, '--steps', '400', '--save-every', '0')], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=os.environ | {'TQDM_DISABLE': '1'})
    log = out / 'log.jsonl'
    t0 = time.time()
    while not (log.exists() and len(log.read_text().splitlines()) >= 2) and time.time() - t0 < 240: time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=240)
    assert p.returncode == 130, stderr[-3000:]
    assert 'Traceback' not in stderr + stdout
    lines = [l for l in stderr.splitlines() if 'carerft train' in l]
    assert len(lines) == 1 and 'interrupted after step' in lines[0] and 'checkpoint saved to' in lines[0], stderr[-3000:]
    cmd = lines[0].split('resume with: ', 1)[1]
    assert cmd.startswith('carerft train ') and cmd.endswith(' --resume')
    step = int(lines[0].split('interrupted after step ')[1].split(';')[0])
    assert [json.loads(l)['step'] for l in log.read_text().splitlines()] == list(range(1, step + 1))
    argv = shlex.split(cmd)[1:]
    argv[argv.index('--steps') + 1] = str(step + 2)             # a shorter run: the settings must match, so ...
    assert main(argv) == 2                                      # ... this is refused (steps differ) ...
    with open(out / 'config.json') as f: saved = json.load(f)
    assert saved['steps'] == 400

def test_resume_after_ctrl_c_finishes_the_run(tiny, tmp_path, capsys):
    "Interrupt in process (KeyboardInterrupt from the reward), then the printed command finishes the run: steps logged once."
    (tmp_path / 'rew.py').write_text(
        "import os\nn = [0]\ndef reward(prompts, completions, answer, **_):\n    n[0] += 1\n"
        "    if n[0] == 3 and not os.environ.get('NO_STOP'): raise KeyboardInterrupt\n"
        "    return [float(a in c) for c, a in zip(completions, answer)]\n")
    argv = train_argv(tiny, tmp_path / 'run', '--steps', '4', '--save-every', '0')
    argv[argv.index('--reward') + 1] = f"{tmp_path / 'rew.py'}:reward"
    assert main(argv) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'interrupted after step 2' in line, line
    os.environ['NO_STOP'] = '1'
    try: assert main(shlex.split(line.split('resume with: ', 1)[1])[1:]) == 0
    finally: del os.environ['NO_STOP']
    assert [json.loads(l)['step'] for l in (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()] == [1, 2, 3, 4]

@pytest.mark.parametrize('argv, msg', [
    (['--max-grad-norm', '-1'], '--max-grad-norm must be a finite number > 0'),
    (['--lr', '-0.001'], '--lr must be a finite number > 0'),
    (['--warmup-steps', '-3'], '--warmup-steps must be an int >= 0'),
    (['--entropy-coef', '-0.1'], '--entropy-coef must be a finite number >= 0'),
    (['--lr-schedule', 'reduce_lr_on_plateau'], '--lr-schedule must be one of'),
])
def test_meaningless_numbers_name_the_flag(tiny, tmp_path, capsys, argv, msg):
    assert main(train_argv(tiny, tmp_path / 'run', '--steps', '1', *argv)) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()                      # refused before anything was written

def test_broken_inputs_are_named(tiny, tmp_path, capsys):
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"question": "x1", "answer": "1"}\n\n{"question": "x2", answer: 2}\n')
    assert main(train_argv(tiny, tmp_path / 'r1', '--steps', '1', '--data', str(bad))) == 2
    assert 'bad.jsonl, line 3: not valid JSON' in capsys.readouterr().err
    cfg = tmp_path / 'c.yaml'; cfg.write_text('steps: 1\ngroup_size: [2\n')
    assert main(train_argv(tiny, tmp_path / 'r2', '--config', str(cfg))) == 2
    err = capsys.readouterr().err
    assert 'c.yaml, line' in err and 'not valid YAML' in err, err
    broken = tmp_path / 'model'; shutil.copytree(tiny / 'model', broken)
    w = broken / 'model.safetensors'; w.write_bytes(w.read_bytes()[:1000])
    argv = train_argv(tiny, tmp_path / 'r3', '--steps', '1'); argv[argv.index('--model') + 1] = str(broken)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert 'does not load' in err and 'truncated' in err and 'Traceback' not in err, err

def test_used_folder_refused_before_loading(tiny, tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(train_argv(tiny, out, '--steps', '1')) == 0
    assert main(train_argv(tiny, out, '--steps', '1')) == 2
    assert '--resume continues it, --overwrite deletes it' in capsys.readouterr().err
    assert main(train_argv(tiny, out, '--steps', '2', '--overwrite')) == 0
    assert [json.loads(l)['step'] for l in (out / 'log.jsonl').read_text().splitlines()] == [1, 2]


# ---- eval, compare and bench: subcommands of the one parser (their argparse code used to live in their chapters) ----
import carerft

@pytest.mark.parametrize('command', ['eval', 'compare', 'bench'])
def test_subcommand_help(command, capsys):
    "Each is a normal subcommand: `carerft COMMAND --help` prints its usage, exit code 0 (bench had add_help=False)."
    with pytest.raises(SystemExit) as stop:
        main([command, '--help'])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f'usage: carerft {command} ')

def test_console_script_bench_help():
    r = subprocess.run(['carerft', 'bench', '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and '--prompts PROMPTS' in r.stdout and '--json JSON' in r.stdout, r.stderr

def test_library_modules_read_no_command_line():
    "Regression (architecture): evaluate, compare and benchmark defined parsers and read sys.argv; now only cli does."
    for name in ('evaluate', 'compare', 'benchmark'):
        src = (Path(carerft.__file__).parent / f'{name}.py').read_text()
        assert 'argparse' not in src and 'sys.argv' not in src, name

@pytest.mark.parametrize('argv, said', [
    (['eval', 'm', '--limit', '0'], 'carerft eval: error: --limit must be an int >= 1, got 0'),
    (['compare', '--entropy-coefs', '0'],
     'carerft compare: error: --entropy-coefs must be finite numbers > 0, got 0.0'),
    (['compare', '--base-steps', '0'], 'carerft compare: error: --base-steps must be an int >= 1, got 0'),
    (['bench', '--group-size', '1'], 'carerft bench: error: --group-size must be an int >= 2, got 1'),
])
def test_library_errors_say_the_flag(argv, said, capsys):
    "The library functions name their arguments (entropy_coefs, prompts_per_step); the command says the flag."
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == said


# ---- train --preset, several rewards, and the plan check before training ----
from unittest import mock


def test_train_preset_errors_name_the_flag(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('CARERFT_DATA', raising=False)
    base = ['train', '--model', str(tiny / 'model'), '--output-dir', str(tmp_path / 'r')]
    assert main(base + ['--preset', 'care']) == 2
    assert "--preset must be one of care-paper, got 'care'" in capsys.readouterr().err
    assert main(base + ['--preset', 'care-paper']) == 2          # no --data and no $CARERFT_DATA/math_train
    assert '--data is required: no MATH train found at $CARERFT_DATA/math_train' in capsys.readouterr().err
    assert main(base + ['--data', str(tiny / 'data.jsonl')]) == 2   # no preset: --data is required, no MATH default
    assert "no field 'prompt'" in capsys.readouterr().err


def test_reward_list_with_wrong_weights_names_the_flag(tiny, tmp_path, capsys):
    argv = ['train', '--model', str(tiny / 'model'), '--data', str(tiny / 'data.jsonl'), '--prompt-field', 'question',
            '--reward', f"gsm8k,{tiny / 'rew.py'}:reward", '--reward-weights', '1,2,3', '--output-dir', str(tmp_path)]
    assert main(argv) == 2
    assert '--reward-weights has 3 weights for 2 reward functions' in capsys.readouterr().err


def test_two_rewards_are_logged_each(tiny, tmp_path):
    out = tmp_path / 'run'
    assert main(['train', '--model', str(tiny / 'model'), '--data', str(tiny / 'data.jsonl'), '--prompt-field', 'question',
                 '--reward', f"gsm8k,{tiny / 'rew.py'}:reward", '--reward-weights', '0.5,1', '--group-size', '2',
                 '--prompts-per-step', '2', '--max-new-tokens', '2', '--steps', '1', '--output-dir', str(out)]) == 0
    row = json.loads((out / 'log.jsonl').read_text().splitlines()[0])
    assert row['reward_mean'] == pytest.approx(0.5 * row['reward_gsm8k_reward'] + row['reward_reward'])


def test_context_too_short_is_exit_2_naming_the_flag(tiny, tmp_path, capsys):
    "The tiny model has a 512-token context: a prompt of 2 characters + 511 new tokens does not fit it, on any device."
    argv = ['train', '--model', str(tiny / 'model'), '--data', str(tiny / 'data.jsonl'), '--prompt-field', 'question',
            '--max-new-tokens', '511', '--steps', '1', '--output-dir', str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert '--max-new-tokens too long: the longest prompt (2 tokens) + max_new_tokens = 513' in err
    assert "exceeds the model's 512-token context" in err and not (tmp_path / 'log.jsonl').exists()


def test_plan_that_does_not_fit_the_gpu_is_exit_3(tiny, tmp_path, capsys):
    "On a GPU (stood in for: 1 KiB free), the plan is checked before training; exit 3 as `carerft plan`."
    argv = ['train', '--model', str(tiny / 'model'), '--data', str(tiny / 'data.jsonl'), '--prompt-field', 'question',
            '--steps', '1', '--output-dir', str(tmp_path)]
    with mock.patch('torch.cuda.is_available', return_value=True), \
            mock.patch('torch.cuda.mem_get_info', return_value=(1024, 2**30)):
        assert main(argv) == 3
    err = capsys.readouterr().err
    line = err.splitlines()[-1]                                      # after the weight-loading progress bar
    assert line.startswith("carerft train: does not fit: peak ") and "the GPU's free GiB 0.0" in line
    assert not (tmp_path / 'log.jsonl').exists()


def test_eval_preset_from_the_command_line(tmp_path, capsys):
    "`carerft eval --preset care-paper`: the preset's settings reach run_eval, flags override them, errors name flags."
    from test_evaluate import FIX, CHARS, BENCHMARKS
    tok = char_tokenizer(CHARS)
    model = tiny_model(tok, hidden=32, layers=1, heads=2, seed=5, max_positions=1024)   # the paper prompt: ~500 chars
    model.save_pretrained(tmp_path / 'm')
    tok.save_pretrained(tmp_path / 'm')
    argv = ['eval', str(tmp_path / 'm'), '--preset', 'care-paper', '--data', str(FIX), '--limit', '1',
            '--n-samples', '2', '--max-new-tokens', '4', '--out', str(tmp_path / 'out'), '--no-progress']
    assert main(argv) == 0
    report = (tmp_path / 'out' / 'report.md').read_text()
    assert 'care-paper: n_samples 2, max_new_tokens 4, temperature 0.7, prompt paper' in report
    assert sorted(p.name for p in (tmp_path / 'out').iterdir() if p.is_dir()) == sorted(BENCHMARKS)
    assert main(argv[:3] + ['care', '--data', str(FIX), '--out', str(tmp_path / 'o2')]) == 2
    assert "--preset must be one of care-paper, got 'care'" in capsys.readouterr().err
    assert main(argv + ['--batch-tokens', '0']) == 2
    assert '--batch-tokens' in capsys.readouterr().err


def test_module_entry_point():
    "`python -m carerft.cli` is the command (what `accelerate launch -m carerft.cli` runs); it used to exit 0 silently."
    r = subprocess.run([sys.executable, '-m', 'carerft.cli', 'plan', '--shape', 'qwen2.5-7b', '--json'],
                       capture_output=True, text=True)
    assert r.returncode == 3 and json.loads(r.stdout)['fits'] is False, r.stderr


def test_train_under_accelerate_launch_from_a_config(tiny, tmp_path, capsys):
    "--accelerate-config: the same command runs under `accelerate launch` (here a one-process CPU config file)."
    cfg = tmp_path / 'cpu.yaml'
    cfg.write_text('compute_environment: LOCAL_MACHINE\ndistributed_type: "NO"\nmixed_precision: "no"\n'
                   'num_machines: 1\nnum_processes: 1\nuse_cpu: true\n')
    out = tmp_path / 'run'
    assert main(train_argv(tiny, out, '--steps', '2', '--accelerate-config', str(cfg))) == 0
    assert [json.loads(l)['step'] for l in (out / 'log.jsonl').read_text().splitlines()] == [1, 2]
    assert main(train_argv(tiny, tmp_path / 'r2', '--accelerate-config=zero4')) == 2
    assert "--accelerate-config 'zero4': no such file, and not a shipped config" in capsys.readouterr().err
    assert not (tmp_path / 'r2').exists()                               # refused before anything started
