"""Fault injection: each fault a user or a machine can throw at a run, through the public entry points
(``python -m lt_kit`` / ``cli.main``, ``fit``, the notebooks' functions) on the embedded digits, with the
outcome asserted. "Nothing lost": the files of the last complete epoch survive and ``--resume`` (or
``resume=True``) ends with exactly the weights of an uninterrupted run where that is checked.

| #  | fault                                                  | expected outcome                                                                  |
|----|--------------------------------------------------------|-----------------------------------------------------------------------------------|
| 1  | process killed (SIGKILL) in the middle of epoch 2      | checkpoint.pt holds epoch 1; its stale lock does not block `--resume`; resume ends bitwise equal to an uninterrupted run |
| 2  | process killed (SIGKILL) while writing checkpoint.pt   | the half-written file never replaces checkpoint.pt (epoch 1 kept); resume ends bitwise equal |
| 3  | disk full (ENOSPC) writing checkpoint.pt               | `error: cannot write .../checkpoint.pt (No space left on device); the previous checkpoint.pt is kept`, exit 2; resume ends bitwise equal |
| 4  | disk full writing the feature cache (features.pt)      | one-line error saying the previous features.pt is kept; it is byte-for-byte unchanged |
| 5  | disk full writing metrics.json                         | one-line error saying the previous metrics.json is kept; it is unchanged            |
| 6  | NaN loss                                               | `error: loss became nan at epoch 2, step k/n; ...`, exit 2; checkpoint.pt of epoch 1 kept, finite |
| 7  | NaN loss on one of two processes (gloo)                | both processes stop with the same message; no hang in the next collective          |
| 8  | unreadable image in a `folder` data set (in a worker)  | the one line `error: cannot read image ...; replace or remove it`, exit 2; after replacing it, `--resume` finishes from epoch 1 |
| 9  | truncated checkpoint.pt                                | `--resume` and `test --checkpoint`: one line `... is not a readable lt_kit checkpoint`, exit 2 |
| 10 | foreign checkpoint (a reference `.pth`-style dict)     | one line `... is not an lt_kit checkpoint`, exit 2                                 |
| 11 | truncated features.pt                                  | the analysis notebooks' `load_run`: `... is not a readable feature cache ...; delete it and run ...` |
| 12 | params.yaml edited in a run dir (a value; broken YAML) | `--resume` refused, naming the edited key (`lr=0.05->0.1`) or the YAML error; nothing written |
| 13 | a second writer on the same run dir                    | refused with the first writer's pid and host; nothing written; once that writer is killed, its stale lock is taken over |
| 14 | Ctrl-C in train.ipynb (KeyboardInterrupt), then `resume=True` | lock released; resume ends bitwise equal to an uninterrupted run               |
| 15 | Ctrl-C during the first epoch (no checkpoint yet)      | the CLI says to run the same command again; a plain rerun or `--resume` starts over cleanly |
| 16 | features.pt deleted from a `select_best` run           | `test` rebuilds it from evaluated.pt (the best epoch's weights, the direction fit used): the numbers fit reported; metrics.json untouched |

16 faults tried, 16 answered with a clear message and nothing lost (README, *Reliability*).
"""
from __future__ import annotations

import builtins
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT
from PIL import Image

import lt_kit.runs.rundir as runs
from lt_kit.cli import main
from lt_kit.config import load_params_file, resolve
from lt_kit.errors import LtKitError
from lt_kit.runs.lock import LOCK_NAME, RunLock
from lt_kit.runs.rundir import load_checkpoint
from lt_kit.training.fit import fit

SMOKE = str(ROOT / "params" / "smoke.yaml")


def cli(capsys, *argv) -> tuple[int, str]:
    """``python -m lt_kit ARGV`` in this process: exit status and stderr."""
    code = main([*argv])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def same_weights(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert ca["epoch"] == cb["epoch"]
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k                   # the momentum direction included
    assert [h["loss"] for h in ca["history"]] == [h["loss"] for h in cb["history"]]


def disk_full(monkeypatch, name: str, after: int = 0) -> None:
    """Writes of ``name`` through ``runs.atomic_write_bytes`` fail with ENOSPC (after ``after`` good ones)."""
    seen = {"n": 0}

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def opener(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        if "w" in mode and Path(path).name.startswith(f".{name}.tmp"):
            seen["n"] += 1
            if seen["n"] > after:
                return Full(f)
        return f
    monkeypatch.setattr(runs, "open", opener, raising=False)


# ----------------------------------------------------------------------------------------- 1, 2: SIGKILL
_KILLED = textwrap.dedent("""
    import io, os, signal, sys, torch
    torch.set_num_threads(int(sys.argv[3]))
    import lt_kit.training.fit as train
    from lt_kit.config import load_params_file, resolve
    mode, run_dir, smoke = sys.argv[1], sys.argv[2], sys.argv[4]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if mode == "mid-epoch":                       # SIGKILL after 2 steps of epoch 2
        real = train.train_one_epoch
        class Dying:
            def __init__(self, loader): self.loader = loader
            def __len__(self): return len(self.loader)
            def __iter__(self):
                for i, b in enumerate(self.loader):
                    if i == 2: die()
                    yield b
        def epoch(model, loader, *a, **k):
            return real(model, Dying(loader) if k["epoch"] == 2 else loader, *a, **k)
        train.train_one_epoch = epoch
    else:                                         # SIGKILL half-way through writing epoch 2's checkpoint.pt
        real_save, n = torch.save, [0]
        def save(obj, f, *a, **k):
            if getattr(f, "name", "").count("checkpoint.pt") and obj.get("epoch") == 2:
                buf = io.BytesIO(); real_save(obj, buf, *a, **k)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush(); os.fsync(f.fileno())
                die()
            return real_save(obj, f, *a, **k)
        torch.save = save
    train.fit(resolve(load_params_file(smoke)), run_dir, progress=False)
""")


@pytest.mark.parametrize("mode", ["mid-epoch", "checkpoint-write"])
def test_killed_then_resume_gives_the_uninterrupted_weights(mode, smoke_run, tmp_path, capsys):
    """Faults 1 and 2 (and the stale lock a killed writer leaves)."""
    run, script = tmp_path / "run", tmp_path / "killed.py"
    script.write_text(_KILLED)
    out = subprocess.run([sys.executable, str(script), mode, str(run), str(torch.get_num_threads()), SMOKE],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1          # the last complete epoch, intact
    assert json.loads((run / LOCK_NAME).read_text())["pid"] > 0         # the killed writer's lock is left
    code, err = cli(capsys, "train", "--params", SMOKE, "--run-dir", str(run), "--resume", "--quiet")
    assert code == 0, err
    same_weights(smoke_run, run)
    assert not (run / LOCK_NAME).exists()


# ----------------------------------------------------------------------------------------- 3, 4, 5: ENOSPC
def test_disk_full_writing_a_checkpoint_keeps_the_previous_one(smoke_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    disk_full(monkeypatch, "checkpoint.pt", after=1)                      # epoch 1 written, epoch 2 fails
    code, err = cli(capsys, "train", "--params", SMOKE, "--run-dir", str(run), "--quiet")
    line = one_line(err)
    assert code == 2 and "checkpoint.pt (No space left on device); the previous checkpoint.pt is kept" in line
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert not [p for p in run.iterdir() if ".tmp" in p.name] and not (run / LOCK_NAME).exists()
    monkeypatch.undo()                                                    # space freed
    code, err = cli(capsys, "train", "--params", SMOKE, "--run-dir", str(run), "--resume", "--quiet")
    assert code == 0, err
    same_weights(smoke_run, run)


@pytest.mark.parametrize("name", ["features.pt", "metrics.json"])
def test_disk_full_writing_results_keeps_the_previous_file(name, smoke_copy, capsys, monkeypatch):
    before = (smoke_copy / name).read_bytes()
    disk_full(monkeypatch, name)
    # resuming a finished run re-evaluates it and rewrites the feature cache and metrics.json
    code, err = cli(capsys, "train", "--params", SMOKE, "--run-dir", str(smoke_copy), "--resume", "--quiet")
    line = one_line(err)
    assert code == 2 and f"{name} (No space left on device); the previous {name} is kept" in line
    assert (smoke_copy / name).read_bytes() == before
    assert not [p for p in smoke_copy.iterdir() if ".tmp" in p.name]


# ----------------------------------------------------------------------------------------- 6, 7: NaN
def test_nan_loss_one_line_and_last_epoch_kept(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = cli(capsys, "train", "--params", SMOKE, "--set", "lr_factor=1e30", "--run-dir", str(run), "--quiet")
    line = one_line(err)
    assert code == 2 and "loss became nan at epoch 2, step" in line
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


_NAN_RANK = textwrap.dedent("""
    import torch
    import lt_kit.training.distributed as D
    from lt_kit.errors import NonFiniteLossError
    from lt_kit.training.loop import train_one_epoch
    torch.set_num_threads(1)
    info = D.setup(torch.device("cpu"))
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.register_buffer("direction", torch.zeros(4))
        def forward(self, x):
            return self.fc(x), x
    torch.manual_seed(0)
    batches = [(torch.randn(4, 4), torch.randint(0, 3, (4,))) for _ in range(3)]
    if info.rank == 1:
        batches[1][0][0, 0] = float("nan")        # only rank 1 sees a NaN (step 2)
    model = Tiny()
    try:
        train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), mu=0.9, epoch=5, dist=info)
        print("no error")
    except NonFiniteLossError as e:
        print("stopped:", e)
    D.teardown(info)
""")


def test_nan_on_one_rank_stops_every_rank(tmp_path):
    script = tmp_path / "nan_rank.py"
    script.write_text(_NAN_RANK)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RANK": str(r),
                                   "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": str(port)}) for r in (0, 1)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=120))                   # a hang (the old behaviour) times out
    finally:
        for p in procs:
            p.kill()
    lines = [o.strip().splitlines()[-1] if o.strip() else e[-500:] for o, e in outs]
    assert lines[0] == lines[1] and lines[0].startswith("stopped: loss became nan at epoch 5, step 2/3"), outs


# ----------------------------------------------------------------------------------------- 8: unreadable image
def _folder(root: Path, per_class: int) -> Path:
    rng = np.random.RandomState(0)
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(rng.randint(0, 60, (8, 8, 3)) + 80 * c, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"c{c}" / f"{i}.png")
    return root


def test_unreadable_image_one_line_and_resumable(tmp_path, capsys, monkeypatch):
    train_root, test_root, run = _folder(tmp_path / "train", 6), _folder(tmp_path / "test", 2), tmp_path / "run"
    victim = train_root / "c1" / "3.png"
    good = victim.read_bytes()
    real = runs.RunDir.save_checkpoint

    def save_then_break(self, state, name="checkpoint.pt"):               # the image goes bad after epoch 1
        real(self, state, name)
        victim.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    monkeypatch.setattr(runs.RunDir, "save_checkpoint", save_then_break)
    args = ["train", "--set", "dataset=folder", "--set", f"data_root={train_root}", "--set", f"test_root={test_root}",
            "--set", "image_size=8", "--set", "batch_size=6", "--set", "epochs=2", "--set", "num_workers=1",
            "--set", "lr=0.05", "--set", "device=cpu", "--run-dir", str(run), "--quiet"]
    code, err = cli(capsys, *args)
    line = one_line(err)
    assert code == 2 and line.startswith(f"error: cannot read image {victim}") and line.endswith("replace or remove it")
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    monkeypatch.undo()
    victim.write_bytes(good)                                              # replaced
    code, err = cli(capsys, *args, "--resume")
    assert code == 0, err
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1, 2]


# ----------------------------------------------------------------------------------------- 9, 10, 11: bad files
def test_truncated_and_foreign_checkpoints(smoke_copy, tmp_path, capsys):
    ckpt = smoke_copy / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    code, err = cli(capsys, "train", "--params", SMOKE, "--run-dir", str(smoke_copy), "--resume", "--quiet")
    assert code == 2 and "is not a readable lt_kit checkpoint" in one_line(err)
    code, err = cli(capsys, "test", "--run-dir", str(smoke_copy), "--checkpoint", str(ckpt))
    assert code == 2 and "is not a readable lt_kit checkpoint" in one_line(err)
    foreign = tmp_path / "model_best.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "epoch": 200}, foreign)
    code, err = cli(capsys, "test", "--run-dir", str(smoke_copy), "--checkpoint", str(foreign))
    assert code == 2 and "is not an lt_kit checkpoint" in one_line(err)


def test_truncated_feature_cache(smoke_copy):
    from lt_kit.views.notebook import load_run
    cache = smoke_copy / "features.pt"
    cache.write_bytes(cache.read_bytes()[:3000])
    with pytest.raises(LtKitError, match=r"features.pt is not a readable feature cache .*delete it and run"):
        load_run(smoke_copy)


# ----------------------------------------------------------------------------------------- 12: edited params.yaml
def test_edited_params_yaml_blocks_resume(smoke_copy, capsys):
    p = smoke_copy / "params.yaml"
    params = yaml.safe_load(p.read_text())
    p.write_text(yaml.safe_dump({**params, "lr": 0.1}, sort_keys=False))
    before = {q.name: q.stat().st_mtime_ns for q in smoke_copy.iterdir()}
    code, err = cli(capsys, "train", "--params", SMOKE, "--run-dir", str(smoke_copy), "--resume", "--quiet")
    assert code == 2 and "params.yaml in" in err and "was edited" in err and "lr=0.05->0.1" in one_line(err)
    p.write_text("lr: [0.1\n")
    code, err = cli(capsys, "train", "--params", SMOKE, "--run-dir", str(smoke_copy), "--resume", "--quiet")
    assert code == 2 and "params.yaml is not valid YAML" in one_line(err)
    assert {q.name: q.stat().st_mtime_ns for q in smoke_copy.iterdir() if q.name != "params.yaml"} == \
        {k: v for k, v in before.items() if k != "params.yaml"}


# ----------------------------------------------------------------------------------------- 13: a second writer
def test_second_writer_is_refused_then_a_stale_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from lt_kit.runs.lock import RunLock
        RunLock({str(run)!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = cli(capsys, "train", "--params", SMOKE, "--run-dir", str(run), "--quiet")
        line = one_line(err)
        assert code == 2 and f"being written by another lt_kit train (pid {holder.pid} on {socket.gethostname()}" in line
        assert [p.name for p in run.iterdir()] == [LOCK_NAME]             # the second writer wrote nothing
        with pytest.raises(LtKitError, match=f"pid {holder.pid}"):        # the notebook's entry point too
            fit(resolve(load_params_file(SMOKE)), run, progress=False)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run) as lock:                                            # stale: its process is gone
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (run / LOCK_NAME).exists()


# ----------------------------------------------------------------------------------------- 14, 15: Ctrl-C
def _interrupt_at(monkeypatch, epoch: int) -> None:
    import lt_kit.training.fit as T
    real = T.train_one_epoch

    def train_one_epoch(*a, **k):
        if k["epoch"] == epoch:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(T, "train_one_epoch", train_one_epoch)


def test_ctrl_c_in_the_notebook_then_resume(smoke_run, tmp_path, monkeypatch):
    from lt_kit.config import PARAMS
    from lt_kit.views.notebook import check_train_parameters
    ns = {**{k: None for k in PARAMS}, "device": "auto", **load_params_file(SMOKE),     # the notebook's globals()
          "run_dir": str(tmp_path / "run"), "overwrite": False, "resume": False}
    job = check_train_parameters(ns)
    _interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        fit(job.params, job.run_dir, resume=job.resume, overwrite=job.overwrite, progress=False)
    assert not (job.run_dir / LOCK_NAME).exists()                         # released: the next cell may write
    monkeypatch.undo()
    job = check_train_parameters({**ns, "resume": True})
    fit(job.params, job.run_dir, resume=job.resume, overwrite=job.overwrite, progress=False)
    same_weights(smoke_run, job.run_dir)


def test_ctrl_c_in_the_first_epoch_restarts(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    _interrupt_at(monkeypatch, 1)
    code, err = cli(capsys, "train", "--params", SMOKE, "--set", "epochs=1", "--run-dir", str(run), "--quiet")
    assert code == 130 and "nothing to resume; run the same command again" in err
    assert (run / "params.yaml").is_file() and not (run / "checkpoint.pt").exists()
    from lt_kit.views.notebook import check_run_dir
    with pytest.raises(LtKitError, match="stopped before its first complete epoch; train it again"):
        check_run_dir(run)                                                # the explorer's advice works
    monkeypatch.undo()
    code, err = cli(capsys, "train", "--params", SMOKE, "--set", "epochs=1", "--run-dir", str(run), "--resume", "--quiet")
    assert code == 0, err
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1 and not list(tmp_path.glob("run.replaced-*"))


def test_lost_feature_cache_of_a_select_best_run_is_rebuilt_from_what_fit_evaluated(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = cli(capsys, "train", "--params", SMOKE, "--set", "val_per_class=5", "--set", "select_best=true",
                    "--set", "epochs=4", "--set", "milestones=[3]", "--run-dir", str(run), "--quiet")
    assert code == 0, err
    before = (run / "metrics.json").read_bytes()
    fitted = json.loads(before)
    (run / "features.pt").unlink()
    code, err = cli(capsys, "test", "--run-dir", str(run), "--alpha", str(fitted["alpha"]))
    assert code == 0, err
    rebuilt = json.loads((run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert rebuilt["metrics"]["per_class"] == fitted["tde"]["per_class"]     # the best epoch, not the last
    assert (run / "metrics.json").read_bytes() == before                       # never rewritten
    assert load_checkpoint(run / "evaluated.pt")["epoch"] == fitted["best_epoch"]
