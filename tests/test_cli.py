"""Each bad input: a clear one-line error, exit status 2, and nothing already written is lost."""
import subprocess
import sys

import pytest
from conftest import ROOT

from lt_kit.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("sets,match", [
    (["dataset=tinyimagenet"], "'dataset' .*must be one of digits_lt, cifar10_lt"),
    (["arch=vgg16"], "unknown arch 'vgg16'.*valid: resnet152, resnet32, resnet50, resnext50_32x4d"),
    (["learning_rate=0.1"], "unknown parameter 'learning_rate'.*valid keys: dataset"),
    (["imbalance_ratio=0.5"], "imbalance_ratio must be >= 1"),
    (["alpha=nan"], "alpha must be a finite number"),
    (["alpha=inf"], "alpha must be a finite number"),
    (["epochs=two"], "'epochs' .*must be int"),
])
def test_bad_parameters(capsys, tmp_path, sets, match):
    args = ["train", "--params", str(ROOT / "params" / "smoke.yaml"), "--run-dir", str(tmp_path / "r")]
    for s in sets:
        args += ["--set", s]
    code, _, err = run(capsys, *args)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(match, err), err
    assert not (tmp_path / "r").exists()                      # nothing written for a refused run


def test_missing_data_folder_says_how_to_get_it(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--set", "dataset=cifar10_lt", "--set", f"data_root={tmp_path}",
                       "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "cifar-10-batches-py is missing" in err and "download=true" in err
    assert not (tmp_path / "r").exists()


def test_missing_params_file(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--params", str(tmp_path / "nope.yaml"), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "not found" in err


def test_train_then_test_at_other_alphas(capsys, smoke_copy):
    smoke_run = smoke_copy
    code, out, _ = run(capsys, "test", "--run-dir", str(smoke_run), "--alpha", "0.5")
    assert code == 0 and "De-confound-TDE (a=0.5)" in out and "many" in out
    code, _, err = run(capsys, "test", "--run-dir", str(smoke_run), "--alpha", "nan")
    assert code == 2 and "finite" in err


def test_earlier_run_refused_and_untouched(capsys, smoke_run):
    before = {p.name: p.stat().st_mtime_ns for p in smoke_run.iterdir()}
    code, _, err = run(capsys, "train", "--params", str(ROOT / "params" / "smoke.yaml"), "--run-dir", str(smoke_run))
    assert code == 2 and "holds an earlier run" in err
    assert {p.name: p.stat().st_mtime_ns for p in smoke_run.iterdir()} == before


def test_test_on_a_folder_that_is_not_a_run(capsys, tmp_path):
    code, _, err = run(capsys, "test", "--run-dir", str(tmp_path))
    assert code == 2 and "not an lt_kit run dir" in err


def test_module_entry_point_end_to_end(tmp_path):
    """`python -m lt_kit train` as a user runs it: prints the results table, exits 0."""
    r = subprocess.run([sys.executable, "-m", "lt_kit", "train", "--params", str(ROOT / "params" / "smoke.yaml"),
                        "--set", "epochs=1", "--run-dir", str(tmp_path / "r"), "--quiet"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "De-confound (alpha=0)" in r.stdout and "De-confound-TDE (a=1)" in r.stdout
    assert (tmp_path / "r" / "metrics.json").is_file()
