"""The alpha slider in a real browser: JupyterLab on loopback, tde_explorer.ipynb opened in Debian's Chromium
through Playwright, all cells run, the slider moved with the keyboard, the method selector switched to logit
adjustment (tau) and back to TDE, and the test-prior control moved with the keyboard (uniform -> forward2 ->
forward50 -> estimated -> backward50).

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
def explorer_root(smoke_val_run, tmp_path) -> Path:
    """A folder for JupyterLab: a copy of tde_explorer.ipynb whose run_dir is a copy of the smoke run with a
    validation split (so strengths are chosen on it, re-weighted to each test prior)."""
    smoke_run = smoke_val_run
    _need(shots.chromium_path() is not None, "chromium not installed (run scripts/ensure-chromium.sh)")
    _need(importlib.util.find_spec("playwright") is not None, "playwright not installed (pip install -e '.[test]')")
    run = tmp_path / "run"
    run.mkdir()
    for f in ("params.yaml", "metrics.json", "features.pt"):
        shutil.copy(smoke_run / f, run / f)
    shutil.copy(smoke_run / "val_features.pt", run / "val_features.pt")   # the explorer loads it when present
    nb = nbformat.read(ROOT / "notebooks" / "tde_explorer.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source, n = re.subn(r'^run_dir: str = ".*?"', f"run_dir: str = {json.dumps(str(run))}", cell.source,
                             flags=re.M)
    assert n == 1
    root = tmp_path / "lab"
    root.mkdir()
    nbformat.write(nb, root / "tde_explorer.ipynb")
    return root


def _expected_readout(run: Path, prior: str) -> str:
    """The readout's start the explorer computes in this process for TDE at alpha 1 under ``prior``."""
    from lt_kit.views.explorer import AlphaExplorer
    ex = AlphaExplorer.from_run(run, test_prior=prior)
    m, _ = ex.render(1.0)
    return ex.readout(1.0, m).split(" | median split")[0]


def test_alpha_slider_in_chromium(explorer_root, tmp_path):
    out = Path(os.environ.get("LT_KIT_SCREENSHOTS") or tmp_path / "shots")
    with shots.jupyter_lab(explorer_root) as (base, token), shots.browser_page(1400, 1000) as page:
        shots.open_notebook(page, base, token, "tde_explorer.ipynb")
        shots.run_all_cells(page, timeout_ms=300_000)
        assert shots.error_outputs(page) == []
        page.locator(".lt-kit-alpha .noUi-handle").first.wait_for(timeout=60_000)
        label0, img0 = shots.slider_state(page)
        assert label0.startswith("alpha 1.00: overall"), label0        # the smoke run's preset alpha
        assert img0.startswith(("data:image/png", "blob:"))
        shots.scroll_to(page, ".jp-Cell:has(.lt-kit-alpha)")
        shots.save_screenshot(page, out / "explorer_before.png")

        seconds = shots.move_slider(page, presses=5, timeout_ms=60_000)   # 5 steps of 0.01
        label1, img1 = shots.slider_state(page)
        assert label1.startswith("alpha 1.05: overall") and img1 != img0
        numbers = lambda s: re.findall(r"\d+\.\d", s.split("|", 1)[1])      # noqa: E731 - the accuracies
        assert len(numbers(label1)) >= 5
        seconds_back = shots.move_slider(page, presses=25, key="ArrowLeft", timeout_ms=60_000)
        label2, img2 = shots.slider_state(page)
        assert label2.startswith("alpha 0.80: overall") and img2 != img1
        assert numbers(label2) != numbers(label0) or numbers(label1) != numbers(label0), \
            "moving alpha by 0.05 and 0.25 changed no accuracy"
        assert shots.error_outputs(page) == [] and "error" not in label2.lower()
        shots.save_screenshot(page, out / "explorer_after.png")

        # the method selector: TDE and logit adjustment on a causal-norm run; a click jumps to the paper rule
        buttons = page.locator(f"{shots.CURRENT} .lt-kit-method button").all_inner_texts()
        assert [b.strip() for b in buttons] == ["TDE", "logit adj."], buttons
        seconds_la = shots.click_method(page, "logit adj.")
        label3, img3 = shots.slider_state(page)
        assert label3.startswith("tau 1.00: overall") and img3 != img2, label3     # logit adjustment's tau = 1
        assert "(tau 0: " in label3 and len(numbers(label3)) >= 5, label3
        assert page.locator(f"{shots.CURRENT} .lt-kit-alpha .widget-label").first.inner_text().strip() == "tau"
        seconds_tau = shots.move_slider(page, presses=5, timeout_ms=60_000)
        label4, img4 = shots.slider_state(page)
        assert label4.startswith("tau 1.05: overall") and img4 != img3, label4
        seconds_tde = shots.click_method(page, "TDE")
        label5, img5 = shots.slider_state(page)
        assert label5.startswith("alpha 1.00: overall") and img5 != img4, label5    # back at the preset alpha
        assert numbers(label5) == numbers(label0), (label5, label0)                 # the same numbers as at first
        assert page.locator(f"{shots.CURRENT} .lt-kit-alpha .widget-label").first.inner_text().strip() == "alpha"
        assert shots.error_outputs(page) == [] and not any("error" in t.lower() for t in (label3, label4, label5))
        shots.save_screenshot(page, out / "explorer_methods.png")

        # the test-prior control beside the slider: one key press per prior, backward50 .. uniform .. forward50
        run = explorer_root.parent / "run"
        assert page.locator(f"{shots.CURRENT} .lt-kit-prior .widget-readout").first.inner_text().strip() == "uniform"
        assert "| test prior uniform, val-chosen alpha " in label5, label5
        seconds_prior = shots.move_prior(page, presses=1)
        label6, img6 = shots.slider_state(page)
        assert label6.startswith("alpha 1.00: overall") and "| test prior forward2, " in label6 and img6 != img5
        shots.move_prior(page, presses=4)
        label7, img7 = shots.slider_state(page)
        assert label7.startswith(_expected_readout(run, "forward50")), label7     # the prior-weighted numbers
        assert numbers(label7) != numbers(label5) and img7 != img6
        shots.save_screenshot(page, out / "explorer_prior.png")
        shots.move_prior(page, presses=1)                 # the last entry: the prior estimated from a forward50 draw
        label_e, img_e = shots.slider_state(page)
        assert label_e.startswith(_expected_readout(run, "estimated")) and img_e != img7, label_e
        assert "| test prior estimated (EM from a forward50 draw, error TV " in label_e, label_e
        assert "(knowing the prior: " in label_e and not label_e.startswith("error:"), label_e
        shots.move_prior(page, presses=11, key="ArrowLeft")
        label8, img8 = shots.slider_state(page)
        assert label8.startswith(_expected_readout(run, "backward50")) and img8 != img7, label8
        assert page.locator(f"{shots.CURRENT} .lt-kit-alpha .widget-readout").first.inner_text().strip() == "1.00"
        assert shots.error_outputs(page) == [] and not any("error" in t.lower() for t in (label6, label7, label8))
    print(f"slider: key presses -> new figure in {seconds:.2f} s and {seconds_back:.2f} s; {label2}")
    print(f"test prior: key press -> new figure in {seconds_prior:.2f} s; {label7}; {label8}")
    print(f"selector: click -> new figure in {seconds_la:.2f} s (logit adj.) and {seconds_tde:.2f} s (TDE); "
          f"tau keys {seconds_tau:.2f} s; {label4}")
    assert (out / "explorer_after.png").stat().st_size > 10_000
