"The book's text: what a reader sees in markdown cells renders as written."
import json, re
from pathlib import Path
import pytest

NBS = sorted(p for p in (Path(__file__).resolve().parents[1] / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)
CONTROL = re.compile(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')   # tab, newline and carriage return are fine


def markdown(nb: Path):
    for cell in json.loads(nb.read_text())['cells']:
        if cell['cell_type'] == 'markdown':
            yield cell.get('id'), ''.join(cell['source'])


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_no_control_characters_in_markdown(nb):
    "A string such as '\\alpha' written through Python becomes BEL + 'lpha' and renders as '(1-lpha)'."
    bad = [(cid, repr(m.group())) for cid, text in markdown(nb) for m in CONTROL.finditer(text)]
    assert not bad, f'control characters in markdown cells (cell id, character): {bad}'


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_no_backticked_private_names_in_markdown(nb):
    "nbdev links every backticked name it knows to its API entry; private names have none, so the link is broken."
    bad = [(cid, name) for cid, text in markdown(nb) for name in re.findall(r'`(_[A-Za-z]\w*)`', text)]
    assert not bad, f'backticked private names in markdown (cell id, name): {bad}'


def test_checks_can_fail():
    assert CONTROL.search('(1-\alpha)') and not CONTROL.search('tab\there\nnewline')
