"""Drive the notebooks in JupyterLab with Debian's Chromium (Playwright): the README's screenshots, and the
helpers ``tests/test_browser.py`` uses.

    .venv/bin/python scripts/screenshots.py --out docs/img        # trains the embedded default (30 epochs)

Runs every notebook for real in a temporary folder (train.ipynb first, which writes runs/train there; the
other two read it), moves the alpha slider with the keyboard, and saves one PNG per notebook. The server
listens on 127.0.0.1 with a random port and token and is always stopped; every wait has a timeout.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# Flags that keep Chromium quiet on a machine with no network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]
# JupyterLab settings for a scripted session: every cell stays in the DOM (no virtual scrolling), no news
# or update checks (they would try the network and pop notifications over the notebook).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


# The notebook in front: JupyterLab keeps the other open notebooks in the DOM, hidden.
CURRENT = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root_dir: Path, *, timeout: float = 90.0):
    """Start ``jupyter lab`` on loopback serving ``root_dir``; yields (base_url, token); always stops it."""
    port, token = free_port(), secrets.token_hex(16)
    state = Path(tempfile.mkdtemp(prefix="lt_kit_lab_"))
    settings = state / "settings"
    for name, value in LAB_SETTINGS.items():
        plugin, file = name.rsplit("/", 1)
        (settings / plugin).mkdir(parents=True, exist_ok=True)
        (settings / plugin / file).write_text(json.dumps(value))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(state / "config"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}", "--allow-root",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={state / 'workspaces'}",
           "--LabApp.news_url=None", "--ServerApp.port_retries=0"]
    log = open(state / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log_tail = (state / "server.log").read_text()[-2000:]
                raise RuntimeError(f"jupyter lab exited ({proc.returncode}): {log_tail}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s")
            time.sleep(0.3)
        yield base, token
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)          # the server and the kernels it started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A Chromium page (Playwright, the system executable)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def open_notebook(page, base: str, token: str, name: str, *, timeout_ms: int = 90_000) -> None:
    """Open ``name`` and wait until it has a running kernel that is idle. A busy machine can make
    JupyterLab ask which kernel to use (its kernel list arrived late); the default answer is accepted."""
    page.goto(f"{base}/lab/tree/{name}?token={token}", timeout=timeout_ms)
    page.wait_for_selector(f"{CURRENT} .jp-Notebook .jp-Cell", timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    while True:
        if accept.count() and accept.first.is_visible():
            accept.first.click()
        elif _has_kernel(base, token, name):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: no kernel started within {timeout_ms / 1000:.0f} s")
        page.wait_for_timeout(250)
    wait_idle(page, timeout_ms=timeout_ms)


def _has_kernel(base: str, token: str, name: str) -> bool:
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=5) as r:
        sessions = json.load(r)
    return any(s.get("path", "").endswith(name) and s.get("kernel") for s in sessions)


def wait_idle(page, *, timeout_ms: int) -> None:
    page.wait_for_selector(f"{CURRENT} .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout_ms)


def run_all_cells(page, *, timeout_ms: int = 240_000) -> None:
    """Run > Run All Cells, then wait until every code cell has run (or one shows an error: the rest never
    run) and the kernel is idle again."""
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if accept.count() and accept.first.is_visible():          # a late kernel question (see open_notebook)
        accept.first.click()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function(
        """(panel) => {
            const nb = document.querySelector(panel);
            if (!nb) return false;
            if (nb.querySelector("[data-mime-type='application/vnd.jupyter.stderr'] pre")?.textContent
                .includes('Error')) return true;
            const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""", arg=CURRENT, timeout=timeout_ms)
    wait_idle(page, timeout_ms=timeout_ms)


def error_outputs(page) -> list[str]:
    """Text of every error or stderr output in the open notebook (tracebacks, widget errors)."""
    sel = ", ".join(f"{CURRENT} {s}" for s in ("[data-mime-type='application/vnd.jupyter.stderr']",
                                               ".jp-OutputArea-output.jp-mod-error"))
    texts = [t.strip() for t in page.locator(sel).all_inner_texts()]
    texts += [t for t in page.locator(f"{CURRENT} .jp-OutputArea").all_inner_texts()
              if "Traceback" in t or "Error displaying" in t]
    # tqdm writes its bar to stderr when it has no widget front end; that is not an error
    return [t for t in texts if t and not t.lstrip().startswith("train:")]


def slider_state(page) -> tuple[str, str]:
    """(readout text, the alpha figure's image source) of the explorer."""
    label = page.locator(f"{CURRENT} .lt-kit-readout").first.inner_text()
    img = page.locator(f"{CURRENT} .jp-OutputArea-output img").last.get_attribute("src") or ""
    return label, img


def move_slider(page, presses: int = 5, key: str = "ArrowRight", *, timeout_ms: int = 30_000) -> float:
    """Click the strength slider's handle and press ``key`` ``presses`` times; waits until the readout shows
    the slider's name and new value (``alpha 1.05:``, ``tau 1.05:``) and the figure has changed. Returns the
    seconds from the first key press to then."""
    before_label, before_img = slider_state(page)
    page.locator(f"{CURRENT} .lt-kit-alpha .noUi-handle").first.click()
    t0 = time.monotonic()
    for _ in range(presses):
        page.keyboard.press(key)
        page.wait_for_timeout(50)
    name = page.locator(f"{CURRENT} .lt-kit-alpha .widget-label").first.inner_text().strip()
    value = page.locator(f"{CURRENT} .lt-kit-alpha .widget-readout").first.inner_text().strip()
    page.wait_for_function(
        """([label, img, prefix, panel]) => {
            const nb = document.querySelector(panel);
            const l = nb.querySelector('.lt-kit-readout');
            const imgs = [...nb.querySelectorAll('.jp-OutputArea-output img')];
            return l && l.textContent !== label && l.textContent.startsWith(prefix)
                && imgs.length && imgs[imgs.length - 1].src !== img;
        }""", arg=[before_label, before_img, f"{name} {value}:", CURRENT], timeout=timeout_ms)
    return time.monotonic() - t0


def move_prior(page, presses: int = 1, key: str = "ArrowRight", *, timeout_ms: int = 30_000) -> float:
    """Click the explorer's test-prior control's handle and press ``key`` ``presses`` times (one prior per
    press, backward50 .. uniform .. forward50, estimated); waits until the readout names the prior the control
    shows (``| test prior forward2,``, ``| test prior estimated (``) and the figure has changed. Returns the
    seconds from the first key press."""
    before_label, before_img = slider_state(page)
    page.locator(f"{CURRENT} .lt-kit-prior .noUi-handle").first.click()
    t0 = time.monotonic()
    for _ in range(presses):
        page.keyboard.press(key)
        page.wait_for_timeout(50)
    value = page.locator(f"{CURRENT} .lt-kit-prior .widget-readout").first.inner_text().strip()
    page.wait_for_function(
        """([label, img, value, panel]) => {
            const nb = document.querySelector(panel);
            const l = nb.querySelector('.lt-kit-readout');
            const imgs = [...nb.querySelectorAll('.jp-OutputArea-output img')];
            return l && l.textContent !== label && /[ ,|]/.test(l.textContent.split('| test prior ' + value)[1]?.[0])
                && imgs.length && imgs[imgs.length - 1].src !== img;
        }""", arg=[before_label, before_img, value, CURRENT], timeout=timeout_ms)
    return time.monotonic() - t0


def click_method(page, label: str, *, timeout_ms: int = 60_000) -> float:
    """Click the button ``label`` (e.g. "logit adj.") of the explorer's method selector; waits until it is the
    selected one, the slider's name has followed and the readout shows it (``tau 1.00:``) with a new figure.
    Returns the seconds from the click to then."""
    before_label, before_img = slider_state(page)
    button = page.locator(f"{CURRENT} .lt-kit-method button", has_text=label).first
    button.wait_for(timeout=timeout_ms)
    t0 = time.monotonic()
    button.click(timeout=timeout_ms)
    page.wait_for_function(
        """([label, img, text, panel]) => {
            const nb = document.querySelector(panel);
            const on = [...nb.querySelectorAll('.lt-kit-method button.mod-active')];
            const name = nb.querySelector('.lt-kit-alpha .widget-label')?.textContent.trim();
            const value = nb.querySelector('.lt-kit-alpha .widget-readout')?.textContent.trim();
            const l = nb.querySelector('.lt-kit-readout');
            const imgs = [...nb.querySelectorAll('.jp-OutputArea-output img')];
            return on.length === 1 && on[0].textContent.trim() === text && name && value && l
                && l.textContent !== label && l.textContent.startsWith(name + ' ' + value + ':')
                && imgs.length && imgs[imgs.length - 1].src !== img;
        }""", arg=[before_label, before_img, label, CURRENT], timeout=timeout_ms)
    return time.monotonic() - t0


def save_screenshot(page, path: Path, *, max_bytes: int = 300_000) -> Path:
    """The viewport as PNG, reduced to a 256-colour palette when that is needed to stay under ``max_bytes``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    if path.stat().st_size > max_bytes:
        from PIL import Image
        Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def scroll_to(page, selector: str) -> None:
    """Bring the first match to the top of the notebook's scroll area."""
    page.locator(f"{CURRENT} {selector}").first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="folder for train.png, tde_explorer.png, "
                    "momentum_direction.png, compare.png")
    ap.add_argument("--run", help="use this finished run instead of running train.ipynb (no train.png then)")
    ap.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR", help="finished runs (globs) that "
                    "compare.ipynb compares (copied into runs/ beside runs/train)")
    ap.add_argument("--only", action="append", help="only this notebook (repeatable), e.g. --only compare")
    args = ap.parse_args(argv)
    if not chromium_path():
        print("chromium not found: run scripts/ensure-chromium.sh", file=sys.stderr)
        return 1
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="lt_kit_shots_") as tmp:
        root = Path(tmp)
        for name in ("train", "tde_explorer", "momentum_direction", "compare"):
            shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", root)
        for run in sorted({Path(d) for pattern in args.compare for d in glob.glob(pattern)}):
            shutil.copytree(run, root / "runs" / run.name, ignore=shutil.ignore_patterns("*.pt"))
        if args.run:                  # the notebooks' default run_dir, runs/train, relative to the kernel's folder
            shutil.copytree(args.run, root / "runs" / "train", ignore=shutil.ignore_patterns("checkpoint.pt"))
        # (notebook, viewport height, the cell at the top of the picture: counted from the notebook's end)
        plan = [("train", 1250, 6), ("tde_explorer", 1250, 4), ("momentum_direction", 1700, 8), ("compare", 1250, 3)]
        plan = [step for step in (plan[1:] if args.run else plan) if not args.only or step[0] in args.only]
        with jupyter_lab(root) as (base, token), browser_page(1400, 1250) as page:
            for name, height, from_end in plan:
                t = time.monotonic()
                page.set_viewport_size({"width": 1400, "height": height})
                open_notebook(page, base, token, f"{name}.ipynb")
                side = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
                if side.count():
                    side.first.click()                  # collapse the file browser: more room for outputs
                run_all_cells(page, timeout_ms=900_000)
                errors = error_outputs(page)
                print(f"{name}.ipynb ran in the browser in {time.monotonic() - t:.0f} s; errors: {errors}")
                if errors:
                    return 1
                if name == "tde_explorer":
                    seconds = move_slider(page, presses=25)
                    print(f"slider: 25 key presses -> new figure in {seconds:.2f} s; {slider_state(page)[0]}")
                scroll_to(page, f".jp-Notebook .jp-Cell:nth-last-child({from_end})")
                save_screenshot(page, out / f"{name}.png")
    for f in sorted(out.glob("*.png")):
        print(f"{f} {f.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
