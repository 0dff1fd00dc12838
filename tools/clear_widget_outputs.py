"""Clear the saved outputs of cells that display a widget, and drop saved widget state.

Saved without a kernel (tools/save_outputs.py, execnb), such a cell keeps a figure of its first call and the text repr
`interactive(children=(FloatSlider(...`, so a reader who opens the notebook sees a broken widget. Saved by Jupyter with
widget state, it shows sliders that no kernel drives. Either way the output is stale; the cell comes alive when it runs.
Only those cells' outputs and the notebook's `metadata.widgets` change. Usage, after saving outputs:

    python tools/clear_widget_outputs.py nbs/01_explorer.ipynb [more notebooks]
"""
import json
import re
import sys
from pathlib import Path

WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'

def is_widget_output(o: dict) -> bool:
    "A widget view, or the text repr a widget leaves where no frontend drew it."
    data = o.get('data', {})
    return WIDGET_MIME in data or bool(re.match(r'(interactive|\w+Slider)\(', ''.join(data.get('text/plain', ''))))

def clear_widget_outputs(path: Path) -> list:
    "Clear every cell with a widget output; return the ids of the cleared cells."
    text = path.read_text(encoding='utf-8')
    nb = json.loads(text)
    cleared = [c.get('id') for c in nb['cells'] if any(is_widget_output(o) for o in c.get('outputs', []))]
    for c in nb['cells']:
        if c.get('id') in cleared:
            c['outputs'] = []
    nb.get('metadata', {}).pop('widgets', None)
    new = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n'   # nbdev's (execnb's) notebook format
    if new != text:
        path.write_text(new, encoding='utf-8')
    return cleared

if __name__ == '__main__':
    for fn in sys.argv[1:]:
        print(fn, 'cleared cells', clear_widget_outputs(Path(fn)))
