"""Run several ``bench/accuracy.py`` jobs at once on one GPU, in priority order, and merge their tables.

A ResNet-32 step on CIFAR is too small to keep a large GPU busy from one process (the GPU runs the kernels
faster than Python launches them), so independent runs in separate processes share the GPU and finish sooner
together than one after another. Each job trains exactly as ``bench/accuracy.py`` alone would (same
code, seed and schedule); only its wall time is shared.

With ``--deadline`` the driver watches every job's epochs, and while the steps left cannot be done before the
deadline (the device's total step rate shared among the running jobs, each capped at ``--job-rate-cap``) it
stops the lowest-priority job still running (the first ``--jobs`` entry is
the highest priority), so a lease of fixed length ends with the important runs complete rather than all runs
half done. Stopped jobs are listed in the results, never dropped silently.

    python bench/accuracy_parallel.py --data-root /tmp/cifar --epochs 200 --deadline 500 \\
        --jobs 100:causal_norm:0 100:causal_norm:1 50:causal_norm:0 10:causal_norm:0 100:linear:0 \\
        --set channels_last=true --out bench/results/accuracy_gpu
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from accuracy import machine, markdown, run_name, schedule  # noqa: E402
from lt_kit.compare import mean_std  # noqa: E402  (one implementation of mean and spread)


def parse_job(text: str) -> dict:
    try:
        ratio, head, seed = text.split(":")
        return {"ratio": float(ratio), "head": head, "seed": int(seed), "tag": f"r{float(ratio):g}_{head}_s{seed}"}
    except ValueError:
        raise SystemExit(f"--jobs entries are RATIO:HEAD:SEED (e.g. 100:causal_norm:0), got {text!r}") from None


def epochs_done(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "history.json").read_text()))
    except (OSError, ValueError):
        return 0


def steps_per_epoch(run_dir: Path) -> int | None:
    """From the run's log ("... N steps/epoch"), written once the data is loaded."""
    try:
        m = re.search(r"(\d+) steps/epoch", (run_dir / "log.txt").read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def epoch_rate(samples: list[tuple[float, int]], now: float, window: float = 60) -> float | None:
    """Epochs per second from (time, epochs done) samples: over the last ``window`` seconds, ignoring the first
    two epochs (start-up, cuDNN autotuning); None until there are two usable samples."""
    usable = [s for s in samples if s[1] >= 2]
    recent = [s for s in usable if s[0] >= now - window]
    pts = recent if len(recent) >= 2 and recent[-1][1] > recent[0][1] else usable
    if len(pts) < 2 or pts[-1][1] == pts[0][1]:
        return None
    return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def finish_time(work: list[float], capacity: float, cap: float | None = None) -> float:
    """Seconds until the last of ``work`` (steps left per job) is done if the device shares ``capacity`` steps/s
    equally among the jobs still running, each job getting at most ``cap`` steps/s (one process's own limit)."""
    left, t = sorted(w for w in work if w > 0), 0.0
    while left:
        rate = min(capacity / len(left), cap or float("inf"))
        step = left[0] / rate
        t += step
        left = [w - step * rate for w in left[1:]]
    return t


def stops_needed(work: list[float], capacity: float, time_left: float, cap: float | None = None) -> int:
    """How many of the lowest-priority jobs (the end of ``work``) to stop so the rest finish in ``time_left``.
    Never stops the first job: if even it cannot finish, the deadline decides."""
    for keep in range(len(work), 0, -1):
        if finish_time(work[:keep], capacity, cap) <= time_left:
            return len(work) - keep
    return len(work) - 1


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def run_jobs(jobs: list[dict], args, base_cmd: list[str], runs: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    (runs / "logs").mkdir(parents=True, exist_ok=True)
    start = time.time()
    for j in jobs:
        j["log"] = runs / "logs" / f"{j['tag']}.log"
        j["result"] = runs / "results" / j["tag"]
        j["run_dir"] = runs / run_name("cifar10_lt", j["ratio"], j["head"], j["seed"], args.epochs)
        cmd = base_cmd + ["--ratios", f"{j['ratio']:g}", "--seeds", str(j["seed"]), "--heads", j["head"],
                          "--out", str(j["result"])]
        j["proc"] = subprocess.Popen(cmd, stdout=open(j["log"], "w"), stderr=subprocess.STDOUT, env=env)
        j.update(samples=[], status="running", started=time.time())
    last_kill = start
    while any(j["status"] == "running" for j in jobs):
        time.sleep(args.poll)
        now = time.time()
        for j in jobs:
            if j["status"] != "running":
                continue
            rc = j["proc"].poll()
            done = epochs_done(j["run_dir"])
            if not j["samples"] or j["samples"][-1][1] != done:
                j["samples"].append((now, done))
            if rc is not None:
                j.update(status="finished" if rc == 0 else f"failed (exit {rc})", seconds=now - j["started"], epochs=done)
                print(f"[{now - start:5.0f}s] {j['tag']}: {j['status']} after {done} epochs", flush=True)
                if rc != 0:
                    print(tail(j["log"]), flush=True)
                    if j is jobs[0] and now - start < 300:
                        print("the highest-priority job failed early: stopping all (fix, then rerun)", flush=True)
                        for k in jobs:
                            if k["status"] == "running":
                                k["proc"].kill()
                                k["status"] = "stopped: an earlier job failed"
                        return
        live = [j for j in jobs if j["status"] == "running"]
        if args.deadline and now - start > args.deadline:
            for j in live:
                j["proc"].terminate()
                j.update(status=f"stopped at the deadline ({args.deadline:.0f} s)", epochs=epochs_done(j["run_dir"]))
            break
        if args.deadline and len(live) > 1 and now - last_kill > args.settle:
            rates = [epoch_rate(j["samples"], now) for j in live]
            spe = [steps_per_epoch(j["run_dir"]) for j in live]
            if all(rates) and all(spe):                 # every job has a rate: decide on all of them at once
                work = [(args.epochs - epochs_done(j["run_dir"])) * n for j, n in zip(live, spe)]
                capacity = sum(r * n for r, n in zip(rates, spe))
                time_left = args.deadline - (now - start) - 15          # 15 s: final test pass and writing
                need = stops_needed(work, capacity, time_left, args.job_rate_cap)
                if need:
                    victim = live[-1]                   # one at a time: the rates change once it stops
                    victim["proc"].terminate()
                    victim.update(status=f"stopped at {now - start:.0f} s: would not finish before the deadline",
                                  epochs=epochs_done(victim["run_dir"]))
                    print(f"[{now - start:5.0f}s] stopped {victim['tag']} ({victim['epochs']} epochs): "
                          f"{capacity:.0f} steps/s shared, {sum(work):.0f} steps left, "
                          f"{finish_time(work, capacity, args.job_rate_cap):.0f} s needed, {time_left:.0f} s left",
                          flush=True)
                    last_kill = now
                    live = live[:-1]
        if int(now - start) // 30 != int(now - start - args.poll) // 30:
            print(f"[{now - start:5.0f}s] " + ", ".join(f"{j['tag']} {epochs_done(j['run_dir'])}" for j in live), flush=True)


def merge(jobs: list[dict], args, kept: np.ndarray | None) -> tuple[dict, str]:
    rows, notes = [], []
    for j in jobs:
        if j["status"] != "finished":
            notes.append(f"{j['tag']}: {j['status']} after {j.get('epochs', 0)} of {args.epochs} epochs (not in the table)")
            continue
        rows += json.loads(Path(str(j["result"]) + ".json").read_text())["rows"]
        if kept is not None:       # the run must have read only images the pack carried
            idx = np.load(j["run_dir"] / "subset_indices.npy")
            if not np.isin(idx, kept).all():
                raise SystemExit(f"{j['tag']} read training images outside the pack: its numbers are invalid")
    meta = {"machine": machine(), "epochs": args.epochs, "schedule": schedule(args.epochs),
            "seeds": sorted({j["seed"] for j in jobs}), "command": "python " + " ".join(sys.argv),
            "version": __import__("lt_kit").__version__, "jobs_at_once": len(jobs), "notes": notes,
            "subset_checked": kept is not None}
    means = {}
    for r in rows:     # one group per result kind; a val-chosen strength may differ between seeds
        kind = r["name"].split(" (")[0] + (f" ({r['how']})" if r.get("how") else "")
        means.setdefault((r["dataset"], r["ratio"], kind), []).append(r)
    lines = [f"# CIFAR-LT accuracy, ResNet-32, {args.epochs} epochs ({meta['machine']})", "",
             f"Command: `{meta['command']}`  ",
             f"{len(jobs)} jobs started at once on one device (wall times are shared, not solo). "
             f"lt_kit {meta['version']}.", "",
             "## Mean over seeds", "",
             "| dataset | ratio | method | seeds | many | medium | overall | paper overall | difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for (ds, ratio, method), rs in sorted(means.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        m = {k: mean_std([r["metrics"][k] for r in rs])[1] for k in ("many", "medium", "overall")}
        paper = rs[0]["paper"]
        diff = f"{100 * m['overall'] - paper:+.1f}" if paper else "–"
        lines.append(f"| {ds} | {ratio:g} | {method} | {', '.join(str(r['seed']) for r in rs)} | {100 * m['many']:.1f} | "
                     f"{100 * m['medium']:.1f} | {100 * m['overall']:.2f} | {paper or '–'} | {diff} |")
        summary.append({"dataset": ds, "ratio": ratio, "method": method, "seeds": [r["seed"] for r in rs],
                        "mean": m, "paper": paper})
    lines += ["", "## Every run", ""] + markdown(rows, meta).splitlines()[4:]
    if notes:
        lines += ["", "## Not finished", ""] + [f"- {n}" for n in notes]
    if kept is not None:
        lines += ["", "Every run's saved subset indices were checked to lie inside the packed images."]
    return {"meta": meta, "summary": summary, "rows": rows,
            "jobs": [{k: j.get(k) for k in ("tag", "status", "seconds", "epochs")} for j in jobs]}, "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--jobs", nargs="+", required=True, help="RATIO:HEAD:SEED, highest priority first")
    ap.add_argument("--deadline", type=float, default=0, help="seconds from start; 0 = none")
    ap.add_argument("--settle", type=float, default=30, help="seconds between two stops, to let the rates settle")
    ap.add_argument("--poll", type=float, default=5)
    ap.add_argument("--job-rate-cap", type=float, help="steps/s one process reaches alone (measured: ~57 for "
                    "ResNet-32 on an H100); without it the driver assumes one job alone can use the whole device")
    ap.add_argument("--set", action="append", default=[], help="key=value for every run")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--kept", help="kept_train_indices.npy from bench/gpu_unpack.py: check each run's subset")
    ap.add_argument("--runs", default="bench/out/parallel")
    ap.add_argument("--out", default="bench/results/accuracy_parallel", help="prefix of the .json/.md results")
    args = ap.parse_args()
    jobs = [parse_job(t) for t in args.jobs]
    if len({j["tag"] for j in jobs}) != len(jobs):
        raise SystemExit("--jobs has the same RATIO:HEAD:SEED twice")
    runs = Path(args.runs)
    base = [sys.executable, str(HERE / "accuracy.py"), "--data-root", args.data_root, "--epochs", str(args.epochs),
            "--device", args.device, "--runs", str(runs)] + [a for s in args.set for a in ("--set", s)]
    t = time.time()
    run_jobs(jobs, args, base, runs)
    kept = np.load(args.kept) if args.kept else None
    result, md = merge(jobs, args, kept)
    result["meta"]["wall_seconds"] = round(time.time() - t, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    Path(args.out + ".md").write_text(md + f"\nAll jobs together: {time.time() - t:.0f} s wall.\n")
    print(md, flush=True)


if __name__ == "__main__":
    main()
