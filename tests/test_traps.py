"""The traps a new user fell into, each a one-line answer; and no machine paths in results."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

from lt_kit.cli import main

# a path of the machine a result was made on; results name data as $CIFAR / DIR
MACHINE_PATH = re.compile(r"(?<![\w.$])/(?:work|root|home|tmp|Users|mnt|scratch)/")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_no_machine_paths_in_committed_results_and_docs():
    files = [p for p in (ROOT / "bench" / "results").rglob("*") if p.is_file()]
    files += [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "params").glob("*.yaml")]
    bad = [f"{p.relative_to(ROOT)}:{n}: {m.group(0)}" for p in files if p.suffix in (".md", ".json", ".log", ".yaml", ".txt")
           for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) for m in [MACHINE_PATH.search(line)] if m]
    assert not bad, "machine paths (use $CIFAR or DIR):\n" + "\n".join(bad[:20])
    assert MACHINE_PATH.search("--data-root /scratch/DIR") and not MACHINE_PATH.search("--data-root $CIFAR/x")


def test_params_shows_what_a_dataset_resolves_to(capsys):
    code, out, _ = run(capsys, "params")
    assert code == 0 and "dataset=digits_lt" in out
    assert re.search(r"^epochs\s+int\s+30\s+recipe", out, re.M) and re.search(r"^batch_size\s+int\s+32\s+recipe", out, re.M)
    code, out, _ = run(capsys, "params", "--dataset", "imagenet_lt")
    assert re.search(r"^epochs\s+int\s+90\s+recipe", out, re.M) and re.search(r"^arch\s+str\s+'resnext50_32x4d'", out, re.M)
    code, _, err = run(capsys, "params", "--dataset", "mnist")
    assert code == 2 and "unknown dataset 'mnist'" in err


def test_preset_names_and_the_source_of_a_bad_value(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                         # preset names work from any folder
    code, _, err = run(capsys, "train", "--params", "smoke", "--set", "arch=resnet18", "--run-dir", "r")
    assert code == 2 and err.strip() == ("error: unknown arch 'resnet18' (--set); valid: resnet152, resnet32, resnet50, "
                                         "resnext50_32x4d")
    (tmp_path / "bad.yaml").write_text("arch: resnet18\n")
    code, _, err = run(capsys, "train", "--params", "bad.yaml", "--set", "lr=0.1", "--run-dir", "r")
    assert code == 2 and "unknown arch 'resnet18' in bad.yaml" in err
    code, _, err = run(capsys, "train", "--params", "smok", "--run-dir", "r")
    assert code == 2 and "params file smok not found; give a path or a preset name (" in err and "smoke" in err
    assert not (tmp_path / "r").exists()


def test_run_dir_that_is_here_or_holds_other_files(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "train", "--params", "smoke", "--run-dir", ".", "--overwrite")
    assert code == 2 and "is the current folder" in err and "subfolder" in err
    code, _, err = run(capsys, "train", "--params", "smoke", "--run-dir", ".")
    assert code == 2 and "is not an lt_kit run but holds other files (notes.txt)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_batch_larger_than_a_small_folder_says_what_to_set(capsys, tmp_path):
    from PIL import Image
    for split, n in (("train", 3), ("test", 1)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    code, _, err = run(capsys, "train", "--set", "dataset=folder", "--set", f"data_root={tmp_path / 'train'}",
                       "--set", f"test_root={tmp_path / 'test'}", "--set", "device=cpu", "--run-dir", str(tmp_path / "r"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "batch_size 256 is larger than the training split (6 images)" in err and "--set batch_size=1" in err


def test_jupytext_sync_of_unchanged_notebooks_changes_nothing(tmp_path):
    pytest.importorskip("jupytext")
    shutil.copy(ROOT / "jupytext.toml", tmp_path)
    names = [p.stem for p in (ROOT / "notebooks").glob("*.ipynb") if (ROOT / "notebooks" / f"{p.stem}.py").is_file()]
    for name in names:
        for ext in (".ipynb", ".py"):
            shutil.copy(ROOT / "notebooks" / f"{name}{ext}", tmp_path)
    out = subprocess.run([sys.executable, "-m", "jupytext", "--sync", *(str(tmp_path / f"{n}.ipynb") for n in names)],
                         capture_output=True, text=True, timeout=600)            # one process: jupytext loads slowly
    assert out.returncode == 0, out.stderr
    for name in names:
        for ext in (".ipynb", ".py"):
            assert (tmp_path / f"{name}{ext}").read_bytes() == (ROOT / "notebooks" / f"{name}{ext}").read_bytes(), \
                f"`jupytext --sync` rewrote notebooks/{name}{ext}"


def test_nothing_committed_points_outside_the_repository():
    """The product stands on its own: no pointer to files a user who clones it does not have."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    outside = re.compile(r"\.\./shared|reference-spec\.md|peer-methods\.md")
    bad = []
    for f in files:
        path = ROOT / f
        if path.suffix in (".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".ipynb", ".txt", "") and path.is_file():
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            bad += [f"{f}: {m.group(0)}" for m in outside.finditer(text) if f != "tests/test_traps.py"]
    assert not bad, "pointers outside the repository:\n" + "\n".join(bad[:20])
