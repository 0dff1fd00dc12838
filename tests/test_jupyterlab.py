"""The book as a learner opens it: the notebooks in a real JupyterLab, driven by headless Chromium through Selenium.

Static checks (always run): every notebook names the python3 kernel, so JupyterLab does not ask "Select Kernel", and
no notebook is saved with widget views (a reader would see a stale figure and an `interactive(...)` text repr).

End to end (needs Debian's `chromium` and `chromium-driver` and the `selenium` package): JupyterLab runs on a free local
port without a token, on a temporary copy of the notebooks, so nothing is written into the checkout. Every chapter with
widgets or reader-driven plots, and every tutorial, is opened and run with Run > Run All Cells: every cell runs, none
errors. Every slider then answers the keyboard. The explorer's sliders are moved by dragging, typing and arrow keys;
after each move the figure changes, the kernel holds the numbers the readouts show, and the figure is exactly the one
those numbers draw, title included. Without a browser these tests are skipped with a warning; CI sets
CARERFT_REQUIRE_BROWSER=1 when it installed one, and then they must run."""
import ast
import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
KERNELSPEC = {'display_name': 'python3', 'language': 'python', 'name': 'python3'}   # what tools/kernelspec.py writes
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'
WIDGET_REPR = re.compile(r'(interactive|\w+Slider)\(')   # what a widget leaves where no frontend drew it

def all_notebooks() -> list:
    "Every notebook nbdev works on (the same rule as tests/test_notebooks.py)."
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(s.startswith(('_', '.')) for s in p.relative_to(NBS).parts))

def read(nb: Path) -> dict:
    return json.loads(nb.read_text(encoding='utf-8'))

def code(nb: Path) -> str:
    return '\n'.join(''.join(c['source']) for c in read(nb)['cells'] if c['cell_type'] == 'code')

def rel(nb: Path) -> str:
    return str(nb.relative_to(NBS))

INTERACTIVE = re.compile(r'\bipywidgets\b|\binteract(?:ive)?\(|\bexplorer\(|\bto_jshtml\(|\balpha_animation\(')
CHAPTERS = [p for p in all_notebooks() if p.parent == NBS and INTERACTIVE.search(code(p))]   # widgets, live plots
TUTORIALS = [p for p in all_notebooks() if p.parent.name == 'tutorials']
EXPLORER = NBS / '01_explorer.ipynb'

# ---------------------------------------------------------------- static: what a reader sees before running anything
@pytest.mark.parametrize('nb', all_notebooks(), ids=rel)
def test_notebook_names_its_kernel(nb):
    ks = read(nb).get('metadata', {}).get('kernelspec')
    assert ks == KERNELSPEC, (f'{rel(nb)}: kernelspec {ks}, so JupyterLab asks "Select Kernel". '
                              f'Run: python tools/kernelspec.py nbs/{rel(nb)}')

@pytest.mark.parametrize('nb', all_notebooks(), ids=rel)
def test_no_saved_widget_views(nb):
    d = read(nb)
    assert 'widgets' not in d.get('metadata', {}), f'{rel(nb)}: saved widget state draws sliders no kernel drives'
    stale = [c.get('id') for c in d['cells'] for o in c.get('outputs', [])
             if WIDGET_MIME in o.get('data', {}) or WIDGET_REPR.match(''.join(o.get('data', {}).get('text/plain', '')))]
    assert not stale, (f'{rel(nb)}: cells {stale} are saved with a widget output (a stale figure and a text repr). '
                       f'Run: python tools/clear_widget_outputs.py nbs/{rel(nb)}')

def test_chapters_found():
    assert EXPLORER in CHAPTERS and TUTORIALS, (CHAPTERS, TUTORIALS)

# ---------------------------------------------------------------- JupyterLab, Chromium and a side channel into kernels
def _browser() -> tuple:
    "(chromium, chromedriver); if one is missing, fail under CARERFT_REQUIRE_BROWSER=1, else skip with a warning."
    chrome = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
    driver = shutil.which('chromedriver')
    try:
        import selenium
    except ImportError:
        selenium = None
    missing = [name for name, have in (('chromium', chrome), ('chromium-driver', driver), ('selenium', selenium))
               if not have]
    if not missing:
        return chrome, driver
    msg = f'{", ".join(missing)} not installed (apt-get install chromium chromium-driver; pip install -e ".[dev]")'
    if os.environ.get('CARERFT_REQUIRE_BROWSER') == '1':
        pytest.fail(f'CARERFT_REQUIRE_BROWSER=1 but {msg}')
    warnings.warn(f'notebooks not tested in JupyterLab: {msg}')
    pytest.skip(msg)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

class Lab:
    "JupyterLab on a temporary copy of nbs/, a headless Chromium driven by Selenium, and a second client per kernel."
    def __init__(self, tmp: Path, chrome: str, chromedriver: str):
        self.tmp, self.root, self.proc, self.driver, self.log = tmp, tmp / 'root', None, None, None
        self.clients, self.path = {}, None
        self.port = _free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self._copy()
        self._start_lab()
        self._start_browser(chrome, chromedriver)

    def _copy(self):
        "settings.ini (a chapter's last cell runs nbdev_export) and nbs/ with only the notebooks under test."
        keep = {p.resolve() for p in CHAPTERS + TUTORIALS}
        def ignore(folder, names):
            return [n for n in names if n.startswith(('.ipynb_checkpoints', '_proc'))
                    or (n.endswith('.ipynb') and (Path(folder) / n).resolve() not in keep)]
        shutil.copytree(NBS, self.root / 'nbs', ignore=ignore)
        shutil.copy(ROOT / 'settings.ini', self.root)

    def _start_lab(self):
        "JupyterLab as a reader starts it, except that config, runtime, settings and workspaces live in the temp dir."
        t = self.tmp
        for d in ('config', 'runtime', 'data', 'ipython', 'workspaces', 'settings/@jupyterlab/apputils-extension'):
            (t / d).mkdir(parents=True, exist_ok=True)
        (t / 'settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings').write_text(
            json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))   # no "receive Jupyter news?" toast
        env = {k: v for k, v in os.environ.items()   # not pytest's: MPLBACKEND=Agg would hide every figure
               if k not in ('MPLBACKEND', 'IN_TEST') and not k.startswith('PYTEST')}
        env.update(JUPYTER_CONFIG_DIR=str(t / 'config'), JUPYTER_RUNTIME_DIR=str(t / 'runtime'),
                   JUPYTER_DATA_DIR=str(t / 'data'), IPYTHONDIR=str(t / 'ipython'),
                   JUPYTERLAB_SETTINGS_DIR=str(t / 'settings'), JUPYTERLAB_WORKSPACES_DIR=str(t / 'workspaces'),
                   PATH=str(Path(sys.executable).parent) + os.pathsep + env.get('PATH', ''))
        self.log = open(t / 'lab.log', 'wb')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1',
             f'--ServerApp.port={self.port}', '--ServerApp.port_retries=0', '--IdentityProvider.token=',
             '--ServerApp.password=', '--ServerApp.allow_root=True', f'--ServerApp.root_dir={self.root}',
             '--LabApp.expose_app_in_browser=True'],   # window.jupyterapp: the test reads the notebook model
            cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait(lambda: self._api('status'), 60, 'JupyterLab did not start')

    def _start_browser(self, chrome: str, chromedriver: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        opts = webdriver.ChromeOptions()
        opts.binary_location = chrome
        for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--window-size=1400,1000', f'--user-data-dir={self.tmp / "chromium"}'):
            opts.add_argument(a)
        service = Service(chromedriver, log_output=str(self.tmp / 'chromedriver.log'))
        self.driver = webdriver.Chrome(options=opts, service=service)
        self.driver.set_script_timeout(30)

    def _api(self, path: str, method: str = 'GET'):
        "JupyterLab's REST API; None while it does not answer."
        req = urllib.request.Request(f'{self.url}/api/{path}', method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                body = r.read()
        except OSError:
            return None
        return json.loads(body) if body else True

    def wait(self, cond, timeout: float, what: str):
        "Poll `cond` until it returns something truthy; fail with `what` and the server log after `timeout` seconds."
        end = time.time() + timeout
        while time.time() < end:
            got = cond()
            if got:
                return got
            time.sleep(0.2)
        log = (self.tmp / 'lab.log').read_text(errors='replace')[-3000:]
        pytest.fail(f'{what} within {timeout} s. JupyterLab log tail:\n{log}')

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    # ------------------------------------------------ the notebook, as a reader drives it
    def open(self, nb: Path):
        "Open a notebook by its URL; its kernel must start without a 'Select Kernel' dialog."
        if self.path:
            self.close()
        path = f'nbs/{rel(nb)}'
        self.driver.get(f'{self.url}/lab/tree/{path}')
        def state():
            return self.js("""
                const dialog = document.querySelector('.jp-Dialog');
                if (dialog) return 'dialog: ' + dialog.innerText;
                const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                const k = w && w.context && w.context.path === arguments[0] && w.sessionContext.session
                          && w.sessionContext.session.kernel;
                return k && k.status === 'idle' && w.content.widgets.length ? 'idle' : '';""", path)
        got = self.wait(state, 90, f'{path} did not open with an idle kernel')
        assert got == 'idle', f'{path}: {got}'
        self.js("""window._carerftLastMsg = Date.now();   // when the page last heard from or spoke to the kernel
            window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.anyMessage.connect(
                () => { window._carerftLastMsg = Date.now(); });""")
        self.path = path
        return self

    def run_all(self, timeout: float = 150) -> dict:
        "Run > Run All Cells from the menu bar; wait until every code cell ran or one failed."
        from selenium.webdriver.common.by import By
        next(m for m in self.driver.find_elements(By.CSS_SELECTOR, '.lm-MenuBar-item') if m.text == 'Run').click()
        def items():
            return [e for e in self.driver.find_elements(By.CSS_SELECTOR, '.lm-Menu-item')
                    if e.text.startswith('Run All Cells')]
        self.wait(items, 10, 'no "Run All Cells" in the Run menu')[0].click()
        t0 = time.time()
        def finished():
            s = self.cells()
            return s if s['error'] or (s['ran'] == s['code'] and s['status'] == 'idle') else None
        s = self.wait(finished, timeout, f'{self.path}: Run All did not finish')
        return s | dict(seconds=time.time() - t0)

    def cells(self) -> dict:
        "From the notebook model: code cells, how many ran, errors (cell index, name, value), outputs per mime type."
        return self.js("""
            const w = window.jupyterapp.shell.currentWidget, cs = w.content.model.cells;
            const s = {code: 0, ran: 0, error: [], mimes: {}, status: w.sessionContext.session.kernel.status};
            for (let i = 0; i < cs.length; i++) {
                const c = cs.get(i);
                if (c.type !== 'code') continue;
                s.code++;
                if (c.executionCount !== null) s.ran++;
                for (const o of c.outputs.toJSON()) {
                    if (o.output_type === 'error') s.error.push([i, o.ename, o.evalue]);
                    for (const m of Object.keys(o.data || {})) s.mimes[m] = (s.mimes[m] || 0) + 1;
                }
            }
            return s;""")

    # ipykernel 7 runs a widget's comm message while an execute request holds the kernel (so that an async cell can
    # wait for a widget), and a figure drawn then can come out garbled. So the side channel speaks only when page and
    # kernel are quiet, as nothing else runs while a reader drags a slider.
    def quiet(self, seconds: float = 0.7):
        "Wait until the kernel is idle and no message passed between page and kernel for `seconds`."
        script = """const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
                    return k.status === 'idle' && Date.now() - window._carerftLastMsg > arguments[0];"""
        self.wait(lambda: self.js(script, 1000 * seconds), 30, f'{self.path}: the kernel did not settle')

    def kernel(self):
        "A second client of the notebook's kernel: what the test asks there never shows in the notebook."
        if self.path not in self.clients:
            from jupyter_client import BlockingKernelClient
            kid = next(s['kernel']['id'] for s in self._api('sessions') if s['path'] == self.path)
            kc = BlockingKernelClient(connection_file=str(self.tmp / 'runtime' / f'kernel-{kid}.json'))
            kc.load_connection_file()
            kc.start_channels()
            kc.wait_for_ready(timeout=30)
            self.clients[self.path] = kc
        return self.clients[self.path]

    def value(self, expr: str):
        "The value (JSON) of a Python expression in the notebook's kernel, read once page and kernel are quiet."
        self.quiet()
        kc = self.kernel()
        mid = kc.execute('', silent=True, store_history=False,
                         user_expressions={'r': f'__import__("json").dumps({expr})'})
        reply = kc.get_shell_msg(timeout=30)
        while reply['parent_header'].get('msg_id') != mid:
            reply = kc.get_shell_msg(timeout=30)
        r = reply['content']['user_expressions']['r']
        assert r['status'] == 'ok', f'{expr}: {r}'
        return json.loads(ast.literal_eval(r['data']['text/plain']))

    def figures(self, src: str) -> list:
        "The PNGs (base64) that running `src` in the notebook's kernel displays, once page and kernel are quiet."
        self.quiet()
        kc = self.kernel()
        mid = kc.execute(src, store_history=False)
        pngs = []
        while True:
            m = kc.get_iopub_msg(timeout=60)
            if m['parent_header'].get('msg_id') != mid:
                continue
            if m['msg_type'] == 'error':
                pytest.fail('\n'.join(m['content']['traceback']))
            if m['msg_type'] == 'display_data' and 'image/png' in m['content']['data']:
                pngs.append(m['content']['data']['image/png'])
            if m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle':
                return pngs

    def close(self):
        "Shut the open notebook's kernel down (the next notebook starts its own)."
        kc = self.clients.pop(self.path, None)
        if kc:
            kc.stop_channels()
        for s in self._api('sessions') or []:
            if s['path'] == self.path:
                self._api(f'sessions/{s["id"]}', method='DELETE')

    def stop(self) -> list:
        "Stop the browser, JupyterLab and every kernel it started; return the ids of processes that had to be killed."
        import psutil
        for kc in self.clients.values():
            kc.stop_channels()
        left = []
        try:
            if self.driver:
                self.driver.quit()
        finally:
            if self.proc:
                kids = psutil.Process(self.proc.pid).children(recursive=True) if self.proc.poll() is None else []
                for s in self._api('sessions') or []:
                    self._api(f'sessions/{s["id"]}', method='DELETE')
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
                for k in kids:   # kernels run in process groups of their own: end each by its id
                    try:
                        k.wait(5)
                    except psutil.TimeoutExpired:
                        left.append(k.pid)
                        k.kill()
                    except psutil.NoSuchProcess:
                        pass
            if self.log:
                self.log.close()
        return left

def _written_by_jupyter() -> set:
    "What JupyterLab or its kernels would leave in the checkout if they ran there."
    return {p for name in ('.ipynb_checkpoints', '.virtual_documents', 'Untitled*.ipynb') for p in ROOT.rglob(name)
            if '.venv' not in p.parts}

@pytest.fixture(scope='module')
def lab():
    "One JupyterLab and one Chromium for the module, torn down with every kernel even when a test fails."
    chrome, chromedriver = _browser()
    before = _written_by_jupyter()
    with tempfile.TemporaryDirectory(prefix='carerft-lab-') as tmp:
        lab = None
        try:
            lab = Lab(Path(tmp), chrome, chromedriver)
            yield lab
        finally:
            left = lab.stop() if lab else []
    assert not left, f'kernels still running after JupyterLab stopped (killed by id): {left}'
    assert _written_by_jupyter() <= before, f'written into the checkout: {_written_by_jupyter() - before}'

# ---------------------------------------------------------------- end to end
def _pixels(b64: str) -> tuple:
    "(size, RGB bytes) of a base64 PNG."
    from PIL import Image
    im = Image.open(io.BytesIO(base64.b64decode(b64))).convert('RGB')
    return im.size, im.tobytes()

def run_checked(lab: Lab, nb: Path):
    "Open `nb` and Run All Cells: every code cell runs, none errors, its figures show, on this environment's Python."
    s = lab.open(nb).run_all()
    assert not s['error'], f'{rel(nb)}: cells failed in JupyterLab (index, error, message): {s["error"]}'
    assert s['ran'] == s['code'], s
    saved = sum('image/png' in o.get('data', {}) for c in read(nb)['cells'] for o in c.get('outputs', []))
    assert s['mimes'].get('image/png', 0) >= max(saved, 1), f'{rel(nb)}: {saved} figures saved, shown {s["mimes"]}'
    assert lab.value('__import__("sys").prefix') == sys.prefix, 'the notebook did not run on the project environment'
    if 'nbdev_export(' in code(nb):   # the chapter's last cell exported into the copy, not into the checkout
        assert (lab.root / 'carerft' / '_modidx.py').exists(), 'the nbdev_export cell did not write into the copy'
    print(f'{rel(nb)}: {s["code"]} code cells ran in {s["seconds"]:.1f} s')

def press(lab: Lab, el, key: str):
    "Focus `el` as a reader who tabbed to it would, and press `key`."
    from selenium.webdriver.common.action_chains import ActionChains
    lab.js("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", el)
    ActionChains(lab.driver).send_keys(key).perform()

def _widget_state(lab: Lab, slider) -> tuple:
    "(the slider's readout, what the output of its widget shows: its images' data, else its text)."
    return tuple(lab.js("""
        const box = arguments[0].closest('.widget-interact'), out = box.querySelector('.widget-output');
        const imgs = [...out.querySelectorAll('img')].map(i => i.src);
        return [arguments[0].querySelector('.widget-readout').innerText, imgs.length ? imgs.join(' ') : out.innerText];
        """, slider))

def check_widgets_respond(lab: Lab, nb: Path):
    "Every widget slider answers ArrowLeft (readout and output change) and ArrowRight (both come back exactly)."
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    sliders = lab.driver.find_elements(By.CSS_SELECTOR, '.widget-interact .widget-slider')
    anims = lab.driver.find_elements(By.CSS_SELECTOR, 'input.anim-slider')
    assert sliders or anims, f'{rel(nb)}: no slider rendered'
    for s in sliders:
        before = _widget_state(lab, s)
        press(lab, s.find_element(By.CSS_SELECTOR, '.noUi-handle'), Keys.ARROW_LEFT)
        def moved():
            now = _widget_state(lab, s)
            return now if now[0] != before[0] and now[1] != before[1] else None
        left = lab.wait(moved, 15, f'{rel(nb)}: the slider at {before[0]} did not redraw on ArrowLeft')
        press(lab, s.find_element(By.CSS_SELECTOR, '.noUi-handle'), Keys.ARROW_RIGHT)
        lab.wait(lambda: _widget_state(lab, s)[1] != left[1], 15, f'{rel(nb)}: no redraw on ArrowRight at {left[0]}')
        lab.wait(lambda: _widget_state(lab, s) == before, 15,
                 f'{rel(nb)}: a step left and right did not give back the output at {before[0]}')
    for a in anims:   # matplotlib's to_jshtml: plain JavaScript, no kernel
        img = a.find_element(By.XPATH, './ancestor::div[contains(@class, "animation")]//img')
        src = img.get_attribute('src')
        press(lab, a, Keys.ARROW_RIGHT)
        lab.wait(lambda: img.get_attribute('src') != src, 5, f'{rel(nb)}: the animation ignored ArrowRight')

@pytest.mark.parametrize('nb', CHAPTERS, ids=rel)
def test_chapter_runs_and_responds(lab, nb):
    "Run All Cells in JupyterLab; then every slider moves one step and back, and its output follows."
    run_checked(lab, nb)
    check_widgets_respond(lab, nb)

# ---------------------------------------------------------------- the explorer, moved three ways
class Explorer:
    "The live `explorer()` of the explorer chapter (the notebook names it `live`)."
    NAMES = ('alpha', 'beta', 'pi_ref')
    HELD = '{k: live.result[k] for k in ("alpha", "beta", "pi_ref")}'   # what the kernel computed with

    def __init__(self, lab: Lab):
        from selenium.webdriver.common.by import By
        self.lab, self.css = lab, By.CSS_SELECTOR
        boxes = lab.driver.find_elements(self.css, '.widget-interact')
        assert len(boxes) == 1, f'{len(boxes)} interactive widgets on the page, expected the explorer alone'
        self.box = boxes[0]
        self.sliders = self.box.find_elements(self.css, '.widget-slider')
        assert [s.find_element(self.css, 'label').text for s in self.sliders] == ['α', 'β', 'π_ref']

    def shown(self) -> dict:
        "The numbers the readouts show."
        return {n: float(s.find_element(self.css, '.widget-readout').text) for n, s in zip(self.NAMES, self.sliders)}

    def image(self) -> str:
        "The figure in the widget (base64 PNG), once there is exactly one."
        def one():
            srcs = self.lab.js("return [...arguments[0].querySelectorAll('.widget-output img')].map(i => i.src);",
                               self.box)
            return srcs[0].split(',', 1)[1] if len(srcs) == 1 else None
        return self.lab.wait(one, 15, 'the explorer does not show exactly one figure')

    def settled(self, old_image: str, what: str, t0: float) -> tuple:
        "Wait for a new figure and a quiet kernel; the kernel must hold the numbers shown. (shown, image, seconds)"
        self.lab.wait(lambda: self.image() != old_image, 15, f'{what}: the figure did not change')
        seconds = time.time() - t0
        held = self.lab.value(self.HELD)
        shown, image = self.shown(), self.image()
        assert held == shown, f'{what}: the kernel computed with {held}, the sliders show {shown}'
        return shown, image, seconds

    def drawn(self, shown: dict) -> str:
        "The figure `explore` draws at `shown`, rendered in the same kernel."
        args = ', '.join(f'{k}={v!r}' for k, v in shown.items())
        pngs = self.lab.figures(f'from carerft.explorer import explore\nexplore({args})')
        assert len(pngs) == 1, f'explore({args}) showed {len(pngs)} figures'
        return pngs[0]

def _title(b64: str) -> bytes:
    "The top 6% of the figure's rows, where its title is."
    (w, h), rgb = _pixels(b64)
    return rgb[:3 * w * max(1, int(0.06 * h))]

def test_explorer_drag_type_keys(lab):
    "Drag β, type into π_ref's box, arrow keys on α: each redraws the figure, title included, at the values shown."
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    if lab.path != f'nbs/{rel(EXPLORER)}':
        run_checked(lab, EXPLORER)
    ex = Explorer(lab)
    shown, image = ex.shown(), ex.image()
    assert shown == dict(alpha=0.8, beta=0.04, pi_ref=0.2), f'the sliders show {shown}, not the defaults'
    held = lab.value(Explorer.HELD)
    assert held == shown, f'once the browser drew the sliders the kernel computed with {held}, they show {shown}'
    assert _pixels(image) == _pixels(ex.drawn(shown)), 'the first figure is not the one the values shown draw'

    def drag(slider):
        handle = slider.find_element(ex.css, '.noUi-handle')
        lab.js("arguments[0].scrollIntoView({block: 'center'});", handle)
        ActionChains(lab.driver).click_and_hold(handle).move_by_offset(25, 0).move_by_offset(25, 0).release().perform()
    def type_in(slider):
        box = slider.find_element(ex.css, '.widget-readout')
        lab.js("arguments[0].scrollIntoView({block: 'center'});", box)
        select_all = ActionChains(lab.driver).click(box).key_down(Keys.CONTROL).send_keys('a').key_up(Keys.CONTROL)
        select_all.send_keys('0.05', Keys.ENTER).perform()
    def arrows(slider):
        press(lab, slider.find_element(ex.css, '.noUi-handle'), Keys.ARROW_LEFT)
        ActionChains(lab.driver).send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT).perform()

    moves = []
    for how, i, move in (('dragging β', 1, drag), ("typing 0.05 into π_ref's box", 2, type_in),
                         ('three ArrowLefts on α', 0, arrows)):
        t0 = time.time()
        move(ex.sliders[i])
        new_shown, new_image, seconds = ex.settled(image, how, t0)
        name = Explorer.NAMES[i]
        assert [k for k in shown if new_shown[k] != shown[k]] == [name], f'{how}: {shown} -> {new_shown}'
        assert _title(new_image) != _title(image), f'{how}: the title did not change'
        assert _pixels(new_image) == _pixels(ex.drawn(new_shown)), f'{how}: the figure is not the one {new_shown} draws'
        moves.append((how, shown[name], new_shown[name], round(seconds, 1)))
        shown, image = new_shown, new_image
    assert moves[1][2] == 0.05 and moves[2][2] == 0.77, moves
    assert not lab.cells()['error']
    print('explorer (move, from, to, seconds to a new figure):', moves)

# ---------------------------------------------------------------- tutorials
@pytest.mark.parametrize('nb', TUTORIALS, ids=rel)
def test_tutorial_runs_top_to_bottom(lab, nb):
    "A tutorial, run with Run All Cells in JupyterLab as a reader would."
    run_checked(lab, nb)
