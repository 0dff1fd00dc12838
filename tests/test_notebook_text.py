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


HEADING_MATH = re.compile(r'^#{1,6} .*\$', re.M)


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_no_math_in_headings(nb):
    "The docs' sidebar and page outline show a heading's raw text: $\\beta$ there reads as TeX. Write the symbol (β)."
    bad = [(cid, m.group()) for cid, text in markdown(nb) for m in HEADING_MATH.finditer(text)]
    assert not bad, f'math in headings (cell id, heading): {bad}'


def test_checks_can_fail():
    assert CONTROL.search('(1-\alpha)') and not CONTROL.search('tab\there\nnewline')
    assert HEADING_MATH.search('text\n## The bound $\\log 2$') and not HEADING_MATH.search('## The bound log 2\n$x$')


def test_readme_figures_are_the_index_figures():
    "The README shows the index's figures: each linked PNG exists and holds the notebook's saved output, byte for byte."
    import sys
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / 'tools'))
    from make_readme import to_md
    images = {}
    text = to_md(root / 'nbs' / 'index.ipynb', images)
    assert images, 'the index has a figure (the penalties), so the README links one'
    readme = (root / 'README.md').read_text()
    for name, data in images.items():
        assert f'![]({name})' in text and f'![]({name})' in readme, name
        assert (root / name).read_bytes() == data, f'{name} is stale: run tools/make_readme.py'


def test_readme_table_follows_the_reading_order():
    "The index's table of chapters lists them in the sidebar's order: the notebooks' numbers, then the tutorials."
    root = Path(__file__).resolve().parents[1]
    text = '\n'.join(t for _, t in markdown(root / 'nbs' / 'index.ipynb'))
    table = [m for m in re.findall(r'^\| \[[^\]]+\]\(([\w/]+)\.html\)', text, re.M)]
    chapters = [re.sub(r'^\d+_', '', p.stem) for p in sorted((root / 'nbs').glob('[0-9]*.ipynb'))]
    tutorials = [f'tutorials/{p.stem}' for p in sorted((root / 'nbs' / 'tutorials').glob('*.ipynb'))]
    assert table == chapters + tutorials
