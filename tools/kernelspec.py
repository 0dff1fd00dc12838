"""Give notebooks a `kernelspec` so that Jupyter starts the environment's Python kernel without asking "Select Kernel".

Only the notebook-level `metadata.kernelspec` changes; cells, outputs, ids and the file's formatting stay as they are.
The kernel is named `python3`: Jupyter runs that name with the Python it is installed in (the project's venv).
`display_name` is written as nbdev_clean leaves it (nbdev 2.4.14's clean sets it to the kernel name and keeps the key),
so `nbdev_clean` changes nothing afterwards. Usage:

    python tools/kernelspec.py nbs/01_explorer.ipynb nbs/tutorials/toyworld_results.ipynb   # given notebooks
    python tools/kernelspec.py                                                               # every notebook in nbs/
    python tools/kernelspec.py --check                                                       # exit 1 if any lacks it
"""
import json
import sys
from pathlib import Path

KERNELSPEC = {'display_name': 'python3', 'language': 'python', 'name': 'python3'}
NBS = Path(__file__).resolve().parents[1] / 'nbs'

def notebooks(args: list) -> list:
    "The notebooks named in `args`, or every notebook under nbs/ that nbdev works on (no `_` or `.` folders or files)."
    if args:
        return [Path(a) for a in args]
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(s.startswith(('_', '.')) for s in p.relative_to(NBS).parts))

def has_kernelspec(path: Path) -> bool:
    return json.loads(path.read_text(encoding='utf-8')).get('metadata', {}).get('kernelspec') == KERNELSPEC

def set_kernelspec(path: Path) -> bool:
    "Write KERNELSPEC into the notebook's metadata; True if the file changed."
    text = path.read_text(encoding='utf-8')
    nb = json.loads(text)
    nb.setdefault('metadata', {})['kernelspec'] = dict(KERNELSPEC)
    new = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n'   # nbdev's (execnb's) notebook format
    if new != text:
        path.write_text(new, encoding='utf-8')
    return new != text

if __name__ == '__main__':
    args = sys.argv[1:]
    fns = notebooks([a for a in args if a != '--check'])
    if '--check' in args:
        bad = [str(p) for p in fns if not has_kernelspec(p)]
        if bad:
            sys.exit('no python3 kernelspec (run python tools/kernelspec.py): ' + ' '.join(bad))
    else:
        for p in fns:
            print('set' if set_kernelspec(p) else 'kept', p)
