"Run notebooks the way nbdev_test does (tst_flags / `eval: false` cells skipped) and save their outputs in place. Then run nbdev_clean."
import os, sys
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import extract_directives

def save_outputs(fn, skip):
    fn = Path(fn).resolve(); nb = read_nb(fn)
    def _skip(cell):
        if cell.cell_type != 'code' or 'nbdev_export(' in cell.source: return True
        d = extract_directives(cell, remove=False)
        return d.get('eval:', [''])[0].lower() == 'false' or bool(skip & d.keys())
    sh = CaptureShell(fn)
    with working_directory(fn.parent): sh.run_all(nb, exc_stop=True, preproc=_skip)
    write_nb(nb, fn)

if __name__ == '__main__':   # usage: python tools/save_outputs.py [--flags "slow"] [nbs/x.ipynb ...]; then nbdev_clean
    os.environ.setdefault('MPLBACKEND', 'Agg')
    args = sys.argv[1:]; force = set()
    if args[:1] == ['--flags']: force = set(args[1].split()); args = args[2:]
    cfg = get_config()
    fns = args or sorted(p for p in cfg.nbs_path.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    for fn in fns: save_outputs(fn, set(cfg.tst_flags.split()) - force); print('saved', fn)
