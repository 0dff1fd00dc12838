#!/bin/bash
# Build the documentation site into _docs/ without quarto: nbdev's own notebook processing (-> _proc/, the quarto
# project, valid for `nbdev_docs` wherever quarto exists), then smalldocs renders that project to HTML.
# Run from the project root with the package installed (processing imports it).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf _proc _docs
python tools/proc_docs.py
python - <<'PY'
import json, re
from pathlib import Path
proc = Path('_proc'); ren = {}
for nb in sorted(proc.rglob('*.ipynb')):   # smalldocs ignores `output-file:`; nbdev links use it
    fm = ''.join(json.loads(nb.read_text())['cells'][0]['source'])
    m = re.search(r'^output-file:\s*(\S+)\.html', fm, re.M)
    if m and m.group(1) != nb.stem:
        nb.rename(nb.with_name(m.group(1) + '.ipynb')); ren[nb.name] = m.group(1) + '.ipynb'
sb = proc/'sidebar.yml'; t = sb.read_text()
for old, new in ren.items(): t = re.sub(rf'(?m)^(\s*- (?:.*/)?){re.escape(old)}$', rf'\g<1>{new}', t)
sb.write_text(t)
PY
smalldocs render -q _proc        # output-dir _docs comes from nbdev.yml -> _proc/_docs
mv _proc/_docs _docs
echo "docs written to _docs/ ($(ls _docs/*.html | wc -l) pages)"
# nbdev writes cross-references as absolute links to the published site; make them relative so the local build
# is browsable offline and its links can be checked.
site=$(python -c "from nbdev.config import get_config; c=get_config(); print(c.doc_host.rstrip('/') + c.doc_baseurl.rstrip('/') + '/')")
python - "$site" <<'PY'
import sys
from pathlib import Path
site = sys.argv[1]
for f in Path('_docs').rglob('*.html'): f.write_text(f.read_text().replace(site, ''))
PY
# smalldocs links pages with maths to KaTeX on a CDN: serve KaTeX from the site instead (npm, cached outside the
# checkout), so formulas render offline. Fails if KaTeX cannot be had; CARERFT_KATEX=cdn keeps the CDN, loudly.
python tools/katex_local.py _docs
