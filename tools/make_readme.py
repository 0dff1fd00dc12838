"""README.md from the processed index notebook (nbdev_readme needs quarto): python tools/make_readme.py _proc/index.ipynb README.md
Figures are written as PNG files under nbs/images/ (their bytes are the notebook's saved outputs) and linked from the README."""
import base64, json, re, sys
from pathlib import Path
import yaml

def directives(src): return dict(re.findall(r'^#\|\s*([\w-]+):?\s*(.*)$', src, re.M))

def to_md(nb_path, images: dict | None = None):
    "The README's text; each figure's PNG bytes go into `images` (relative path -> bytes) when given."
    out = []
    for c in json.loads(Path(nb_path).read_text())['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'raw' and s.startswith('---'):
            fm = yaml.safe_load(s.strip().strip('-')) or {}
            out.append(f"# {fm.get('title', '')}")
            if fm.get('description'): out.append(f"> {fm['description']}")
        elif c['cell_type'] == 'markdown': out.append(s)
        elif c['cell_type'] == 'code':
            d = directives(s)
            if d.get('include') == 'false' or 'hide' in d: continue
            code = '\n'.join(l for l in s.splitlines() if not l.startswith('#|')).strip()
            if code and d.get('echo') != 'false': out.append(f'``` python\n{code}\n```')
            if d.get('output') == 'false': continue
            for o in c.get('outputs', []):
                data = o.get('data', {})
                if o['output_type'] == 'stream': txt = ''.join(o['text'])
                elif 'text/markdown' in data: out.append(''.join(data['text/markdown'])); continue
                elif 'image/png' in data:
                    name = f"nbs/images/readme-{c.get('id', len(out))}.png"
                    if images is not None: images[name] = base64.b64decode(''.join(data['image/png']))
                    out.append(f'![]({name})'); continue
                elif 'text/plain' in data: txt = ''.join(data['text/plain'])
                else: continue
                out.append('    ' + txt.rstrip().replace('\n', '\n    '))
    return '\n\n'.join(out).strip() + '\n'

if __name__ == '__main__':
    images = {}
    Path(sys.argv[2]).write_text(to_md(sys.argv[1], images))
    for name, data in images.items():
        path = Path(sys.argv[2]).parent / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
