"""JupyterLab in a real browser, as a student uses it.

JupyterLab starts with the command ``make lab`` runs (``make -s print-lab-cmd``; only a free port on
127.0.0.1, a token and ``--no-browser`` are added, plus ``--allow-root`` where the tests run as root), in
a copy of the course's notebooks, with kernels in fast mode on one thread. Playwright drives Debian's
headless Chromium (``COURSE_CHROMIUM``, default ``/usr/bin/chromium``; Playwright's own browser
download needs the network) through the lab's menus and editor:

- a lecture runs to its end without errors, draws its figures, and its ipywidgets explorer renders
  and redraws when a slider moves;
- an exercise notebook runs to its end with errors only in the cells tagged ``raises-exception``,
  every check cell reports "not implemented", and after typing a wrong implementation into a stub
  cell its check shows the failing case and the diagnosis, then after a right one the pass.

Screenshots go to ``COURSE_SCREENSHOTS`` (default: a temporary folder), never into the checkout;
``check-feedback.png`` there is the README's picture (docs/check-feedback.png). Without Chromium or
Playwright the tests skip and say why.
"""
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")
# Chromium as root in a container needs --no-sandbox; the others keep it off the network and quiet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
LECTURE = "lectures/02_pooling.ipynb"
EXERCISE = "exercises/01_conv_arithmetic.ipynb"
STUB = "def conv_output_size("
CHECK = 'check("conv_output_size", conv_output_size)'
SIGNATURE = '''def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution along one axis (an int)."""
'''
WRONG = SIGNATURE + "    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride"  # forgets the + 1
RIGHT = WRONG + " + 1"
TIMEOUT_MS = 240_000  # one notebook's run; generous because CI runs notebooks on the other core meanwhile

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (the dev extra)")
expect = sync_api.expect
if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's `chromium`, as .ci/run does, or set COURSE_CHROMIUM)",
                allow_module_level=True)


def lab_command() -> list[str]:
    """The Makefile's `make lab` command, its program made absolute."""
    line = subprocess.run(["make", "-s", "--no-print-directory", "print-lab-cmd"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    command = shlex.split(line)
    command[0] = str((ROOT / command[0]).resolve()) if not os.path.isabs(command[0]) else command[0]
    return command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("COURSE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"browser test screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab on a copy of lectures/ and exercises/; yields (base URL, token, course folder)."""
    home = tmp_path_factory.mktemp("lab")
    course = home / "course"
    for tree in ("lectures", "exercises"):
        shutil.copytree(ROOT / tree, course / tree)
    # A fresh Jupyter configuration: no user settings, workspaces or kernels from this machine, and no
    # request for Jupyter news (its notification would cover the notebook).
    settings = home / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # `make test` sets Agg; students get inline figures
    env.update(COURSE_FAST="1", OMP_NUM_THREADS="1", COURSE_THREADS="1",
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               IPYTHONDIR=str(home / "ipython"))
    token, port = secrets.token_hex(16), free_port()
    command = lab_command() + ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = open(home / "jupyterlab.log", "w")
    server = subprocess.Popen(command, cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def api(path, method="GET"):
        request = urllib.request.Request(base + path, method=method, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            body = reply.read()
        return json.loads(body) if body else None

    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{(home / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                api("/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within 180 s:\n{(home / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, token, course
    finally:
        try:
            for kernel in api("/api/kernels") if server.poll() is None else []:
                api(f"/api/kernels/{kernel['id']}", method="DELETE")
        except OSError:
            pass  # the server is going down anyway; SIGTERM below shuts down what is left
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, shots, request):
    """A fresh browser page; its last state is saved as a screenshot, whatever the test's outcome."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        yield page
    finally:
        try:
            page.screenshot(path=shots / f"{request.node.name}-last.png")
        finally:
            context.close()


def open_notebook(page, lab, path):
    """Open ``path`` alone in a workspace of its own (no tabs restored from another test) and wait until
    its kernel is idle; returns the notebook panel."""
    base, token, _ = lab
    page.goto(f"{base}/lab/workspaces/{Path(path).stem}/tree/{path}?token={token}")
    # The toolbar's indicator says "idle" before the kernel even starts (and Run All Cells is then
    # lost); the status bar names the kernel and its state only once it is connected.
    expect(page.locator(".jp-StatusBar-TextItem").filter(has_text=re.compile(r"\| Idle$"))).to_have_count(1, timeout=TIMEOUT_MS)
    return page.locator(".jp-NotebookPanel:visible")


def run_all_and_save(page, panel, lab, path):
    """Run > Run All Cells, wait for the kernel to finish, save, and return the notebook as saved."""
    cells = sum(cell.cell_type == "code" for cell in nbformat.read(lab[2] / path, as_version=4).cells)
    prompts = panel.locator(".jp-CodeCell .jp-InputPrompt")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # Every cell is queued ([*]) at once, then numbered as it finishes. (The kernel goes idle between
    # cells, so the kernel status alone cannot tell when the run is over.)
    expect(prompts.filter(has_text="[*]").first).to_be_attached(timeout=30_000)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not (len(done := prompts.all_text_contents()) == cells and all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in done)):
        assert time.monotonic() < deadline, f"Run All Cells did not finish: prompts {done}"
        page.wait_for_timeout(500)
    expect(page.locator(".jp-StatusBar-TextItem").filter(has_text=re.compile(r"\| Idle$"))).to_have_count(1, timeout=TIMEOUT_MS)
    page.keyboard.press("Control+s")
    expect(page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty")).to_have_count(0, timeout=30_000)
    return nbformat.read(lab[2] / path, as_version=4)


def code_cell(page, panel, text):
    """The code cell whose source contains ``text``, scrolled into view."""
    cell = panel.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=text))
    cell.scroll_into_view_if_needed()
    return cell


def errors(nb) -> list[tuple[int, bool]]:
    """(cell index, tagged raises-exception) for every code cell with an error output."""
    return [(i, "raises-exception" in cell.metadata.get("tags", [])) for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and any(out.output_type == "error" for out in cell.outputs)]


def test_lecture_runs_and_its_explorer_redraws(page, lab, shots):
    panel = open_notebook(page, lab, LECTURE)
    nb = run_all_and_save(page, panel, lab, LECTURE)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "Run All Cells must run every cell"
    assert errors(nb) == []
    assert any("image/png" in out.get("data", {}) for cell in code for out in cell.outputs), "the figures must render"
    page.screenshot(path=shots / "lecture.png")

    explorer = code_cell(page, panel, "pooling_explorer(").locator(".widget-interact")
    figure = explorer.locator(".widget-output img")
    expect(figure).to_be_visible(timeout=30_000)
    before, picture = figure.get_attribute("src"), explorer.screenshot(path=shots / "explorer-before.png")
    slider = explorer.locator(".widget-slider").filter(has_text="kernel")
    expect(slider.locator(".widget-readout")).to_have_text("2")
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    expect(slider.locator(".widget-readout")).to_have_text("3")
    expect(figure).not_to_have_attribute("src", before, timeout=60_000)
    expect(figure).to_be_visible()
    assert explorer.screenshot(path=shots / "explorer-after.png") != picture


def test_exercise_checks_say_not_implemented_then_fail_then_pass(page, lab, shots):
    panel = open_notebook(page, lab, EXERCISE)
    nb = run_all_and_save(page, panel, lab, EXERCISE)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "Run All Cells must run every cell, past the stubs"
    failed = errors(nb)
    assert failed and all(tagged for _, tagged in failed), f"errors outside the raises-exception cells: {failed}"
    checks = [cell for cell in code if cell.source.startswith("check(")]
    assert checks and all("not implemented" in out.get("data", {}).get("text/html", "")
                          for cell in checks for out in cell.outputs if out.output_type == "execute_result")

    stub, check = code_cell(page, panel, STUB), code_cell(page, panel, CHECK)
    feedback = check.locator(".jp-OutputArea-output[data-mime-type='text/html']")
    expect(feedback).to_contain_text("conv_output_size: not implemented")
    pictures = []
    for source, shown in ((WRONG, ["conv_output_size: failed", "0/2 points",
                                   "First failure, for conv_output_size(7x7 input, 3x3 filter, stride 1 (lecture))",
                                   "expected 5, got 4"]),
                          (RIGHT, ["conv_output_size: passed", "2/2 points", "all 16 cases passed"])):
        stub.locator(".cm-content").click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(source)  # as pasted: no auto-indent or bracket closing
        page.keyboard.press("Shift+Enter")  # runs the cell and selects the check cell
        page.keyboard.press("Shift+Enter")
        for text in shown:
            expect(feedback).to_contain_text(text, timeout=60_000)
        expect(stub.locator(".jp-InputArea")).to_contain_text(source.splitlines()[-1].strip())
        stub.evaluate("cell => cell.scrollIntoView({block: 'start'})")
        top, bottom = stub.bounding_box(), check.bounding_box()
        clip = {"x": top["x"], "y": top["y"], "width": top["width"], "height": bottom["y"] + bottom["height"] - top["y"]}
        pictures.append(Image.open(io.BytesIO(page.screenshot(clip=clip))))

    # The README's picture: the wrong attempt's feedback above the right one's.
    gap = 16
    both = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures) + gap), "white")
    both.paste(pictures[0], (0, 0))
    both.paste(pictures[1], (0, pictures[0].height + gap))
    both.save(shots / "check-feedback.png", optimize=True)
