"The `carerft` command end to end: explain, train from flags and from a config file, and its errors."
import json, os, shutil, subprocess, sys
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
    (['--group-size', '1'], 'group_size must be'),
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
