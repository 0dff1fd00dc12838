"tools/gpu_check.py: the travelling GPU check, run at `--shape tiny` on CPU as the GPU image would run it."
import json
import math
import os
import subprocess
import sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ('datasets', 'math_verify', 'trl')   # not installed on the GPU image
# Run the script as `python tools/gpu_check.py` would, with the packages the GPU image lacks made unimportable.
WRAPPER = ("import sys, runpy\n"
           f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
           "sys.argv = ['tools/gpu_check.py'] + sys.argv[1:]\n"
           "runpy.run_path('tools/gpu_check.py', run_name='__main__')\n")


def run_check(out, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH='.', OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    p = subprocess.run([sys.executable, '-c', WRAPPER, '--shape', 'tiny', '--out', str(out), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    path = out / 'gpu_check.json'
    return p, (json.loads(path.read_text()) if path.exists() else None)


def numbers(x, path=''):
    "Every (path, number) in a nested JSON value."
    if isinstance(x, dict):
        return [n for k, v in x.items() for n in numbers(v, f'{path}/{k}')]
    if isinstance(x, list):
        return [n for i, v in enumerate(x) for n in numbers(v, f'{path}/{i}')]
    return [(path, x)] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


def test_blocked_imports_really_fail():
    p = subprocess.run([sys.executable, '-c', WRAPPER.split('sys.argv')[0] + 'import datasets'], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode != 0 and 'import of datasets halted' in p.stderr


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    p, d = run_check(tmp_path_factory.mktemp('gpu_check'), '--bf16', 'on')   # the GPU's path: bf16 autocast
    assert p.returncode == 0, p.stderr[-3000:]
    return d


def test_every_section_present(report):
    s = report['sections']
    assert set(s) == {'model', 'matmul', 'decode', 'logprobs', 'train'}
    assert not [k for k, v in s.items() if 'error' in v], s
    assert report['complete'] is True and report['shape'] == 'tiny' and report['device'] == 'cpu'
    assert report['bf16'] is True
    summary = report['summary']
    assert summary['decode_sequences'] == 8 and summary['decode_tokens_per_s_best'] > 0
    assert summary['update_mfu_best'] > 0 and summary['chunked_over_full_peak'] is None   # no memory on CPU
    for k in ('torch', 'transformers', 'accelerate', 'python', 'device_name'):
        assert isinstance(report[k], str) and report[k]


def test_numbers_finite_and_positive(report):
    s = report['sections']
    for key in ('seconds', 'flops', 'tflops'):
        assert math.isfinite(s['matmul'][key]) and s['matmul'][key] > 0
    decode = [v for v in s['decode'].values()]
    assert sorted(v['sequences'] for v in decode) == [4, 4, 8, 8]   # fp32 weights + autocast, and bf16 weights
    assert all(v['tokens_per_s'] > 0 and v['new_tokens'] == 8 for v in decode)   # EOS suppressed: full length
    lp = s['logprobs']
    runs = {k: v for k, v in lp.items() if isinstance(v, dict)}
    assert set(runs) == {'full', 'chunked', 'full, gradient checkpointing', 'chunked, gradient checkpointing'}
    assert all(v['seconds'] > 0 for v in runs.values())
    sums = [v['logp_sum'] for v in runs.values()]
    assert all(math.isclose(x, sums[0], rel_tol=1e-4) for x in sums)              # the same log-probs four ways
    assert lp['memory'].startswith('not measured on CPU')
    for path, x in numbers(s):
        assert math.isfinite(x), path


def test_train_steps(report):
    t = report['sections']['train']
    assert [r['step'] for r in t['steps']] == [1, 2, 3]
    for r in t['steps']:
        for key in ('time_generate', 'time_reference', 'time_update', 'update_flops', 'update_mfu'):
            assert math.isfinite(r[key]) and r[key] > 0, key
        assert math.isfinite(r['loss']) and r['groups_kept'] == t['prompts'] and r['grad_norm'] > 0


def test_partial_json_survives_a_later_failure(tmp_path):
    p, d = run_check(tmp_path, '--sections', 'matmul,decode', '--fail-after', 'matmul')
    assert p.returncode != 0 and '--fail-after matmul' in p.stderr
    assert d['complete'] is False and set(d['sections']) == {'model', 'matmul'} and d['sections']['matmul']['flops'] > 0


def test_bad_arguments(tmp_path):
    p, _ = run_check(tmp_path, '--sections', 'matmul,warp')
    assert p.returncode == 2 and 'warp' in p.stderr
    p = subprocess.run([sys.executable, 'tools/gpu_check.py', '--shape', 'qwen9', '--out', str(tmp_path)], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH='.'), capture_output=True, text=True)
    assert p.returncode == 2 and "--shape must be one of" in p.stderr and 'qwen9' in p.stderr
