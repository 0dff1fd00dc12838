"""The documentation site: build it (nbdev processing + smalldocs, no quarto), check README.md is generated from
nbs/index.ipynb, then load every page in headless Chromium and check API entries, figures and local links.

Chromium is optional for a developer (without it the same checks run on the static HTML, with a warning); CI sets
CARERFT_REQUIRE_BROWSER=1 when it could install Chromium, so that the rendered pages are what is checked."""
import base64, io, os, shutil, subprocess, sys, tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit, unquote
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / '_docs'
CHAPTERS = ['index.html', 'divergences.html', 'explorer.html', 'cli.html']   # must exist and carry figures (cli: none)

@pytest.fixture(scope='module')
def site():
    r = subprocess.run(['bash', 'tools/build_docs.sh'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return DOCS

def test_readme_is_generated_from_index(site):
    sys.path.insert(0, str(ROOT / 'tools'))
    from make_readme import to_md
    want = to_md(ROOT / '_proc' / 'index.ipynb')
    assert (ROOT / 'README.md').read_text() == want, 'README.md is stale: run python tools/make_readme.py _proc/index.ipynb README.md'
    first = [l for l in want.splitlines() if l.startswith(('git clone', 'python3 -m venv'))]
    assert 'carerft compare' in first[0] and 'pytest' in first[1], first   # the two commands a new user copies, in order

def _chromium():
    "Path of a headless Chromium, or None (then pages are checked as static HTML, unless CARERFT_REQUIRE_BROWSER=1)."
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        if shutil.which(name): return shutil.which(name)
    if os.environ.get('CARERFT_REQUIRE_BROWSER') == '1': pytest.fail('CARERFT_REQUIRE_BROWSER=1 but no chromium is installed')
    return None

def dump_dom(page: Path) -> str:
    "The DOM after scripts ran, as Chromium renders the page offline."
    with tempfile.TemporaryDirectory() as prof:
        r = subprocess.run([_chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                            '--disable-background-networking', '--disable-component-update', '--disable-sync',
                            f'--user-data-dir={prof}', '--virtual-time-budget=3000', '--dump-dom', page.as_uri()],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and '<body' in r.stdout, r.stderr[-2000:]
    return r.stdout

class Page(HTMLParser):
    "Collects ids, links and images of a page."
    def __init__(self, html):
        super().__init__(); self.ids, self.links, self.imgs = set(), [], []; self.feed(html)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        if tag in ('link', 'script') and (a.get('href') or a.get('src')): self.links.append(a.get('href') or a.get('src'))
        if tag == 'img': self.imgs.append(a.get('src') or '')

@pytest.fixture(scope='module')
def pages(site):
    "Every page's DOM as Chromium renders it; without a browser, the static HTML (a weaker check, with a warning)."
    if _chromium() is None:
        import warnings; warnings.warn('headless Chromium not installed (apt-get install chromium): pages checked as static HTML')
        return {p.name: Page(p.read_text()) for p in sorted(site.glob('*.html'))}
    return {p.name: Page(dump_dom(p)) for p in sorted(site.glob('*.html'))}

def public_symbols():
    "(name, page, anchor) for every public top-level name nbdev indexed, from carerft._modidx."
    from carerft._modidx import d
    for mod, syms in d['syms'].items():
        for qual, (link, _) in syms.items():
            name = qual[len(mod) + 1:]
            if '.' in name or name.startswith('_'): continue
            page, _, anchor = link.partition('#')
            yield name, Path(urlsplit(page).path).name, anchor

def test_chapters_exist(pages):
    missing = [c for c in CHAPTERS if c not in pages]
    assert not missing, f'pages not built: {missing}'

def test_every_public_name_has_an_api_entry(pages):
    syms = list(public_symbols())
    assert len(syms) >= 14, syms     # divergences (8 + helpers) and explorer at least
    missing = [(n, p) for n, p, a in syms if p not in pages or a not in pages[p].ids]
    assert not missing, f'public names without a show_doc entry on their page: {missing}'

def test_figures_render(pages):
    from PIL import Image
    for name in ['index.html', 'divergences.html', 'explorer.html']:
        imgs = [s for s in pages[name].imgs if s.startswith('data:image/png')]
        assert imgs, f'{name}: no figure'
        for src in imgs:
            im = Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1])))
            assert im.size[0] > 200 and im.size[1] > 100 and len(im.convert("L").getcolors(1 << 16) or range(999)) > 10, f'{name}: blank figure'
    ex = pages['explorer.html']
    assert any(i.startswith('_anim_img') for i in ex.ids) and any(i.startswith('_anim_slider') for i in ex.ids), 'kernel-free slider missing'

def test_local_links_resolve(pages, site):
    bad = []
    for name, pg in pages.items():
        for href in pg.links:
            u = urlsplit(href)
            if u.scheme or href.startswith(('//', 'mailto:', 'javascript:')): continue
            target = name if not u.path else unquote(u.path)
            path = (site / name).parent / target
            if not path.exists(): bad.append((name, href)); continue
            if u.fragment and path.suffix == '.html':
                ids = pages[path.name].ids if path.name in pages else set()
                if unquote(u.fragment) not in ids: bad.append((name, href))
    assert not bad, f'broken local links: {bad[:20]}'
