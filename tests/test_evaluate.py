"Tests of carerft.evaluate: loaders on self-written fixtures, pass@k, greedy and choice scoring against references, records, resume, report and CLI."
import json
import math
import os
import subprocess
import sys
from pathlib import Path
import numpy as np
import pytest
import torch
import carerft.evaluate as ev
from carerft.calibration import ece, brier
from carerft.cli import main
from carerft.evaluate import (ABSTAIN, BENCHMARKS, choice_logprobs, evaluate, greedy, load_benchmark,
                              markdown_table, pass_at_k, question_record, read_records, summarize, write_report)
from carerft.tiny import char_tokenizer, tiny_model

FIX = Path(__file__).parent / 'fixtures' / 'evaluate'
CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .:,?!\'"#$\\{}()+-*/=^_<>\n'


@pytest.fixture(scope='module')
def tok(): return char_tokenizer(CHARS)

@pytest.fixture(scope='module')
def model(tok): return tiny_model(tok, hidden=32, layers=1, heads=2, seed=3)

@pytest.fixture(scope='module')
def rows(): return {name: load_benchmark(name, FIX) for name in BENCHMARKS}


# ---------------------------------------------------------------- loaders
def test_fixtures_load_with_normalised_fields(rows):
    for name, rs in rows.items():
        assert rs and all({'benchmark', 'id', 'question', 'prompt', 'answer', 'answerable'} <= set(r) for r in rs), name
        assert all(r['benchmark'] == name and r['question'] in r['prompt'] for r in rs)
        assert len({r['id'] for r in rs}) == len(rs), f'{name}: ids must be unique'
    assert [r['answer'] for r in rows['gsm8k']] == ['5', '2000', '12']
    assert [r['answer'] for r in rows['math500']] == ['2', '\\frac{1}{2}', '2']
    assert '\\boxed{}' in rows['math500'][0]['prompt'] and '####' in rows['gsm8k'][0]['prompt']
    sa = rows['selfaware']
    assert [(r['id'], r['answerable'], r['answer']) for r in sa] == [
        ('1', True, ['blue', 'light blue']), ('2', True, ['Paris']), ('3', False, None), ('4', False, None)]
    tq = rows['truthfulqa'][1]
    assert tq['choices'] == ['No, cats cannot read.', 'Yes, every morning.'] and tq['labels'] == [1, 0]
    assert tq['mc2_labels'] == [1, 1, 0] and tq['answer'] == 'No, cats cannot read.'


def test_file_folder_and_subfolder_paths_agree(rows):
    assert load_benchmark('gsm8k', FIX / 'gsm8k') == rows['gsm8k']
    assert load_benchmark('gsm8k', FIX / 'gsm8k' / 'test.jsonl') == rows['gsm8k']
    assert load_benchmark('selfaware', FIX, limit=2) == rows['selfaware'][:2]


def test_hub_schemas(tmp_path):
    "The hub's TruthfulQA ({'choices', 'labels'}) and a string SelfAware answer normalise like the files."
    tq = [{'question': 'Q?', 'mc1_targets': {'choices': ['a', 'b'], 'labels': [0, 1]},
           'mc2_targets': {'choices': ['a', 'b', 'c'], 'labels': [0, 1, 1]}}]
    (tmp_path / 'tq.json').write_text(json.dumps(tq))
    r = load_benchmark('truthfulqa', tmp_path / 'tq.json')[0]
    assert (r['choices'], r['labels'], r['answer'], r['mc2_labels']) == (['a', 'b'], [0, 1], 'b', [0, 1, 1])
    (tmp_path / 'sa.jsonl').write_text(json.dumps({'question': 'q', 'answer': 'x', 'answerable': True}) + '\n')
    assert load_benchmark('selfaware', tmp_path / 'sa.jsonl')[0]['answer'] == ['x']


@pytest.mark.parametrize('name,field', [('math500', 'problem'), ('math500', 'answer'), ('gsm8k', 'question'),
                                        ('selfaware', 'answerable'), ('truthfulqa', 'mc2_targets')])
def test_missing_field_names_file_and_field(tmp_path, name, field):
    src = ev._local_file(name, FIX)
    raw = ev._read_rows(src)
    del raw[1][field]
    bad = tmp_path / src.name
    bad.write_text(''.join(json.dumps(r) + '\n' for r in raw) if bad.suffix == '.jsonl' else json.dumps(raw))
    with pytest.raises(ValueError) as e: load_benchmark(name, bad)
    assert str(bad) in str(e.value) and f"row 1 has no field {field!r}" in str(e.value)


def test_bad_names_paths_and_gsm8k_without_hashes(tmp_path):
    with pytest.raises(ValueError, match='known benchmarks are math500, gsm8k, selfaware, truthfulqa'): load_benchmark('mmlu')
    with pytest.raises(FileNotFoundError, match='no truthfulqa data at'): load_benchmark('truthfulqa', tmp_path)
    for limit in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match='limit must be'): load_benchmark('gsm8k', FIX, limit=limit)
    (tmp_path / 'g.jsonl').write_text(json.dumps({'question': 'q', 'answer': 'no final number'}) + '\n')
    with pytest.raises(ValueError, match="no final '#### <number>'"): load_benchmark('gsm8k', tmp_path / 'g.jsonl')


def test_hub_failure_suggests_a_local_path(monkeypatch):
    import datasets
    def offline(*a, **k): raise ConnectionError('no internet')
    monkeypatch.setattr(datasets, 'load_dataset', offline)
    with pytest.raises(RuntimeError, match=r"could not load gsm8k from the hub \(openai/gsm8k.*Pass a local file or folder"):
        load_benchmark('gsm8k')


def test_hub_rows_are_normalised(monkeypatch):
    import datasets
    calls = []
    def fake(path, config, split): calls.append((path, config, split)); return [{'question': 'q', 'answer': 'x\n#### 7'}]
    monkeypatch.setattr(datasets, 'load_dataset', fake)
    assert load_benchmark('gsm8k')[0]['answer'] == '7' and calls == [('openai/gsm8k', 'main', 'test')]


# ---------------------------------------------------------------- pass@k
def test_pass_at_k_matches_binomials():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert math.isclose(pass_at_k(n, c, k), 1 - math.comb(n - c, k) / math.comb(n, k), abs_tol=1e-12), (n, c, k)


def test_pass_at_k_is_unbiased_monte_carlo():
    "Average over every k-subset of the n samples: the estimator equals the subset frequency exactly."
    from itertools import combinations
    samples = [1, 0, 0, 1, 0, 0, 0]
    for k in (1, 2, 3, 5):
        subsets = list(combinations(samples, k))
        assert math.isclose(pass_at_k(7, 2, k), np.mean([any(s) for s in subsets]), abs_tol=1e-12)


@pytest.mark.parametrize('args', [(0, 0, 1), (3, 4, 1), (3, 1, 0), (3, 1, 4), (3.0, 1, 1), (3, -1, 1)])
def test_pass_at_k_rejects_bad_counts(args):
    with pytest.raises(ValueError, match='pass_at_k needs'): pass_at_k(*args)


# ---------------------------------------------------------------- decoding and scoring against references
def _argmax_loop(model, tok, prompt, T):
    ids = tok(prompt)['input_ids']; n = len(ids)
    with torch.no_grad():
        for _ in range(T):
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id: break
            ids.append(nxt)
    return tok.decode(ids[n:])


def test_greedy_matches_an_unbatched_argmax_loop(model, tok):
    prompts = ['a', 'Question: 3+4?\nAnswer:', 'xyz 12']
    assert greedy(model, tok, prompts, 10) == [_argmax_loop(model, tok, p, 10) for p in prompts]


def test_greedy_equals_generate_cut_at_the_first_eos(model, tok):
    "greedy() (the rollout sampler with top_k=1) gives generate(do_sample=False)'s text, cut at the first EOS."
    from carerft.rollout import special_ids, encode_prompts
    prompts = ['Q: 2+2?\nA:', 'Q: capital?\nA:', 'x']
    pad_id, eos = special_ids(tok, model)
    ids, mask = encode_prompts(tok, prompts, pad_id)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=pad_id,
                         eos_token_id=eos, temperature=None, top_p=None, top_k=None)[:, ids.shape[1]:]
    want = []
    for row in out.tolist():
        cut = next((i for i, t_ in enumerate(row) if t_ in eos), len(row))
        want.append(tok.decode(row[:cut], skip_special_tokens=True))
    assert greedy(model, tok, prompts, 6) == want


def test_choice_logprobs_match_unpadded_float64_reference(model, tok):
    prompt, choices = 'Q: How many legs?\nA:', ['Eight.', 'Six.', 'A very long answer, with commas.', 'x']
    got = choice_logprobs(model, tok, prompt, choices)
    p = tok(prompt)['input_ids']
    for j, c in enumerate(choices):
        cid = tok(' ' + c, add_special_tokens=False)['input_ids']
        with torch.no_grad(): lp = model(torch.tensor([p + cid])).logits[0].double().log_softmax(-1)
        ref = sum(float(lp[len(p) - 1 + t, cid[t]]) for t in range(len(cid)))
        assert math.isclose(float(got[j]), ref, abs_tol=1e-4), (c, float(got[j]), ref)


# ---------------------------------------------------------------- records and summary
def test_question_record_ties_none_and_abstentions(rows):
    mr = rows['math500'][0]                                             # gold 2
    b = BENCHMARKS['math500']
    rec = question_record(mr, ['\\boxed{3}', '\\boxed{2}', '\\boxed{2.0}', '\\boxed{3}'], 'no answer here', b)
    assert (rec['majority'], rec['confidence'], rec['correct']) == ('3', 0.5, False)   # tie: first seen wins
    assert rec['sample_correct'] == [False, True, True, False] and rec['greedy_answer'] is None and not rec['greedy_correct']
    rec = question_record(mr, ['nothing', 'still nothing'], 'x', b)
    assert (rec['majority'], rec['confidence'], rec['correct'], rec['majority_abstained']) == (None, 0.0, False, False)
    rec = question_record(mr, ["I don't know", 'I do not know.', '\\boxed{2}'], '\\boxed{2}', b)
    assert (rec['majority'], rec['majority_abstained'], rec['correct'], rec['greedy_correct']) == (ABSTAIN, True, False, True)
    assert rec['abstained'] == [True, True, False]
    json.dumps(rec)   # records are JSON-able


def _rec(answerable, sample_correct, conf, correct, abst, greedy_correct):
    return dict(benchmark='selfaware', answerable=answerable, n_samples=len(sample_correct), sample_correct=sample_correct,
                confidence=conf, correct=correct, majority_abstained=abst, greedy_correct=greedy_correct)


def test_summarize_against_hand_computation():
    recs = [_rec(True, [1, 1, 0, 0], 0.5, True, False, True), _rec(True, [0, 0, 0, 0], 0.75, False, True, False),
            _rec(False, [1, 1, 1, 0], 0.75, True, True, True), _rec(False, [0, 0, 0, 0], 1.0, False, False, False),
            _rec(False, [0, 1, 0, 0], 0.5, False, False, False)]
    s = summarize(recs, n_boot=50)
    assert s['n_questions'] == 5 and s['n_samples'] == 4 and sorted(s['pass_at_k']) == [1, 2, 4]
    assert math.isclose(s['majority_accuracy'], 2 / 5) and math.isclose(s['greedy_accuracy'], 2 / 5)
    assert math.isclose(s['hallucination_rate'], 2 / 3) and math.isclose(s['abstention_rate'], 1 / 2)
    assert math.isclose(s['pass_at_k'][1], np.mean([0.5, 0, 0.75, 0, 0.25]))
    assert math.isclose(s['pass_at_k'][4], 3 / 5)
    conf, y = [0.5, 0.75, 0.75, 1.0, 0.5], [1, 0, 1, 0, 0]
    assert math.isclose(s['ece'][0], ece(conf, y)) and math.isclose(s['brier'][0], brier(conf, y))
    assert s['ece'][1] <= s['ece'][0] <= s['ece'][2]
    # AUROC by pair counting: right answers have conf {0.5, 0.75}, wrong {0.75, 1.0, 0.5}
    pairs = [(a > b) + 0.5 * (a == b) for a in (0.5, 0.75) for b in (0.75, 1.0, 0.5)]
    assert math.isclose(s['auroc'][0], np.mean(pairs))


def test_summarize_limit_cases():
    s = summarize([_rec(True, [1, 1], 1.0, True, False, True)], n_boot=20)
    assert s['hallucination_rate'] is None and s['abstention_rate'] == 0.0
    assert s['auroc'] == [None, None, None]                            # one class: AUROC undefined
    with pytest.raises(ValueError, match='records is empty'): summarize([])


# ---------------------------------------------------------------- evaluate end to end
def test_evaluate_end_to_end_on_every_fixture_and_report(model, tok, rows, tmp_path):
    results = {}
    for name, rs in rows.items():
        r = evaluate(model, tok, rs, n_samples=3, max_new_tokens=6, out_dir=tmp_path / name, batch_size=2, n_boot=50, progress=False)
        write_report(r, tmp_path / name); results[name] = r
        assert [x['id'] for x in r['records']] == [x['id'] for x in rs]
        assert read_records(tmp_path / name / 'records.jsonl') == r['records']
        assert {p.name for p in (tmp_path / name).iterdir()} == {'records.jsonl', 'summary.json', 'report.md', 'reliability.png'}
        assert (tmp_path / name / 'reliability.png').read_bytes()[:4] == b'\x89PNG'
        saved = json.loads((tmp_path / name / 'summary.json').read_text())
        assert saved['n_questions'] == len(rs) and saved['benchmark'] == name
    for name in ('math500', 'gsm8k', 'selfaware'):
        recs, s = results[name]['records'], results[name]['summary']
        assert all(len(x['completions']) == 3 == len(x['answers']) for x in recs)
        assert math.isclose(s['majority_accuracy'], np.mean([x['correct'] for x in recs]))
        assert math.isclose(s['pass_at_k'][3], np.mean([any(x['sample_correct']) for x in recs]))
    tq = results['truthfulqa']
    assert all(x['chosen'] == int(np.argmax(x['logp'])) for x in tq['records'])
    assert math.isclose(tq['summary']['mc2'], np.mean([x['mc2'] for x in tq['records']]))
    table = markdown_table([r['summary'] for r in results.values()])
    assert len(table.splitlines()) == 6 and '| truthfulqa | 3 | – | – | – | – |' in table


def test_evaluate_scores_a_perfect_model_perfectly(monkeypatch, tok, model, rows):
    "With the sampler and greedy decoding replaced by an oracle, every accuracy is 1 and nothing is hallucinated."
    golds = {r['prompt']: (r['answer'], r['answerable']) for name in ('math500', 'gsm8k', 'selfaware') for r in rows[name]}
    def say(p):
        gold, answerable = golds[p]
        return "I don't know." if not answerable else (gold[0] if isinstance(gold, list) else f'\\boxed{{{gold}}}')
    class Roll:
        def __init__(self, prompts, G): self.completions = [say(p) for p in prompts for _ in range(G)]
    monkeypatch.setattr(ev, 'sample', lambda m, t, prompts, G, *a, **k: Roll(prompts, G))
    monkeypatch.setattr(ev, 'greedy', lambda m, t, prompts, T: [say(p) for p in prompts])
    for name in ('math500', 'gsm8k', 'selfaware'):
        s = evaluate(model, tok, rows[name], n_samples=4, n_boot=20, progress=False)['summary']
        assert s['majority_accuracy'] == s['greedy_accuracy'] == s['pass_at_k'][1] == 1.0, name
        assert s['ece'][0] == 0.0 and s['brier'][0] == 0.0
    assert s['hallucination_rate'] == 0.0 and s['abstention_rate'] == 0.0


def test_evaluate_counts_hallucinations_and_abstentions(monkeypatch, tok, model, rows):
    "A model that answers 'Paris' to everything: right on one answerable question, hallucinates on both unanswerable."
    class Roll:
        def __init__(self, prompts, G): self.completions = ['Paris'] * (len(prompts) * G)
    monkeypatch.setattr(ev, 'sample', lambda m, t, prompts, G, *a, **k: Roll(prompts, G))
    monkeypatch.setattr(ev, 'greedy', lambda m, t, prompts, T: ["I don't know"] * len(prompts))
    s = evaluate(model, tok, rows['selfaware'], n_samples=2, n_boot=20, progress=False)['summary']
    assert (s['majority_accuracy'], s['greedy_accuracy'], s['hallucination_rate'], s['abstention_rate']) == (0.25, 0.5, 1.0, 0.0)


class _Counting(torch.nn.Module):
    "Wraps a model, counts forward calls, and raises after `fail_after` calls (a crash mid-evaluation)."
    def __init__(self, inner, fail_after=None):
        super().__init__(); self.inner, self.calls, self.fail_after = inner, 0, fail_after
        self.config, self.generation_config = inner.config, inner.generation_config
    def forward(self, *a, **k):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after: raise KeyboardInterrupt('simulated crash')
        return self.inner(*a, **k)
    def generate(self, *a, **k): return self.inner.generate(*a, **k)


@pytest.mark.filterwarnings('ignore:`past_key_values` is deprecated')
def test_interrupted_evaluation_resumes_to_the_same_records(model, tok, rows, tmp_path):
    rs = rows['selfaware']
    kw = dict(n_samples=3, max_new_tokens=5, batch_size=2, n_boot=20, progress=False)
    full = evaluate(model, tok, rs, **kw)
    first = _Counting(model); evaluate(first, tok, rs[:2], **kw)
    crashing = _Counting(model, fail_after=first.calls)   # crashes in the second batch
    with pytest.raises(KeyboardInterrupt): evaluate(crashing, tok, rs, out_dir=tmp_path, **kw)
    on_disk = read_records(tmp_path / 'records.jsonl')
    assert [r['id'] for r in on_disk] == ['1', '2']                # the first batch survived the crash
    with open(tmp_path / 'records.jsonl', 'a') as f: f.write('{"id": "3", "torn')   # and a torn last line
    counting = _Counting(model)
    resumed = evaluate(counting, tok, rs, out_dir=tmp_path, **kw)
    assert resumed['records'] == full['records'] and resumed['summary'] == full['summary']
    assert 0 < counting.calls <= 2 * kw['max_new_tokens']         # only the second batch: its sampling and greedy decode loops
    again = _Counting(model)
    assert evaluate(again, tok, rs, out_dir=tmp_path, **kw)['records'] == full['records'] and again.calls == 0
    with pytest.raises(ValueError, match='n_samples != 4'): evaluate(model, tok, rs, out_dir=tmp_path, **dict(kw, n_samples=4))


def test_read_records_refuses_a_corrupt_middle_line(tmp_path):
    (tmp_path / 'r.jsonl').write_text('{"id": 1}\nnot json\n{"id": 2}\n')
    with pytest.raises(ValueError, match='line 2 is not JSON'): read_records(tmp_path / 'r.jsonl')
    assert read_records(tmp_path / 'missing.jsonl') == []


def test_seed_controls_samples(model, tok, rows):
    kw = dict(n_samples=3, max_new_tokens=6, n_boot=10, progress=False)
    a, b = (evaluate(model, tok, rows['gsm8k'], seed=s, **kw)['records'] for s in (0, 0))
    c = evaluate(model, tok, rows['gsm8k'], seed=1, **kw)['records']
    assert a == b and [r['completions'] for r in a] != [r['completions'] for r in c]
    assert [r['greedy_completion'] for r in a] == [r['greedy_completion'] for r in c]   # greedy ignores the seed


@pytest.mark.parametrize('bad,match', [([], 'rows must be a non-empty list'), ('x', 'rows must be a non-empty list'),
                                       ('mixed', 'rows must come from one benchmark')])
def test_evaluate_rejects_bad_rows(model, tok, rows, bad, match):
    if bad == 'mixed': bad = rows['gsm8k'][:1] + rows['math500'][:1]
    with pytest.raises(ValueError, match=match): evaluate(model, tok, bad, progress=False)


def test_evaluate_rejects_bad_counts(model, tok, rows):
    with pytest.raises(ValueError, match='n_samples must be an int >= 1'): evaluate(model, tok, rows['gsm8k'], n_samples=0)
    with pytest.raises(ValueError, match='batch_size must be an int >= 1'): evaluate(model, tok, rows['gsm8k'], batch_size=2.0)
    with pytest.raises(ValueError, match='seed must be an int >= 0'): evaluate(model, tok, rows['gsm8k'], seed=-1)   # not after sampling


# ---------------------------------------------------------------- CLI
def test_cli_round_trip_and_errors(model, tok, tmp_path, capsys):
    model.save_pretrained(tmp_path / 'm'); tok.save_pretrained(tmp_path / 'm')
    argv = [str(tmp_path / 'm'), '--benchmarks', 'math500', 'selfaware', 'truthfulqa', '--data', str(FIX), '--n-samples', '2',
            '--max-new-tokens', '4', '--limit', '2', '--out', str(tmp_path / 'out'), '--no-progress']
    assert main(['eval'] + argv) == 0
    out = tmp_path / 'out'
    summaries = json.loads((out / 'summary.json').read_text())
    assert [s['benchmark'] for s in summaries] == ['math500', 'selfaware', 'truthfulqa'] and all(s['n_questions'] == 2 for s in summaries)
    assert (out / 'report.md').read_text().count('\n| ') == 4 and (out / 'selfaware' / 'reliability.png').exists()
    assert '| math500 | 2 |' in capsys.readouterr().out
    assert main(['eval'] + argv) == 0                                           # resumes: same summaries
    assert json.loads((out / 'summary.json').read_text()) == summaries
    assert main(['eval', str(tmp_path / 'm'), '--benchmarks', 'mmlu']) == 2
    assert 'known benchmarks are' in capsys.readouterr().err
    assert main(['eval', str(tmp_path / 'm'), '--benchmarks', 'gsm8k', '--data', str(tmp_path / 'nowhere')]) == 2
    assert 'no gsm8k data at' in capsys.readouterr().err


# ---------------------------------------------------------------- the real files (optional)
DATA = os.environ.get('CARERFT_DATA')

@pytest.mark.skipif(not DATA, reason='set CARERFT_DATA to a folder laid out like /work/shared/data '
                                     '(math500/test.jsonl, gsm8k/test.jsonl, selfaware/SelfAware.json, truthfulqa/mc_task.json)')
def test_real_files_load():
    rows = {name: load_benchmark(name, DATA) for name in BENCHMARKS}
    assert {k: len(v) for k, v in rows.items()} == {'math500': 500, 'gsm8k': 1319, 'selfaware': 3369, 'truthfulqa': 817}
    assert sum(not r['answerable'] for r in rows['selfaware']) == 1032
    assert all(r['answer'] is None for r in rows['selfaware'] if not r['answerable'])
    assert all(float(r['answer']) == float(r['answer']) for r in rows['gsm8k'])          # every gold parses as a number
    assert all(sum(r['labels']) == 1 and r['labels'][0] == 1 for r in rows['truthfulqa'])
    assert all(sum(r['mc2_labels']) >= 1 for r in rows['truthfulqa'])
    assert len({r['id'] for r in rows['math500']}) == 500 and all(r['answer'] for r in rows['math500'])


# ---------------------------------------------------------------- where `carerft eval` finds its data (regressions)
def _save_tiny(model, tok, path):
    model.save_pretrained(path); tok.save_pretrained(path)
    return str(path)


def test_eval_reads_CARERFT_DATA_when_data_is_not_given(model, tok, tmp_path, monkeypatch, capsys):
    "Regression: `carerft eval` ignored CARERFT_DATA and went to the hub."
    m = _save_tiny(model, tok, tmp_path / 'm')
    argv = [m, '--benchmarks', 'gsm8k', '--n-samples', '2', '--max-new-tokens', '4', '--no-progress', '--out']
    monkeypatch.setenv('CARERFT_DATA', str(FIX))
    assert main(['eval'] + argv + [str(tmp_path / 'a')]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / 'a' / 'summary.json').read_text())[0]['n_questions'] == 3
    monkeypatch.setenv('CARERFT_DATA', str(tmp_path / 'nowhere'))                   # --data wins over the variable
    assert main(['eval'] + argv + [str(tmp_path / 'b'), '--data', str(FIX)]) == 0
    assert main(['eval'] + argv + [str(tmp_path / 'c')]) == 2
    err = capsys.readouterr().err
    assert 'no gsm8k data at' in err and 'CARERFT_DATA' in err


def _eval_subprocess(tmp_path, **env):
    "`carerft eval` without --data or CARERFT_DATA, in a fresh process with `env` set."
    base = {k: v for k, v in os.environ.items() if k not in ('CARERFT_DATA', 'HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'TRANSFORMERS_OFFLINE')}
    code = "import sys\nfrom carerft.cli import main\nsys.exit(main(['eval'] + sys.argv[1:]))"
    return subprocess.run([sys.executable, '-c', code, str(tmp_path / 'no-model'), '--benchmarks', 'gsm8k', '--out', str(tmp_path / 'o')],
                          env=base | env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize('env', [dict(HF_HUB_OFFLINE='1'), dict(HF_ENDPOINT='http://127.0.0.1:9')], ids=['offline', 'unreachable'])
def test_eval_without_data_fails_fast_naming_data_and_CARERFT_DATA(tmp_path, env):
    "Regression: with no local data and no hub, `carerft eval` retried the hub for 28 s and never named CARERFT_DATA."
    p = _eval_subprocess(tmp_path, **env)
    assert p.returncode == 2, p.stderr
    assert '--data' in p.stderr and 'CARERFT_DATA' in p.stderr, p.stderr
    assert 'Retrying' not in p.stderr and 'Traceback' not in p.stderr, p.stderr


def test_hub_reachable_is_a_quick_connection_check(monkeypatch):
    monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')                          # nothing listens on the discard port
    assert ev.hub_reachable(timeout=1.0) is False
    import socket
    opened = []
    class Conn:
        def __enter__(self): return self
        def __exit__(self, *a): pass
    monkeypatch.setattr(socket, 'create_connection', lambda addr, timeout: opened.append((addr, timeout)) or Conn())
    monkeypatch.setenv('HF_ENDPOINT', 'https://hub.example.org')
    assert ev.hub_reachable(timeout=0.5) is True and opened == [(('hub.example.org', 443), 0.5)]


def test_unreachable_hub_is_refused_before_datasets_is_asked(monkeypatch):
    import datasets
    import datasets.config
    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', False)           # as if imported online
    monkeypatch.setattr(ev, 'hub_reachable', lambda timeout=1.0: False)
    monkeypatch.setattr(datasets, 'load_dataset', lambda *a, **k: pytest.fail('load_dataset was called'))
    with pytest.raises(RuntimeError, match=r"could not load gsm8k from the hub .*unreachable.*--data.*CARERFT_DATA"):
        load_benchmark('gsm8k')


@pytest.mark.parametrize('flags,said', [
    (['--n-samples', '0'], '--n-samples must be an int >= 1, got 0'), (['--limit', '0'], '--limit must be an int >= 1, got 0'),
    (['--max-new-tokens', '0'], '--max-new-tokens must be an int >= 1, got 0'),
    (['--temperature', '0'], '--temperature must be a finite number > 0, got 0.0'),
    (['--temperature', 'nan'], '--temperature must be a finite number > 0, got nan'),
    (['--batch-size', '-1'], '--batch-size must be an int >= 1, got -1'), (['--seed', '-1'], '--seed must be an int >= 0, got -1'),
    (['--benchmarks', 'gsm8k', 'gsm8k'], '--benchmarks lists gsm8k twice')])
def test_eval_options_are_checked_at_the_boundary(model, tok, tmp_path, capsys, flags, said):
    "Every numeric option of `carerft eval` is refused before the model or the data are loaded, naming the flag."
    argv = [_save_tiny(model, tok, tmp_path / 'm'), '--benchmarks', 'gsm8k', '--data', str(FIX), '--limit', '1',
            '--n-samples', '2', '--max-new-tokens', '2', '--no-progress', '--out', str(tmp_path / 'o')] + flags
    assert main(['eval'] + argv) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('kw,said', [
    (dict(n_samples=True), 'n_samples must be an int >= 1, got True'),
    (dict(limit=0), 'limit must be an int >= 1, got 0'),
    (dict(temperature='1'), "temperature must be a finite number > 0, got '1'"),
    (dict(benchmarks=[]), 'benchmarks is empty'),
    (dict(benchmarks='gsm8k', seed=-2), 'seed must be an int >= 0, got -2'),
    (dict(preset='care'), "preset must be one of care-paper, got 'care'"),
    (dict(bf16=1), 'bf16 must be a bool, got 1'),
    (dict(prompt='r1'), "prompt must be one of benchmark, paper, got 'r1'"),
    (dict(batch_tokens=0), 'batch_tokens must be an int >= 1, got 0'),
    (dict(preset='care-paper', n_samples=0), 'n_samples must be an int >= 1, got 0')])
def test_run_eval_names_the_argument(tmp_path, kw, said):
    "run_eval, behind `carerft eval`, checks its arguments before any work and names them (the command says the flag)."
    with pytest.raises(ValueError) as e:
        ev.run_eval(str(tmp_path / 'no-model'), **dict(dict(data=FIX, out=tmp_path / 'o'), **kw))
    assert said in str(e.value) and not (tmp_path / 'o').exists()


# ---------------------------------------------------- token budgets, bf16 and the care-paper preset (issue 11)
from carerft.answers import PAPER_SYSTEM_PROMPT, paper_prompt
from carerft.evaluate import RUN_EVAL_DEFAULTS, EVAL_PRESETS, eval_settings, question_batches, with_prompt


class _LenTok:
    "A stand-in tokenizer: one token per character (only the lengths matter to question_batches)."
    def __call__(self, texts): return {'input_ids': [[0] * len(t) for t in texts]}


@pytest.mark.parametrize('seed', range(20))
def test_question_batches_sweep(seed):
    "Random prompt lengths and budgets: batches keep the order, respect the budget, and are cut greedily."
    rng = np.random.default_rng(seed)
    n, N, T = int(rng.integers(1, 30)), int(rng.integers(1, 9)), int(rng.integers(1, 50))
    rows = [dict(benchmark='gsm8k', id=str(i), prompt='x' * int(rng.integers(1, 80))) for i in range(n)]
    P = {r['id']: len(r['prompt']) for r in rows}
    cost = lambda b: len(b) * N * (max(P[r['id']] for r in b) + T)
    budget = int(N * (max(P.values()) + T) * rng.uniform(1, 6))
    batches = question_batches(rows, _LenTok(), N, T, batch_tokens=budget)
    assert sum(batches, []) == rows and all(batches)
    assert all(cost(b) <= budget for b in batches)
    assert all(cost(a + b[:1]) > budget for a, b in zip(batches, batches[1:]))   # the next question did not fit


def test_question_batches_refuses_a_budget_below_one_question(rows):
    gs = rows['gsm8k']
    longest = max(range(len(gs)), key=lambda i: len(gs[i]['prompt']))
    need = 3 * (len(gs[longest]['prompt']) + 5)
    assert len(question_batches(gs, _LenTok(), 3, 5, batch_tokens=need)) == len(gs)
    with pytest.raises(ValueError) as e: question_batches(gs, _LenTok(), 3, 5, batch_tokens=need - 1)
    assert f'batch_tokens={need - 1}' in str(e.value)
    assert f"= {need} tokens (question {gs[longest]['id']!r})" in str(e.value)


def test_one_big_batch_equals_batch_size_of_everything(model, tok, rows):
    "A budget that holds every question cuts the same single batch as batch_size = len(rows): the same records."
    kw = dict(n_samples=2, max_new_tokens=5, n_boot=10, progress=False)
    rs = rows['selfaware']
    assert evaluate(model, tok, rs, batch_tokens=10**7, **kw) == evaluate(model, tok, rs, batch_size=len(rs), **kw)


def test_bf16_runs_the_sampler_under_autocast(monkeypatch, model, tok, rows):
    seen = []
    def spy(fn):
        def wrapped(*a, **k):
            on = torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16
            seen.append((fn.__name__, on))
            return fn(*a, **k)
        return wrapped
    for name in ('sample', 'greedy', 'choice_logprobs'): monkeypatch.setattr(ev, name, spy(getattr(ev, name)))
    for bf16 in (False, True):
        evaluate(model, tok, rows['gsm8k'][:1], n_samples=2, max_new_tokens=3, n_boot=5, progress=False, bf16=bf16)
        evaluate(model, tok, rows['truthfulqa'][:1], n_boot=5, progress=False, bf16=bf16)
    assert seen == [('sample', False), ('greedy', False), ('choice_logprobs', False),
                    ('sample', True), ('greedy', True), ('choice_logprobs', True)]
    assert not torch.is_autocast_enabled('cpu')                                # and switched off afterwards


def test_eval_settings_precedence():
    assert eval_settings() == RUN_EVAL_DEFAULTS
    paper = eval_settings('care-paper')
    assert paper == RUN_EVAL_DEFAULTS | EVAL_PRESETS['care-paper']
    assert [paper[k] for k in ('n_samples', 'temperature', 'max_new_tokens', 'prompt')] == [8, 0.7, 1024, 'paper']
    assert list(paper['benchmarks']) == list(BENCHMARKS)
    assert eval_settings('care-paper', temperature=1.0, bf16=False, n_samples=None)['temperature'] == 1.0
    assert eval_settings('care-paper', bf16=False)['bf16'] is False          # False is given, not absent
    for bad in ('care', 'CARE-PAPER', 3, ['care-paper']):
        with pytest.raises(ValueError, match=r"preset must be one of care-paper, got "): eval_settings(bad)


def test_with_prompt_uses_the_training_prompt_for_sampled_benchmarks(rows):
    for name in ('math500', 'gsm8k', 'selfaware'):
        want = [paper_prompt(r['question']) for r in rows[name]]
        assert [r['prompt'] for r in with_prompt(rows[name], 'paper')] == want
        assert with_prompt(rows[name], 'benchmark') == rows[name]
    assert with_prompt(rows['truthfulqa'], 'paper') == rows['truthfulqa']


@pytest.mark.filterwarnings('ignore:`past_key_values` is deprecated')
def test_care_paper_preset_on_cpu_resumes_without_generating(tmp_path, tok, rows, monkeypatch):
    "The preset end to end on a tiny stand-in: the training prompt, temperature 0.7, bf16; a rerun samples nothing."
    m = tiny_model(tok, hidden=32, layers=1, heads=2, seed=5, max_positions=1024)   # the paper prompt: ~500 chars
    path = _save_tiny(m, tok, tmp_path / 'm')
    calls = []
    real = ev.sample
    def spy(model, tokenizer, prompts, G, T, temperature=1.0, **k):
        calls.append((prompts, G, T, temperature, next(model.parameters()).dtype))
        return real(model, tokenizer, prompts, G, T, temperature, **k)
    monkeypatch.setattr(ev, 'sample', spy)
    kw = dict(preset='care-paper', data=FIX, limit=2, n_samples=2, max_new_tokens=4, out=tmp_path / 'out',
              progress=False)
    summaries = ev.run_eval(path, **kw)
    assert [s['benchmark'] for s in summaries] == ['math500', 'gsm8k', 'selfaware', 'truthfulqa']
    sampled = [c for c in calls if c[1] == 2]
    assert len(sampled) == 3 and all(len(c[0]) == 2 for c in sampled)             # one batch of 2 questions each
    assert all(p.startswith(PAPER_SYSTEM_PROMPT) and p.endswith('Assistant: <think>\n') for c in sampled for p in c[0])
    assert {(c[2], c[3], c[4]) for c in sampled} == {(4, 0.7, torch.bfloat16)}   # overridden T; the preset's rest
    keys = {'n_questions', 'n_samples', 'greedy_accuracy', 'majority_accuracy', 'pass_at_k', 'hallucination_rate',
            'abstention_rate', 'ece', 'brier', 'auroc'}
    for s in summaries[:3]:
        assert keys <= set(s) and s['n_questions'] == 2 and s['n_samples'] == 2 and sorted(s['pass_at_k']) == [1, 2]
        assert all(len(v) == 3 for v in (s['ece'], s['brier'], s['auroc']))       # value and its interval
    assert {'mc1', 'mc2', 'ece', 'brier', 'auroc'} <= set(summaries[3]) and summaries[3]['n_questions'] == 2
    for name in BENCHMARKS:
        assert len(read_records(tmp_path / 'out' / name / 'records.jsonl')) == 2
    report = (tmp_path / 'out' / 'report.md').read_text()
    assert 'care-paper: n_samples 2, max_new_tokens 4, temperature 0.7, prompt paper' in report
    def never(*a, **k): raise AssertionError('a resumed run generated')
    for name in ('sample', 'greedy', 'choice_logprobs'): monkeypatch.setattr(ev, name, never)
    assert ev.run_eval(path, **kw) == summaries
    with pytest.raises(ValueError, match='preset must be one of care-paper'): ev.run_eval(path, **dict(kw, preset='paper'))
