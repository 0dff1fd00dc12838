"Run every notebook in nbs/ the way `nbdev_test` does (settings.ini `tst_flags` skipped), one pytest test each."
import os
from pathlib import Path
import pytest
from fastcore.xtras import working_directory
from nbdev.config import get_config
import nbdev.test as nbt   # not `from nbdev.test import test_nb`: pytest would collect that name as a test

ROOT = Path(__file__).resolve().parents[1]
# nbdev 2.4.14's get_config() looks for settings.ini upward from the *cwd* and ignores `path` when it finds
# one, so load it from the project root explicitly (pytest may be started from anywhere).
with working_directory(ROOT): CFG = get_config(path=ROOT)
assert CFG.config_file == ROOT/'settings.ini', CFG.config_file
NBS = sorted(p for p in CFG.nbs_path.rglob('*.ipynb')
             if not any(part.startswith(('_', '.')) for part in p.relative_to(CFG.nbs_path).parts)
             and not (p.parent/'.notest').exists())   # same skips as nbdev_test
assert NBS, f'no notebooks found in {CFG.nbs_path}'   # else pytest would just skip
SKIP = CFG.tst_flags.split()                           # "notest slow cuda"
FORCE = os.environ.get('NBDEV_TEST_FLAGS', '').split()   # e.g. NBDEV_TEST_FLAGS=slow

@pytest.mark.parametrize('nb', NBS, ids=lambda p: str(p.relative_to(CFG.nbs_path)))
def test_notebook(nb, monkeypatch):
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    monkeypatch.chdir(nb.parent)
    ok, secs = nbt.test_nb(nb, skip_flags=SKIP, force_flags=FORCE, basepath=CFG.config_path)
    assert ok, f'{nb.name} failed (notebook traceback is on stderr above)'
