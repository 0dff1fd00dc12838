"""Serve KaTeX from the docs site itself, so that maths renders when the site is read without network.

smalldocs links every page with maths to KaTeX on a CDN (`https://cdn.jsdelivr.net/npm/katex@X/dist/...`). After
smalldocs has rendered `_docs/`, this script copies KaTeX's files (katex.min.js, katex.min.css, the fonts and the
auto-render extension that smalldocs.js calls) into `_docs/site_libs/katex/` and rewrites the pages to load them by
relative paths.

Where KaTeX comes from: the npm registry, with `npm ci` on the committed `tools/katex/package-lock.json` (an exact
version and its sha512, which npm checks), into a cache outside the checkout: `$CARERFT_KATEX_CACHE`, else
`${XDG_CACHE_HOME:-~/.cache}/carerft/katex-<version>-<lock hash>`. Only the first build downloads (~1 s); later
builds copy from the cache (0.1 s). `CARERFT_KATEX_DIST=/path/to/katex/dist` uses a copy you already have instead
(`node_modules/katex/dist` of `npm install katex@<version>`; Debian's libjs-katex lacks the minified auto-render and
the fonts, so it does not fit).

When KaTeX cannot be had (no npm, registry unreachable), the build FAILS with a message saying why and what to do.
`CARERFT_KATEX=cdn` lets it go on with the CDN links left in place, with a loud warning: such a site shows raw TeX
offline, and tests/test_docs.py fails on it.

Usage: python tools/katex_local.py _docs"""
import hashlib, json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / 'katex'
CDN = re.compile(r'https://cdn\.jsdelivr\.net/npm/katex@[^/"\'\s]+/dist/')
NEEDED = ['katex.min.js', 'katex.min.css', 'contrib/auto-render.min.js', 'fonts']
DEST = 'site_libs/katex'

class KatexUnavailable(Exception): pass

def version() -> str: return json.loads((HERE / 'package.json').read_text())['dependencies']['katex']

def cache_dir() -> Path:
    if os.environ.get('CARERFT_KATEX_CACHE'): return Path(os.environ['CARERFT_KATEX_CACHE']).expanduser()
    lock = hashlib.sha256((HERE / 'package-lock.json').read_bytes()).hexdigest()[:12]
    base = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache').expanduser()
    return base / 'carerft' / f'katex-{version()}-{lock}'

def _check(dist: Path) -> Path:
    missing = [n for n in NEEDED if not (dist / n).exists()]
    if missing: raise KatexUnavailable(f'{dist} lacks {missing}')
    if not list((dist / 'fonts').glob('*.woff2')): raise KatexUnavailable(f'{dist}/fonts has no .woff2 fonts')
    return dist

def fetch() -> Path:
    "KaTeX's dist/ folder: CARERFT_KATEX_DIST, else the cache, else `npm ci` into the cache."
    if os.environ.get('CARERFT_KATEX_DIST'): return _check(Path(os.environ['CARERFT_KATEX_DIST']).expanduser())
    cache = cache_dir(); dist = cache / 'node_modules' / 'katex' / 'dist'
    if (cache / '.complete').exists(): return _check(dist)
    npm = shutil.which('npm')
    if not npm: raise KatexUnavailable('npm is not installed (Debian: apt-get install -y npm)')
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.katex-', dir=cache.parent))   # install beside, then rename: no half caches
    try:
        for f in ('package.json', 'package-lock.json'): shutil.copy(HERE / f, tmp / f)
        try:
            r = subprocess.run([npm, 'ci', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'],
                               cwd=tmp, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired: raise KatexUnavailable('`npm ci` took over 300 s (is the npm registry reachable?)')
        if r.returncode:
            why = '\n'.join((r.stdout + r.stderr).strip().splitlines()[:6])
            raise KatexUnavailable(f'`npm ci` failed (exit {r.returncode}; is the npm registry reachable?):\n{why}')
        got = json.loads((tmp / 'node_modules/katex/package.json').read_text())['version']
        if got != version(): raise KatexUnavailable(f'npm installed katex {got}, expected {version()}')
        _check(tmp / 'node_modules/katex/dist')
        (tmp / '.complete').write_text(version() + '\n')
        try: tmp.rename(cache)
        except OSError:   # another build filled the cache meanwhile
            if not (cache / '.complete').exists(): raise
    finally: shutil.rmtree(tmp, ignore_errors=True)
    return _check(dist)

def localize(site: Path, dist: Path) -> int:
    "Copy KaTeX into site/site_libs/katex and point every page at it; returns the number of pages rewritten."
    dest = site / DEST
    shutil.rmtree(dest, ignore_errors=True); dest.mkdir(parents=True)
    for n in NEEDED:
        if (dist / n).is_dir(): shutil.copytree(dist / n, dest / n)
        else: (dest / n).parent.mkdir(parents=True, exist_ok=True); shutil.copy(dist / n, dest / n)
    if (dist.parent / 'LICENSE').exists(): shutil.copy(dist.parent / 'LICENSE', dest / 'LICENSE')   # MIT: keep it with the copy
    n = 0
    for page in site.rglob('*.html'):
        t = page.read_text()
        if not CDN.search(t): continue
        offset = '../' * (len(page.relative_to(site).parts) - 1)
        page.write_text(CDN.sub(f'{offset}{DEST}/', t)); n += 1
    left = [str(p.relative_to(site)) for p in site.rglob('*.html') if CDN.search(p.read_text())]
    assert not left, f'pages still load KaTeX from the CDN: {left}'
    return n

def main(site: Path) -> int:
    try: dist = fetch()
    except KatexUnavailable as e:
        msg = (f'KaTeX {version()} could not be installed for the docs site: {e}\n'
               '  The site would show raw TeX offline. Fix: make npm and the npm registry reachable (the first build '
               'caches KaTeX), or set CARERFT_KATEX_DIST to the dist/ folder of '
               f'`npm install katex@{version()}` made elsewhere.')
        if os.environ.get('CARERFT_KATEX') == 'cdn':
            bar = '!' * 100
            print(f'{bar}\nWARNING: {msg}\nWARNING: CARERFT_KATEX=cdn: pages keep loading KaTeX from the CDN; maths is '
                  f'NOT rendered offline and tests/test_docs.py will fail.\n{bar}', file=sys.stderr)
            return 0
        print(f'ERROR: {msg}\n  Or build with CARERFT_KATEX=cdn to keep the CDN links (not offline).', file=sys.stderr)
        return 1
    n = localize(site, dist)
    print(f'KaTeX {version()} served from {DEST}/ ({n} pages rewritten), from {dist}')
    return 0

if __name__ == '__main__': sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else '_docs')))
