"""The README's command blocks run in order, as pasted, on data the test makes: the README cannot drift from the
code. Each ```bash block line runs with bash in a fresh folder laid out like the repository root (notebooks/ and
params/ linked in, `.venv/bin/` holding this interpreter's tools). `$CIFAR` and `data/` hold a small made CIFAR-10
and CIFAR-100 in torchvision's layout, so nothing is downloaded. Only the length of a run is changed: every
`lt_kit train` and train-notebook command gets 3 epochs of batch 16 on a 10:1 tail (the recipes' 200 epochs are hours).
Not run: `make` (the demo and this suite have their own tests), `conda`, `jupyter lab` (interactive; the browser
test drives it) and `torchrun` (tests/test_distributed.py)."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_cifar

SKIPPED = ("make ", "conda ", ".venv/bin/jupyter lab", "torchrun ")
SHRINK_TRAIN = "--set epochs=3 --set batch_size=16 --set warmup_epochs=1 --set milestones=[2] --set imbalance_ratio=10"
SHRINK_NOTEBOOK = "-p epochs 3 -p batch_size 16 -p warmup_epochs 1 -p imbalance_ratio 10 -y '{milestones: [2]}'"


def readme_commands(text: str) -> list[str]:
    """The command lines of the README's ```bash blocks, in order (comments and blank lines left out)."""
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _wrapper(path: Path, real: Path, when: str, extra: str) -> None:
    """``path`` runs ``real`` with ``extra`` appended when the arguments start with ``when``."""
    path.write_text(f'#!/usr/bin/env bash\ncase "$*" in "{when}"*) set -- "$@" {extra};; esac\nexec {real} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def workspace(tmp_path) -> tuple[Path, dict]:
    ws = tmp_path / "repo"
    ws.mkdir()
    for d in ("notebooks", "params"):
        (ws / d).symlink_to(ROOT / d)
    real_bin = Path(sys.executable).parent
    venv_bin = ws / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    for tool in real_bin.iterdir():
        if tool.name not in ("python", "papermill"):
            (venv_bin / tool.name).symlink_to(tool)
    _wrapper(venv_bin / "python", Path(sys.executable), "-m lt_kit train", SHRINK_TRAIN)
    _wrapper(venv_bin / "papermill", real_bin / "papermill", "notebooks/train.ipynb", SHRINK_NOTEBOOK)
    cifar = tmp_path / "cifar"
    write_cifar(cifar, per_class_train=20, per_class_test=5)
    write_cifar(ws / "data", per_class_train=20, per_class_test=5)
    write_cifar(ws / "data", num_classes=100, per_class_train=20, per_class_test=2)
    kernels = tmp_path / "jupyter" / "kernels" / "python3"      # the notebooks run in this interpreter
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                  "--IPKernelApp.log_level=ERROR"], "display_name": "lt_kit test", "language": "python"}))
    env = {**os.environ, "CIFAR": str(cifar), "JUPYTER_PATH": str(tmp_path / "jupyter"), "OMP_NUM_THREADS": "1"}
    return ws, env


def test_readme_commands_parse():
    """The parser sees the blocks a reader sees: the demo first, the train notebook, the CLI's train."""
    cmds = readme_commands((ROOT / "README.md").read_text())
    assert cmds[0].startswith("make demo")
    assert any(c.startswith(".venv/bin/papermill notebooks/train.ipynb") for c in cmds)
    assert any("-m lt_kit train" in c for c in cmds) and any("-m lt_kit compare" in c for c in cmds)


def test_readme_commands_run_in_order(workspace):
    ws, env = workspace
    ran = {}
    for cmd in readme_commands((ROOT / "README.md").read_text()):
        if cmd.startswith(SKIPPED):
            continue
        r = subprocess.run(["bash", "-c", cmd], cwd=ws, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"README command failed after {len(ran)} others:\n{cmd}\n{r.stdout[-2000:]}" \
                                  f"\n{r.stderr[-3000:]}"
        ran[cmd] = r.stdout
    assert len(ran) >= 10, list(ran)
    # the seed loops trained what the compare commands then find: one group, every seed of the loop
    cli = next(out for cmd, out in ran.items() if "-m lt_kit compare" in cmd)
    assert re.search(r"\s0,1\s", cli), cli
    nb = json.loads((ws / "runs" / "compare.ipynb").read_text())
    shown = "".join(str(o.get("text", "")) + json.dumps(o.get("data", {}).get("text/plain", ""))
                    for c in nb["cells"] for o in c.get("outputs", []))
    assert "0,1,2" in shown, shown[-3000:]
