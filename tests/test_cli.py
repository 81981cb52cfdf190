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


def test_a_failed_run_leaves_no_folder_it_made(capsys, tmp_path):
    """``--run-dir runs/x`` where neither exists: the failed run takes back runs/ too, and keeps a folder the
    user had (here ``kept/``, with nothing in it)."""
    (tmp_path / "kept").mkdir()
    for run_dir in (tmp_path / "runs" / "deeper" / "x", tmp_path / "kept" / "x"):
        code, _, err = run(capsys, "train", "--set", "dataset=cifar10_lt", "--set", f"data_root={tmp_path / 'none'}",
                           "--run-dir", str(run_dir))
        assert code == 2 and "is missing" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"] and not any((tmp_path / "kept").iterdir())


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


def run_into_closed_pipe(*argv) -> subprocess.CompletedProcess:
    """`python -m lt_kit ARGV | head -0`, without the race: the pipe's read end is closed before the command
    starts, so its first write to stdout meets a reader that has gone (as `head` does after its lines)."""
    import os
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "lt_kit", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=600, cwd=ROOT)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("cmd", ["params", "compare", "test"])
def test_output_into_a_closed_pipe_ends_quietly(cmd, smoke_copy):
    """`python -m lt_kit params | head` and the like: no traceback, and the status a shell gives a command that
    SIGPIPE stopped (128 + 13)."""
    argv = {"params": ["params", "--dataset", "cifar10_lt"], "compare": ["compare", str(smoke_copy)],
            "test": ["test", "--run-dir", str(smoke_copy), "--alpha", "0.5"]}[cmd]
    r = run_into_closed_pipe(*argv)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert r.returncode == 141, (r.returncode, r.stderr)


def test_demo_prints_mean_sd_over_seeds_and_paired_gains(capsys, tmp_path, one_thread):
    """``make demo``: one line per seed, then the seed group's table (n = seeds) and TDE's gain per seed, which is
    each run's own TDE minus its own De-confound (paired by seed, not a difference of means)."""
    import json
    import re
    code, out, _ = run(capsys, "demo", "--seeds", "2", "--run-dir", str(tmp_path / "demo"), "--set", "epochs=2",
                       "--set", "warmup_epochs=1", "--set", "milestones=[1]")
    assert code == 0, out
    assert re.search(r"^seed 0: De-confound .*\(\d+ s\)$", out, re.M) and re.search(r"^seed 1: ", out, re.M)
    assert re.search(r"softmax\s+2\s+0,1\s", out) and re.search(r"tde a=1\s+2\s+0,1\s", out)
    gains = []
    for s in (0, 1):
        m = json.loads((tmp_path / "demo" / f"seed{s}" / "metrics.json").read_text())
        gains.append(f"{100 * m['tde']['overall'] - 100 * m['softmax']['overall']:+.1f}")
    assert f"TDE − De-confound, overall, per seed: {gains[0]}, {gains[1]};" in out
    assert "not told apart" not in out
