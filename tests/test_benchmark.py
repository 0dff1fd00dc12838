"""Fairness checks of the carerft vs TRL benchmark (carerft.benchmark), on a much smaller model than the real benchmark.

The comparison is only meaningful if both trainers do the same work per step: the same number of completions, each
exactly max_new_tokens long (EOS suppressed in both), and the reported medians are those of the measured rows.
"""
import json
import pytest
import torch

pytest.importorskip('trl')
from carerft.benchmark import benchmark, summary, bench_prompts, CHARS, work_model, matched_configs, count_a
from carerft.cli import main
from carerft.tiny import char_tokenizer, tiny_model
from carerft.trainer import RFTTrainer

SMALL = dict(hidden=32, layers=1, heads=2)

@pytest.fixture(scope='module')
def res():
    return benchmark(steps=1, warmup=1, threads=2, prompts_per_step=4, group_size=4, max_new_tokens=32, verbose=False, **SMALL)

def test_structure(res):
    assert {'carerft', 'trl', 'ratio', 'ratio_generate', 'ratio_update', 'settings'} <= set(res)
    for name in ('carerft', 'trl'):
        assert {'step', 'generate', 'update', 'tokens', 'rows'} <= set(res[name])
        assert len(res[name]['rows']) == 2                                   # 1 warm-up + 1 measured
    assert res['settings']['steps'] == 1 and res['settings']['warmup'] == 1 and res['settings']['trl'].startswith('1.')

def test_timings_positive_and_consistent(res):
    for name in ('carerft', 'trl'):
        r = res[name]
        assert r['step'] > 0 and r['generate'] > 0 and r['update'] > 0
        assert r['step'] == pytest.approx(r['generate'] + r['update'])
        assert r['step'] == r['rows'][1]['step']                             # median of the single measured row, not the warm-up
    assert res['ratio'] == pytest.approx(res['carerft']['step'] / res['trl']['step'])
    assert res['ratio_generate'] == pytest.approx(res['carerft']['generate'] / res['trl']['generate'])

def test_same_completion_tokens(res):
    "Both trainers saw N x T completion tokens every step (EOS suppressed in both): the comparison is like for like."
    N, T = 4 * 4, 32
    assert res['carerft']['tokens'] == [N * T, N * T]
    assert res['trl']['tokens'] == [N * T, N * T]                          # TRL's completion mask
    assert [r['generated'] for r in res['trl']['rows']] == [N * T, N * T]  # what TRL's generate returned

def test_threads_restored(res):
    before = torch.get_num_threads()
    benchmark(steps=1, warmup=0, threads=1, prompts_per_step=2, group_size=2, max_new_tokens=2, verbose=False, **SMALL)
    assert torch.get_num_threads() == before

@pytest.mark.parametrize('length', [13, 20, 64, 200])
def test_prompts_equal_length(length):
    ps = bench_prompts(8, length)
    assert len(set(ps)) == 8 and {len(p) for p in ps} == {length} and set(''.join(ps)) <= set(CHARS)
    tok = char_tokenizer(CHARS)
    assert {len(ids) for ids in tok(ps)['input_ids']} == {length}          # P characters are P tokens, no specials added

def test_settings_record_prompt_len(res):
    assert res['settings']['prompt_len'] == 64
    assert res['ratio_work'] == pytest.approx(work_model(4, 4, 64, 32)['ratio'])

@pytest.mark.parametrize('B,G,P,T', [(2, 4, 13, 5), (3, 2, 20, 1), (1, 3, 30, 4)])
def test_work_model_counts_carerft_positions(tmp_path, B, G, P, T):
    "work_model's carerft counts equal the token positions a real train_step feeds its policy and reference models."
    tok = char_tokenizer(CHARS)
    cfg, _ = matched_configs(str(tmp_path), prompts_per_step=B, group_size=G, max_new_tokens=T, steps=1)
    policy, ref = tiny_model(tok, hidden=16, layers=1, heads=2), tiny_model(tok, hidden=16, layers=1, heads=2)
    seen = dict(policy=0, ref=0)
    def counter(name):
        def hook(module, args, kwargs): seen[name] += kwargs['input_ids'].numel()
        return hook
    policy.register_forward_pre_hook(counter('policy'), with_kwargs=True)
    ref.register_forward_pre_hook(counter('ref'), with_kwargs=True)
    tr = RFTTrainer(policy, tok, [{'prompt': p} for p in bench_prompts(B, P)], count_a, cfg, ref_model=ref)
    tr.train_step()
    w = work_model(B, G, P, T)['carerft']
    assert seen['ref'] == w['reference']
    assert seen['policy'] == w['generate'] + w['policy'] // 3               # decode loop + the one scoring forward

@pytest.mark.parametrize('kw,msg', [(dict(steps=0), 'steps'), (dict(warmup=-1), 'warmup'), (dict(threads=0), 'threads'),
                                    (dict(group_size=1), 'group_size'), (dict(max_new_tokens=0), 'max_new_tokens'),
                                    (dict(prompt_len=12), 'prompt_len')])
def test_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg): benchmark(**kw)

def test_bench_command_json_and_last_line(tmp_path, capsys):
    out = tmp_path / 'r.json'
    rc = main(['bench', '--steps', '1', '--warmup', '0', '--hidden', '32', '--layers', '1', '--heads', '2',
               '--prompts', '2', '--group-size', '2', '--max-new-tokens', '4', '--json', str(out)])
    assert rc == 0
    saved = json.loads(out.read_text())
    assert saved['carerft']['tokens'] == saved['trl']['tokens'] == [2 * 2 * 4]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == summary(saved) and last.startswith('carerft/TRL step-time ratio: ')

def test_bench_command_bad_argument_names_the_flag(capsys):
    assert main(['bench', '--threads', '0']) == 2
    assert 'threads must be an int >= 1' in capsys.readouterr().err
    assert main(['bench', '--prompts', '0']) == 2                            # the flag, not the argument it sets
    assert capsys.readouterr().err.strip() == 'carerft bench: error: --prompts must be an int >= 1, got 0'

def test_bench_prints_its_summary_once(tmp_path, capsys):
    "Regression: `carerft bench --json` printed the summary line twice (once by benchmark(), once more after the file note)."
    rc = main(['bench', '--steps', '1', '--warmup', '0', '--hidden', '32', '--layers', '1', '--heads', '2',
               '--prompts', '2', '--group-size', '2', '--max-new-tokens', '2', '--json', str(tmp_path / 'r.json')])
    assert rc == 0
    cap = capsys.readouterr()
    assert (cap.out + cap.err).count('carerft/TRL step-time ratio: ') == 1
    assert cap.out.strip().splitlines()[-1].startswith('carerft/TRL step-time ratio: ')   # still the last line of stdout
    assert f"result written to {tmp_path / 'r.json'}" in cap.out + cap.err
