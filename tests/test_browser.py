"""The alpha slider in a real browser: JupyterLab on loopback, tde_explorer.ipynb opened in Debian's Chromium
through Playwright, all cells run, the slider moved with the keyboard.

Skips when Chromium or Playwright is missing (``scripts/ensure-chromium.sh`` installs Chromium), except
under ``CI=true``, where that is a failure. Set ``LT_KIT_SCREENSHOTS=DIR`` to keep the screenshots.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lt_kit_screenshots", ROOT / "scripts" / "screenshots.py")
shots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shots)

pytestmark = pytest.mark.browser


def _need(ok: bool, reason: str) -> None:
    if not ok:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (required under CI=true)")
        pytest.skip(reason)


@pytest.fixture
def explorer_root(smoke_run, tmp_path) -> Path:
    """A folder for JupyterLab: a copy of tde_explorer.ipynb whose run_dir is a copy of the smoke run."""
    _need(shots.chromium_path() is not None, "chromium not installed (run scripts/ensure-chromium.sh)")
    _need(importlib.util.find_spec("playwright") is not None, "playwright not installed (pip install -e '.[test]')")
    run = tmp_path / "run"
    run.mkdir()
    for f in ("params.yaml", "metrics.json", "features.pt"):
        shutil.copy(smoke_run / f, run / f)
    nb = nbformat.read(ROOT / "notebooks" / "tde_explorer.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source, n = re.subn(r'^run_dir: str = ".*?"', f"run_dir: str = {json.dumps(str(run))}", cell.source,
                             flags=re.M)
    assert n == 1
    root = tmp_path / "lab"
    root.mkdir()
    nbformat.write(nb, root / "tde_explorer.ipynb")
    return root


def test_alpha_slider_in_chromium(explorer_root, tmp_path):
    out = Path(os.environ.get("LT_KIT_SCREENSHOTS") or tmp_path / "shots")
    with shots.jupyter_lab(explorer_root) as (base, token), shots.browser_page(1400, 1000) as page:
        shots.open_notebook(page, base, token, "tde_explorer.ipynb")
        shots.run_all_cells(page, timeout_ms=120_000)
        assert shots.error_outputs(page) == []
        page.locator(".lt-kit-alpha .noUi-handle").first.wait_for(timeout=30_000)
        label0, img0 = shots.slider_state(page)
        assert label0.startswith("alpha 1.00: overall"), label0        # the smoke run's preset alpha
        assert img0.startswith(("data:image/png", "blob:"))
        shots.scroll_to(page, ".jp-Cell:has(.lt-kit-alpha)")
        shots.save_screenshot(page, out / "explorer_before.png")

        seconds = shots.move_slider(page, presses=5)                   # 5 steps of 0.01
        label1, img1 = shots.slider_state(page)
        assert label1.startswith("alpha 1.05: overall") and img1 != img0
        numbers = lambda s: re.findall(r"\d+\.\d", s.split("|", 1)[1])      # noqa: E731 - the accuracies
        assert len(numbers(label1)) >= 5
        seconds_back = shots.move_slider(page, presses=25, key="ArrowLeft")
        label2, img2 = shots.slider_state(page)
        assert label2.startswith("alpha 0.80: overall") and img2 != img1
        assert numbers(label2) != numbers(label0) or numbers(label1) != numbers(label0), \
            "moving alpha by 0.05 and 0.25 changed no accuracy"
        assert shots.error_outputs(page) == [] and "error" not in label2.lower()
        shots.save_screenshot(page, out / "explorer_after.png")
    print(f"slider: key presses -> new figure in {seconds:.2f} s and {seconds_back:.2f} s; {label2}")
    assert (out / "explorer_after.png").stat().st_size > 10_000
