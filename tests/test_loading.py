"MATH train from the shared archive (when CARERFT_DATA points at it), and load_math's other forms and errors."
import json
import os
import tarfile
from pathlib import Path

import pytest

from carerft.answers import paper_prompt
from carerft.loading import load_math, load_rewards, math_train_path

DATA = Path(os.environ['CARERFT_DATA']) if os.environ.get('CARERFT_DATA') else None


def math_train() -> Path:
    "The shared MATH_train.tar.gz under CARERFT_DATA, or skip the test saying how to enable it."
    if DATA is None:
        pytest.skip('set CARERFT_DATA to a folder laid out like shared/data (math_train/MATH_train.tar.gz) to run')
    p = DATA / 'math_train' / 'MATH_train.tar.gz'
    if not p.exists():
        pytest.skip(f'{p} not found (CARERFT_DATA={DATA})')
    return p


def test_math_train_archive_rows_and_known_answers():
    rows = load_math(str(math_train()))
    assert len(rows) == 7_498                                  # 7,500 problems less the 2 with an empty \boxed{}
    with tarfile.open(math_train()) as tar:
        assert sum(m.name.endswith('.json') for m in tar.getmembers()) == 7_500
    first = rows[0]                                            # MATH/train/algebra/0.json: a + b = -3 + 3
    assert first['answer'] == '0' and first['level'] == 'Level 5' and first['type'] == 'Algebra'
    assert first['prompt'] == paper_prompt(first['problem'])
    assert rows[101]['answer'] == '(-6, 1)' and rows[101]['problem'].startswith('Find all $x$ such that $x^2+5x<6$')
    counts = {}
    for r in rows:
        counts[r['type']] = counts.get(r['type'], 0) + 1
    assert counts['Algebra'] == 1_744 and counts['Number Theory'] == 867 and counts['Precalculus'] == 746
    assert all(r['answer'] for r in rows)


def test_math_train_path_reads_CARERFT_DATA(monkeypatch):
    folder = math_train().parent
    monkeypatch.setenv('CARERFT_DATA', str(folder.parent))
    assert math_train_path() == str(folder)
    assert len(load_math(math_train_path())) == 7_498          # the folder holding the archive


def write_problems(root: Path, items) -> Path:
    for subject, n, solution in items:
        f = root / 'MATH' / 'train' / subject / f'{n}.json'
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(dict(problem=f'P{n}', level='Level 2', type=subject, solution=solution)))
    return root


def test_folder_archive_and_jsonl_agree(tmp_path):
    root = write_problems(tmp_path / 'f', [('b', 10, r'$\boxed{10}$'), ('a', 2, r'so $\boxed{\frac12}$.'),
                                          ('b', 9, r'$\boxed{\text{no}}$ and $\boxed{9}$')])
    rows = load_math(str(root))
    assert [r['answer'] for r in rows] == [r'\frac12', '10', '9']          # name order; the last box wins
    with tarfile.open(tmp_path / 'm.tar.gz', 'w:gz') as tar:
        tar.add(root / 'MATH', arcname='MATH')
    assert load_math(str(tmp_path / 'm.tar.gz')) == rows
    (tmp_path / 'm.jsonl').write_text(''.join(json.dumps(dict(problem=r['problem'], level=r['level'], type=r['type'],
                                                              solution=f"\\boxed{{{r['answer']}}}")) + '\n'
                                              for r in rows))
    assert load_math(str(tmp_path / 'm.jsonl')) == rows


@pytest.mark.parametrize('content, msg', [
    ([dict(question='1+1')], "row 0: a MATH record needs 'problem' and 'solution'"),
    ([dict(problem='1+1', solution='two')], 'holds no problems with a boxed answer'),
])
def test_bad_math_files_are_named(tmp_path, content, msg):
    p = tmp_path / 'bad.jsonl'
    p.write_text(''.join(json.dumps(r) + '\n' for r in content))
    with pytest.raises(ValueError, match=None) as err:
        load_math(str(p))
    assert msg in str(err.value) and 'bad.jsonl' in str(err.value)


def test_math_train_path_without_data(monkeypatch, tmp_path):
    monkeypatch.delenv('CARERFT_DATA', raising=False)
    with pytest.raises(ValueError, match=r'--data is required: no MATH train found at \$CARERFT_DATA/math_train'):
        math_train_path()
    monkeypatch.setenv('CARERFT_DATA', str(tmp_path))           # set, but without a math_train folder
    with pytest.raises(ValueError, match='give --data MATH_train.tar.gz or set CARERFT_DATA'):
        math_train_path()


def test_load_rewards_comma_list():
    assert [f.__name__ for f in load_rewards('math,format')] == ['math_reward', 'format_reward']
    assert [f.__name__ for f in load_rewards(' gsm8k ')] == ['gsm8k_reward']
