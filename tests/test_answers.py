"Answer extraction and equivalence on hand cases and, when CARERFT_DATA is set, on the real benchmark files."
import csv, json, os, re, tarfile, threading
from pathlib import Path
import pytest
from carerft.answers import (extract_boxed, extract_gsm8k, extract_answer, extract_answer_is, extract_last_number,
                             normalize_answer, is_equivalent, math_verify_equal, is_abstention, abstained,
                             ABSTENTION_PHRASES)

DATA = Path(os.environ['CARERFT_DATA']) if os.environ.get('CARERFT_DATA') else None

def data_file(*parts):
    "Path of a real data file under CARERFT_DATA, or skip the test with a message saying how to enable it."
    if DATA is None: pytest.skip('set CARERFT_DATA to a folder laid out like shared/data (math500/test.jsonl, ...) to run')
    p = DATA.joinpath(*parts)
    if not p.exists(): pytest.skip(f'{p} not found (CARERFT_DATA={DATA})')
    return p

def jsonl(p): return [json.loads(l) for l in p.open(encoding='utf-8')]

# ---------------------------------------------------------------- hand cases
@pytest.mark.parametrize('text,want', [
    (r'\boxed{1}\boxed{2}', '2'), (r'\boxed{\frac{a}{b^{2}}}', r'\frac{a}{b^{2}}'), (r'\boxed {x}', 'x'),
    (r'\boxed{\left\{1,2\right\}}', r'\left\{1,2\right\}'), (r'\boxed{a\\b}', r'a\\b'), (r'\boxed{3', None),
    (r'$\boxed 9$.', '9'), (r'\boxed{1} then \boxed 2', '2'), ('', None)])
def test_extract_boxed_cases(text, want): assert extract_boxed(text) == want

@pytest.mark.parametrize('text,want', [('#### 12', '12'), ('####12', '12'), ('#### -7', '-7'), ('#### 0.25', '0.25'),
    ('#### 12,345', '12345'), ('#### \\$5', '5'), ('#### x', None), ('12', None), ('#### 1 ####2', '2')])
def test_extract_gsm8k_cases(text, want): assert extract_gsm8k(text) == want

def test_fallback_chain_order():
    assert extract_answer(r'The answer is 3. \boxed{4}') == '4'
    assert extract_answer('#### 5\nThe answer is 6') == '5'
    assert extract_answer_is('the answer is: $-2$') == '-2'
    assert extract_answer_is('Answer: .5') == '.5'
    assert extract_last_number('a 1 b -2.5 c') == '-2.5'

@pytest.mark.parametrize('bad', [None, 3, b'x', ['a']])
def test_bad_text_raises(bad):
    for f in (extract_boxed, extract_gsm8k, extract_answer, extract_answer_is, extract_last_number, is_abstention):
        with pytest.raises(ValueError, match='text must be a str'): f(bad)

@pytest.mark.parametrize('pred,gold,want', [
    ('1/2', '0.5', True), ('0.5', r'\frac{1}{2}', True), (r'\dfrac{1}{2}', '1/2', True), (r'\sqrt{8}', r'2\sqrt{2}', True),
    (r'(3, \frac{\pi}{2})', r'\left( 3, \frac{\pi}{2} \right)', True), (r'\$1,000', '1000', True),
    ('x^2+2x+1', '(x+1)^2', True), ('2', '3', False), ('(1,2)', '(2,1)', False), (None, '1', False), ('1', None, False),
    (r'\frac{1}{3}', '0.34', False), (r'\text{east}', 'east', True), (r'\text{east}', 'west', False)])
def test_is_equivalent_cases(pred, gold, want): assert is_equivalent(pred, gold) is want

def test_is_equivalent_in_a_thread():
    "math-verify's signal-based timeout fails off the main thread; we must still answer."
    out = {}
    t = threading.Thread(target=lambda: out.setdefault('r', is_equivalent(r'\frac{2}{4}', '0.5'))); t.start(); t.join()
    assert out['r'] is True

def test_import_is_fast_and_lazy():
    "Importing carerft.answers must not import SymPy / math-verify (checked in a fresh interpreter)."
    import subprocess, sys
    code = 'import sys, carerft.answers; print("math_verify" in sys.modules, "sympy" in sys.modules)'
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.split() == ['False', 'False']

@pytest.mark.parametrize('text', ['unknown', 'UNKNOWN', ' unknown. ', "I don't know", 'I don\u2019t know', 'i do not know.',
    'The answer is unknown.', r'\boxed{unknown}', 'Answer: unknown', 'It cannot be determined.', 'n/a', 'No comment.'])
def test_abstentions_detected(text): assert is_abstention(text)

@pytest.mark.parametrize('text', ['7', 'unknowns: x and y, so x = 2', 'The answer is 12.', 'I know: 5', 'known',
                                  'Paris', 'commentary'])
def test_non_abstentions(text): assert not is_abstention(text)

def test_phrase_list_is_lowercase_and_pluggable():
    assert all(p == p.lower().strip() for p in ABSTENTION_PHRASES)
    assert abstained(['skip', 'unknown'], judge=lambda t: t == 'skip') == [True, False]
    with pytest.raises(ValueError, match='judge must return a bool'): abstained(['a'], judge=lambda t: None)

# ---------------------------------------------------------------- real data (CARERFT_DATA)
def test_math500_round_trip():
    rows = jsonl(data_file('math500', 'test.jsonl'))
    assert len(rows) == 500
    got = [extract_boxed(r['solution']) for r in rows]
    assert sum(g == r['answer'] for g, r in zip(got, rows)) == 500
    assert all(is_equivalent(g, r['answer']) for g, r in zip(got, rows))
    assert all(extract_answer(r['solution']) == r['answer'] for r in rows)

def test_math500_math_verify_alone_accepts_every_gold():
    "Without the string shortcut: math-verify parses every gold answer and finds it equal to itself."
    rows = jsonl(data_file('math500', 'test.jsonl'))
    assert sum(math_verify_equal(r['answer'], r['answer']) for r in rows) == 500

def test_math500_grader_separates_different_answers():
    "Each gold answer against the next problem's: only pairs with equal value may be called equivalent."
    rows = jsonl(data_file('math500', 'test.jsonl'))
    golds = [r['answer'] for r in rows]
    same = [(a, b) for a, b in zip(golds, golds[1:] + golds[:1]) if is_equivalent(a, b)]
    def value(s):
        s = re.sub(r'^[a-z]=', '', normalize_answer(s))   # 'x=5' has the value 5
        try: return float(s)
        except ValueError: return s
    assert all(value(a) == value(b) for a, b in same), same
    assert len(same) <= 10

def test_math_train_boxed_coverage():
    p = data_file('math_train', 'MATH_train.tar.gz')
    with tarfile.open(p) as tar:
        sols = [json.load(tar.extractfile(m))['solution'] for m in tar.getmembers() if m.name.endswith('.json')]
    assert len(sols) == 7500
    assert sum(extract_boxed(s) is not None for s in sols) == 7500

@pytest.mark.parametrize('split,n', [('test', 1319), ('train', 7473)])
def test_gsm8k_every_gold_parses(split, n):
    rows = jsonl(data_file('gsm8k', f'{split}.jsonl'))
    assert len(rows) == n
    golds = [extract_gsm8k(r['answer']) for r in rows]
    assert all(g is not None and re.fullmatch(r'-?\d+(\.\d+)?', g) for g in golds)
    # independent reference: the text after the last '\n#### ', commas removed
    assert golds == [r['answer'].split('\n#### ')[-1].strip().replace(',', '') for r in rows]
    assert all(extract_answer(r['answer']) == g for r, g in zip(rows, golds))

def test_gsm8k_answers_survive_rephrasing():
    rows = jsonl(data_file('gsm8k', 'test.jsonl'))[:200]
    for r in rows:
        g = extract_gsm8k(r['answer'])
        assert is_equivalent(extract_answer(f'So the answer is {int(g):,}.'), g)
        assert is_equivalent(extract_answer(rf'Therefore $\boxed{{{g}}}$'), g)

def test_selfaware_answerable_golds_are_not_abstentions():
    d = json.load(data_file('selfaware', 'SelfAware.json').open(encoding='utf-8'))['example']
    golds = [a for r in d if r['answerable'] for a in r['answer']]
    assert len(golds) == 11516
    flagged = [a for a in golds if is_abstention(a)]
    assert not flagged, flagged[:10]

def test_truthfulqa_no_comment_is_abstention():
    with data_file('truthfulqa', 'TruthfulQA.csv').open(encoding='utf-8-sig') as f: rows = list(csv.DictReader(f))
    assert len(rows) == 817
    no_comment = [r['Best Answer'] for r in rows if r['Best Answer'] == 'I have no comment']
    assert len(no_comment) == 56 and all(is_abstention(a) for a in no_comment)


# ---------------------------------------------------------------- the paper's prompt and format reward (issue 11)
from carerft.answers import (PAPER_SYSTEM_PROMPT, REWARDS, answer_part, format_reward, gsm8k_reward, math_reward,
                             paper_prompt)


def test_paper_prompt_wraps_the_problem_verbatim():
    problem = 'Let $f(x) = \\frac{1}{x}$.\n  Find $f(2)$.  '
    p = paper_prompt(problem)
    assert p == PAPER_SYSTEM_PROMPT + '\n\nUser: ' + problem + '\nAssistant: <think>\n'
    assert '\\boxed{}' in PAPER_SYSTEM_PROMPT and '{{' not in PAPER_SYSTEM_PROMPT
    assert '\x07' not in p and '\x08' not in p                              # no "\a" / "\b" slipped into the text


@pytest.mark.parametrize('bad', [None, '', '  \n', 3, ['q']])
def test_paper_prompt_refuses_a_non_problem(bad):
    with pytest.raises(ValueError, match='problem must be a non-empty str'): paper_prompt(bad)


@pytest.mark.parametrize('completion', [
    'r </think> \\boxed{1}', '<think>r</think>\\boxed{1}',
    '  <think>\nr\n</think>\n<answer>\n\\boxed{x^{2}}\n</answer>',
    'r\n</think>\nThe answer is $\\boxed{\\frac{1}{2}}$. Done.', 'r </think> \\boxed{1} then \\boxed{2}'])
def test_format_reward_accepts_the_prompted_structure(completion):
    assert format_reward(['p'], [completion]) == [1.0]


@pytest.mark.parametrize('completion', [
    '', 'r', '\\boxed{1}', 'r </think>', 'r </think> 1', '</think> \\boxed{1}', ' \n </think> \\boxed{1}',
    '<think> </think> \\boxed{1}', 'r \\boxed{1} </think>', 'r </think> \\boxed{1} </think>', 'r </think> \\boxed{}',
    'r </think> \\boxed{1', 'x <think> r </think> \\boxed{1}', '<think><think> r </think> \\boxed{1}',
    'r </think> <think> s </think> \\boxed{1}'])
def test_format_reward_refuses_other_structures(completion):
    assert format_reward(['p'], [completion]) == [0.0]


def test_format_reward_is_per_completion_and_ignores_columns():
    good, bad = 'r </think> \\boxed{1}', 'r \\boxed{1}'
    out = format_reward(['p'] * 4, [good, bad, bad, good], answer=['9'] * 4, anything=[None] * 4)
    assert out == [1.0, 0.0, 0.0, 1.0] and all(type(x) is float for x in out)
    assert format_reward([], []) == []
    with pytest.raises(ValueError, match='completion must be a str'): format_reward(['p'], [b'r </think> \\boxed{1}'])


def test_answer_part_cases():
    assert answer_part('a </think> b </think> c') == ' c'
    assert answer_part('no tag') == 'no tag' and answer_part('') == ''
    with pytest.raises(ValueError, match='text must be a str'): answer_part(None)


def test_rewards_grade_the_answer_part_only():
    "A box in the reasoning is not the answer: only what follows </think> is graded (no tag: the whole completion)."
    cs = ['\\boxed{2} </think> \\boxed{3}', '\\boxed{3} </think> \\boxed{2}', '\\boxed{2} </think> I give up',
          '\\boxed{2}']
    assert math_reward(['p'] * 4, cs, ['2'] * 4) == [0.0, 1.0, 0.0, 1.0]
    assert gsm8k_reward(['p'] * 2, ['#### 2 </think> #### 3', '#### 3 </think> #### 2'], ['2'] * 2) == [0.0, 1.0]


def test_rewards_registry_and_the_paper_weighting():
    assert REWARDS['format'] is format_reward and set(REWARDS) == {'math', 'gsm8k', 'format'}
    cs = ['one and one </think> \\boxed{2}', 'it is \\boxed{2}', 'hm </think> \\boxed{3}', 'hm']
    both = [m + f for m, f in zip(REWARDS['math'](['p'] * 4, cs, ['2'] * 4), REWARDS['format'](['p'] * 4, cs))]
    assert both == [2.0, 1.0, 1.0, 0.0]
