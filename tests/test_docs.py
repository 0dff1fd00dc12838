"""The documentation site: build it (nbdev processing + smalldocs, no quarto), check README.md is generated from
nbs/index.ipynb, then load every page in headless Chromium and check API entries, figures, maths and local links.
Chromium runs offline (no host resolves), so a page that needed the network, e.g. KaTeX from a CDN, shows it.

Chromium is optional for a developer (without it the same checks run on the static HTML, with a warning); CI sets
CARERFT_REQUIRE_BROWSER=1 when it could install Chromium, so that the rendered pages are what is checked."""
import base64, io, os, re, shutil, subprocess, sys, tempfile
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
                            '--host-resolver-rules=MAP * ~NOTFOUND',   # offline even where there is a network
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
def doms(site):
    "Every page's DOM as Chromium renders it; without a browser, the static HTML (a weaker check, with a warning)."
    if _chromium() is None:
        import warnings; warnings.warn('headless Chromium not installed (apt-get install chromium): pages checked as static HTML')
        return {p.name: p.read_text() for p in sorted(site.glob('*.html'))}
    return {p.name: dump_dom(p) for p in sorted(site.glob('*.html'))}

@pytest.fixture(scope='module')
def pages(doms): return {name: Page(html) for name, html in doms.items()}

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

# ---- maths: KaTeX is served by the site itself (tools/katex_local.py) and renders every formula offline
KATEX = ['site_libs/katex/katex.min.css', 'site_libs/katex/katex.min.js', 'site_libs/katex/contrib/auto-render.min.js']
MATH_PAGES = ['index.html', 'divergences.html']     # must have formulas (and so must be checked)
VOID = {'area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track', 'wbr'}

class MathSpans(HTMLParser):
    "The maths spans of a page (`span.math`, as smalldocs writes `$...$`): whether each holds a rendered `.katex`, and its text outside KaTeX's MathML copy of the TeX; plus `.katex-error` count."
    def __init__(self, html):
        super().__init__(); self.spans, self.stack, self.errors = [], [], 0; self.feed(html)
    def handle_starttag(self, tag, attrs):
        if tag in VOID: return
        cls = (dict(attrs).get('class') or '').split()
        mark = 'math' if tag == 'span' and 'math' in cls and 'math' not in self.stack else 'annotation' if tag == 'annotation' else None
        if mark == 'math': self.spans.append({'katex': False, 'text': ''})
        if 'math' in self.stack or mark == 'math':
            if 'katex' in cls: self.spans[-1]['katex'] = True
            if 'katex-error' in cls: self.errors += 1
        self.stack.append(mark)
    def handle_endtag(self, tag):
        if tag not in VOID and self.stack: self.stack.pop()
    def handle_data(self, data):
        if 'math' in self.stack and 'annotation' not in self.stack: self.spans[-1]['text'] += data

RAW_TEX = re.compile(r'\\[()\[\]]|\$\$')

def math_problems(dom: str) -> list:
    "Why the maths of a rendered page is not rendered: spans without KaTeX output, raw TeX delimiters left, KaTeX errors."
    m = MathSpans(dom)
    bad = [f"not rendered: {s['text'][:60]!r}" for s in m.spans if not s['katex']]
    bad += [f"raw TeX left: {s['text'][:60]!r}" for s in m.spans if s['katex'] and RAW_TEX.search(s['text'])]
    return bad + ([f'{m.errors} formulas KaTeX could not parse (.katex-error)'] if m.errors else [])

def katex_problems(html: str, page: Path, site: Path) -> list:
    "Why this page's maths could not render offline: KaTeX loaded from the network, or the site's own copy not loaded."
    refs = [l for l in Page(html).links if 'katex' in l]
    remote = [l for l in refs if urlsplit(l).scheme or l.startswith('//')]
    bad = [f'loads {l} from the network' for l in remote]
    if MathSpans(html).spans:
        local = {(page.parent / unquote(urlsplit(l).path)).resolve() for l in refs if l not in remote}
        bad += [f'does not load {k}' for k in KATEX if (site / k).resolve() not in local or not (site / k).is_file()]
    return bad

def test_katex_is_served_by_the_site(site):
    "Static check (runs with or without a browser): pages with formulas load the site's own KaTeX, fonts included."
    with_math = [str(p.relative_to(site)) for p in sorted(site.rglob('*.html')) if MathSpans(p.read_text()).spans]
    assert set(MATH_PAGES) <= set(with_math), f'pages expected to have formulas: {MATH_PAGES}, found {with_math}'
    bad = {str(p.relative_to(site)): katex_problems(p.read_text(), p, site) for p in sorted(site.rglob('*.html'))}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f'pages whose maths needs the network: {bad}'
    css = site / KATEX[0]
    fonts = [u.strip('"\'') for u in re.findall(r'url\(([^)]+)\)', css.read_text())]
    missing = [u for u in fonts if not (css.parent / u).is_file()]
    assert fonts and not missing, f'KaTeX fonts missing: {missing[:5]}'

def test_math_is_rendered(doms):
    if _chromium() is None: pytest.skip('no headless Chromium: only the static check (test_katex_is_served_by_the_site) ran')
    rendered = {n: MathSpans(d) for n, d in doms.items()}
    assert all(rendered[n].spans for n in MATH_PAGES), {n: len(rendered[n].spans) for n in MATH_PAGES}
    bad = {n: math_problems(d)[:3] for n, d in doms.items() if math_problems(d)}
    assert not bad, f'maths not rendered by KaTeX offline: {bad}'

def test_math_check_fails_on_a_cdn_katex(site, doms, tmp_path):
    "Guard: the same page, with KaTeX pointed back at the CDN, fails both the static and the rendered check."
    copy = tmp_path / 'site'; shutil.copytree(site, copy)
    page = copy / 'divergences.html'
    html = page.read_text().replace('site_libs/katex/', 'https://cdn.jsdelivr.net/npm/katex@0.16.11/dist/')
    page.write_text(html)
    assert katex_problems(html, page, copy), 'static check passed a page that loads KaTeX from the CDN'
    if _chromium() is None: return
    assert not math_problems(doms['divergences.html'])                  # the real page passes ...
    probs = math_problems(dump_dom(page))                               # ... its CDN twin does not
    assert probs and any('not rendered' in p for p in probs), probs
