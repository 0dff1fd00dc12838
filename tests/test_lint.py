"The linter: ruff over the package and the notebooks (rules in pyproject.toml: line length 120, one statement per line)."
import shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args):
    exe = shutil.which('ruff') or str(Path(sys.executable).parent / 'ruff')
    if not Path(exe).exists():
        pytest.fail('ruff is not installed: pip install -e ".[dev]"')
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check():
    r = ruff('check', 'carerft', 'nbs')
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_notebooks_are_formatted():
    r = ruff('format', '--check', 'nbs')
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_the_linter_can_fail(tmp_path):
    "Guard: the configured rules flag a semicolon, a one-line if and a long line."
    bad = tmp_path / 'bad.py'
    bad.write_text('x = 1; y = 2\nif x: y = 3\nz = "' + 'a' * 130 + '"\n')
    r = ruff('check', '--config', str(ROOT / 'pyproject.toml'), str(bad))
    assert r.returncode == 1 and all(code in r.stdout for code in ('E702', 'E701', 'E501')), r.stdout
