"""A resumable campaign of long runs from a manifest (``bench/campaign_e200.yaml``): the fair 200-epoch table.

    python bench/campaign.py run --data-root $CIFAR            # resume the first unfinished row, then the next...
    python bench/campaign.py run --data-root $CIFAR --jobs 2   # two rows at once (each its own process)
    python bench/campaign.py run --data-root $CIFAR --readme   # ... and rewrite the README table after each row
    python bench/campaign.py status                            # done / partial (epoch N of 200, ETA) / pending
    python bench/campaign.py table                             # rebuild the results from the recorded rows
    python bench/campaign.py headline --readme                 # the README's table, mean ± sd over seeds
    python bench/campaign.py rescore                           # recorded rows' methods again, from their caches
    python bench/campaign.py precision                         # the bf16 twins against float32: the rule's verdict

Each row is a normal lt_kit run dir under ``--runs`` (default ``~/.cache/lt_kit/<manifest name>``, outside the
work tree so that a fresh clone on the same machine resumes it), trained by ``lt_kit.training.fit.fit`` with
``resume`` whenever it has a checkpoint: killing the campaign at any moment, ``kill -9`` included, loses at most
the epoch in flight (checkpoints and results are written atomically). A missing run dir starts its row over.

A finished row is *recorded* under ``bench/results/<name>/``: ``rows/<row>.json`` (the method rows, seed,
device, machine, wall seconds) and ``runs/<row>/`` (the run's params, metrics, history, subset and its evaluated
weights ``evaluated.pt``: the model alone, no optimiser state, about 2 MB for ResNet-32), all committed. The feature
caches are not recorded: ``python -m lt_kit test --run-dir <a copy of runs/<row>> --data-root $CIFAR`` rebuilds them
from the weights and the data and gives the row's recorded metrics again (``test`` writes its caches and a log
line into the run dir it scores, hence the copy). A recorded row is never run again; a finished but unrecorded run
is recorded only while its manifest row still names the parameters it ran with. After each one the grouped table is
rebuilt through ``lt_kit compare`` on the recorded runs: ``<name>.json`` and ``<name>.md``.

``stash`` copies each partial row's run dir (checkpoint included) into ``bench/results/<name>/partial/`` (ignored by
git: checkpoints stay out of the repository) so that it can be carried by hand to a machine that lacks ``--runs``;
``run`` picks a stashed row up from there. Recording the row removes its stash.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
# Everything from lt_kit is imported once, at start: a campaign runs for days and keeps the code it started with.
from accuracy import machine, markdown, published, run_rows  # noqa: E402

from lt_kit import compare_runs, fit  # noqa: E402
from lt_kit.config import DEFAULTS, load_params_file, resolve  # noqa: E402
from lt_kit.errors import LtKitError  # noqa: E402
from lt_kit.evaluation.summary import row_name  # noqa: E402
from lt_kit.methods import chosen_by  # noqa: E402
from lt_kit.runs.lock import RunLock  # noqa: E402
from lt_kit.runs.rundir import atomic_write_bytes, write_json  # noqa: E402
from lt_kit.training.build import resolve_device  # noqa: E402
from lt_kit.training.score import run_summary  # noqa: E402

RECORDED_FILES = ("params.yaml", "metrics.json", "history.json", "version.json", "subset.json", "subset_indices.npy",
                  "val_indices.npy", "log.txt")      # and evaluated.pt, the model alone (record_weights)
# Settings that differ from machine to machine without changing a row: where the data lies, the device, the loader's
# workers, whether CIFAR may be downloaded. A finished run is checked against its manifest row on everything else.
MACHINE_KEYS = ("data_root", "device", "num_workers", "download")
WEIGHT_KEYS = ("format", "model", "epoch", "signature")      # what evaluated.pt holds: no optimiser state
# The rule that decides the CPU default precision, fixed before the bf16 twins had results (docs/performance.md,
# "bf16 at 200 epochs"): over PAIRS_NEEDED seed pairs, bf16 minus float32 at both deciding evaluations must average
# MEAN_BOUND points or better, and no pair may fall below SEED_BOUND.
DECIDING = (("tde", "rule"), ("logit_adjust", "rule"))
PAIRS_NEEDED, MEAN_BOUND, SEED_BOUND = 2, -0.5, -1.5
TWIN_KEYS = ("dataset", "ratio", "head", "loss", "seed", "val_per_class", "epochs")


def precision_verdict(diffs: dict[str, list[float]]) -> tuple[str, str]:
    """(verdict, why) of the precision rule on ``diffs`` (deciding evaluation -> bf16 minus float32, in points,
    one per seed pair): ``auto`` when every evaluation's mean is MEAN_BOUND or better and no pair is below
    SEED_BOUND, ``float32`` when not, ``undecided`` while fewer than PAIRS_NEEDED pairs are recorded."""
    n = min((len(v) for v in diffs.values()), default=0)
    if n < PAIRS_NEEDED:
        return "undecided", f"{n} of the {PAIRS_NEEDED} seed pairs the rule needs are recorded"
    fails = [f"{k}: mean {sum(v) / len(v):+.2f} is below {MEAN_BOUND}" for k, v in diffs.items()
             if sum(v) / len(v) < MEAN_BOUND]
    fails += [f"{k}: a pair at {min(v):+.2f} is below {SEED_BOUND}" for k, v in diffs.items() if min(v) < SEED_BOUND]
    if fails:
        return "float32", "; ".join(fails)
    return "auto", "; ".join(f"{k}: mean {sum(v) / len(v):+.2f}, lowest pair {min(v):+.2f}" for k, v in diffs.items()) \
        + f" (bounds: mean {MEAN_BOUND}, any pair {SEED_BOUND})"


def _rel(p: Path) -> str:
    """A path as the repository names it (absolute only outside it)."""
    p = Path(p).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def load_manifest(path: Path) -> dict:
    """The manifest with each row's preset and overrides merged (``defaults`` first, then the row's own)."""
    m = yaml.safe_load(Path(path).read_text())
    d = m.get("defaults", {})
    rows, seen = [], set()
    for r in m["rows"]:
        if r["name"] in seen:
            raise SystemExit(f"{path}: row name {r['name']!r} appears twice")
        seen.add(r["name"])
        rows.append({"name": r["name"], "params": r.get("params", d.get("params")),
                     "set": {**d.get("set", {}), **r.get("set", {})}, "headline": r.get("headline", True)})
    return {"name": m["name"], "rows": rows, "path": Path(path), "defaults": d}


def row_params(row: dict, data_root: str, device: str) -> dict:
    preset = load_params_file(ROOT / "params" / f"{row['params']}.yaml") if row["params"] else {}
    return resolve({**preset, **row["set"], "data_root": data_root, "device": device}, f" (campaign row {row['name']})")


def manifest_drift(row_p: dict, run_p: dict) -> list[str]:
    """``key: manifest X, run Y`` for every parameter where a manifest row's resolved parameters and its run's
    ``params.yaml`` differ, ``MACHINE_KEYS`` aside (and bf16 where the row leaves it to ``auto``, which each run
    resolves for its device). A key the run's params.yaml lacks counts at its default, which that run used."""
    def get(d, k):
        return d[k] if k in d else DEFAULTS.get(k)
    skip = {*MACHINE_KEYS, *(("bf16",) if row_p.get("bf16") == "auto" else ())}
    keys = sorted(k for k in set(row_p) | set(run_p) if k not in skip and get(row_p, k) != get(run_p, k))
    return [f"{k}: manifest {get(row_p, k)!r}, run {get(run_p, k)!r}" for k in keys]


def record_weights(run: Path, dest: Path) -> None:
    """The run's evaluated weights into ``dest`` as the model alone (``WEIGHT_KEYS``, no optimiser state), so
    the recorded run dir stays small enough to commit and ``lt_kit test`` rebuilds its caches from it. A run from
    an lt_kit before ``evaluated.pt`` evaluated its last epoch: ``checkpoint.pt``'s model is those weights."""
    src = run / "evaluated.pt"
    if not src.is_file():
        src = run / "checkpoint.pt"
        if not src.is_file() or yaml.safe_load((run / "params.yaml").read_text()).get("select_best"):
            raise LtKitError(f"{run} has no evaluated.pt, the weights its metrics come from, so the row cannot be "
                             f"recorded with them; move {run} away and run the campaign again to retrain the row")
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    atomic_write_bytes(dest / "evaluated.pt", lambda f: torch.save({k: ckpt[k] for k in WEIGHT_KEYS if k in ckpt}, f))


def short_rows(group) -> list[str]:
    """The evaluations of one seed group that the README shows: the model alone; on a cross-entropy model TDE and
    logit adjustment at rule and validation choice, and of cRT and LWS the one with the higher mean validation
    accuracy (a choice on the validation split, never on test), at its validation epoch."""
    have = group.evaluations()
    if group.params.get("loss", "ce") != "ce":
        return [e for e in have if e == "softmax"]
    keep = [e for e in ("softmax", "tde", "tde/val", "logit_adjust/rule", "logit_adjust/val") if e in have]
    def val_acc(m):
        accs = [r.methods[m]["val"].get("val_overall") for r in group.runs
                if isinstance((r.methods or {}).get(m), dict) and isinstance(r.methods[m].get("val"), dict)]
        accs = [a for a in accs if a is not None]
        return sum(accs) / len(accs) if accs else None
    two = [(val_acc(m), m) for m in ("crt", "lws") if f"{m}/val" in have and val_acc(m) is not None]
    return keep + ([f"{max(two)[1]}/val"] if two else [])


HEADLINE_MARKERS = ("<!-- campaign-headline:start (bench/campaign.py headline --readme) -->",
                    "<!-- campaign-headline:end -->")


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a kill never leaves half a table."""
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))


def write_between(path: Path, markers: tuple[str, str], text: str) -> Path:
    """Replace what lies between the two marker lines of ``path`` with ``text`` (an error if either is absent)."""
    doc = path.read_text()
    start, end = doc.find(markers[0]), doc.find(markers[1])
    if start < 0 or end < start:
        raise LtKitError(f"{path} lacks the lines {markers[0]!r} ... {markers[1]!r} that mark where the table goes")
    write_text(path, doc[:start + len(markers[0])] + "\n\n" + text + "\n" + doc[end:])
    return path


def _seeds_str(seeds: list[int]) -> str:
    return ", ".join(map(str, sorted(seeds)))


class Campaign:
    def __init__(self, manifest: dict, runs: Path | None = None, results: Path | None = None):
        self.m = manifest
        self.runs = Path(runs or Path.home() / ".cache" / "lt_kit" / manifest["name"])
        self.results = Path(results or ROOT / "bench" / "results" / manifest["name"])

    def run_dir(self, row: dict) -> Path:
        return self.runs / row["name"]

    def recorded(self, row: dict) -> Path:
        return self.results / "rows" / f"{row['name']}.json"

    def state(self, row: dict) -> tuple[str, int, float | None]:
        """('done' | 'partial' | 'pending', epochs done, mean seconds per epoch)."""
        if self.recorded(row).is_file():
            return "done", -1, None
        for where in (self.run_dir(row), self.results / "partial" / row["name"]):
            h = where / "history.json"
            if h.is_file():
                hist = json.loads(h.read_text())
                secs = [e["seconds"] for e in hist[-20:]]
                return "partial", len(hist), (sum(secs) / len(secs) if secs else None)
        return "pending", 0, None

    def status(self) -> str:
        out = [f"campaign {self.m['name']} ({_rel(self.m['path'])}), runs in {self.runs}"]
        for i, row in enumerate(self.m["rows"], 1):
            st, done, spe = self.state(row)
            epochs = row["set"].get("epochs", 200)
            if st == "done":
                rec = json.loads(self.recorded(row).read_text())["meta"]
                out.append(f"{i:2d}. {row['name']:<28} done     {rec['wall_seconds'] / 3600:.2f} h on {rec['machine']}")
            elif st == "partial":
                eta = f", ETA {(epochs - done) * spe / 3600:.1f} h at {spe:.0f} s/epoch" if spe else ""
                out.append(f"{i:2d}. {row['name']:<28} partial  epoch {done} of {epochs}{eta}")
            else:
                out.append(f"{i:2d}. {row['name']:<28} pending")
        return "\n".join(out)

    def restore_stash(self, row: dict) -> None:
        """A row stashed in the repository and absent here resumes from the stash."""
        stash, here = self.results / "partial" / row["name"], self.run_dir(row)
        if RunLock(here).busy():                  # another worker is in its first epoch: leave it
            return
        if stash.is_dir() and not (here / "checkpoint.pt").is_file():
            tmp = here.with_name(f".{here.name}.restoring")     # copied whole, then renamed: a kill mid-copy
            if tmp.exists():                                     # leaves no half checkpoint in the run dir
                shutil.rmtree(tmp)
            shutil.copytree(stash, tmp)
            if here.exists():
                shutil.rmtree(here)
            tmp.rename(here)

    def run_row(self, row: dict, data_root: str, device: str) -> bool:
        """Train (or resume) one row and record it; False if another process holds its run dir."""
        self.restore_stash(row)
        params = row_params(row, data_root, device)
        run = self.run_dir(row)
        resume = (run / "checkpoint.pt").is_file() and not (run / "metrics.json").is_file()
        try:
            if (run / "metrics.json").is_file():                    # finished but not yet recorded
                self.check_manifest(row, params)
                metrics = json.loads((run / "metrics.json").read_text())
            else:
                metrics = fit(params, run, resume=resume, overwrite=not resume, progress=False)
        except LtKitError as e:
            if "being written by another" in str(e):
                print(f"{row['name']}: {e} (another worker has it)", flush=True)
                return False
            raise
        if params["train_feature_passes"] and \
                not any(e.get("kind") == "two-stage" for e in (metrics.get("methods") or {}).values()):
            metrics = run_summary(run, device=device)      # a row finished by an lt_kit older than cRT/LWS
        self.record(row, metrics, params)
        return True

    def check_manifest(self, row: dict, params: dict) -> None:
        """Refuse to record a finished run under a manifest row that changed while it ran (the record would pair
        one recipe's results with another's settings); ``params``: the row's, resolved (``row_params``)."""
        run = self.run_dir(row)
        drift = manifest_drift(params, yaml.safe_load((run / "params.yaml").read_text()) or {})
        if drift:
            raise LtKitError(f"row {row['name']}: the manifest row no longer names the parameters its finished run "
                             f"{run} ran with ({'; '.join(drift)}); restore the row in {_rel(self.m['path'])} to "
                             f"record the run, or move {run} away to train the row again")

    def record(self, row: dict, metrics: dict, params: dict) -> None:
        run = self.run_dir(row)
        hist = json.loads((run / "history.json").read_text())
        wall = sum(e["seconds"] for e in hist)          # the training epochs' wall time, over every resumption
        dest = self.results / "runs" / row["name"]
        dest.mkdir(parents=True, exist_ok=True)
        for f in RECORDED_FILES:
            if (run / f).is_file():
                shutil.copy2(run / f, dest / f)
        record_weights(run, dest)
        write_json(dest / "metrics.json", metrics)     # what the rows say (recomputed for an older row's run)
        p = yaml.safe_load((dest / "params.yaml").read_text())     # where this machine keeps CIFAR is no part
        p["data_root"] = "DIR"                                      # of the result
        write_text(dest / "params.yaml", yaml.safe_dump(p, sort_keys=False))
        meta = {"row": row["name"], "epochs": params["epochs"], "dataset": params["dataset"],
                "ratio": params["imbalance_ratio"], "head": params["head"], "loss": params["loss"],
                "seed": params["seed"], "val_per_class": params["val_per_class"], "bf16": params["bf16"],
                "device": str(resolve_device(params["device"])), "machine": machine(),
                "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
                "wall_seconds": round(wall, 1), "last_fit_seconds": metrics.get("seconds"),
                "finished": time.strftime("%Y-%m-%d %H:%M"), "version": __import__("lt_kit").__version__}
        rows = run_rows(metrics, dataset=params["dataset"], ratio=params["imbalance_ratio"], seed=params["seed"],
                        seconds=wall, run_dir=_rel(dest))
        self.recorded(row).parent.mkdir(parents=True, exist_ok=True)
        write_json(self.recorded(row), {"meta": meta, "rows": rows})
        stash = self.results / "partial" / row["name"]
        if stash.is_dir():
            shutil.rmtree(stash)
        self.table()
        print(f"{row['name']}: recorded ({wall / 3600:.2f} h of training)", flush=True)

    def recorded_rows(self) -> list[dict]:
        """The recorded rows' ``{"meta", "rows"}``, in manifest order."""
        return [json.loads(self.recorded(r).read_text()) for r in self.m["rows"] if self.recorded(r).is_file()]

    def rescore(self) -> list[str]:
        """Recompute each recorded row's method results from its run's feature caches with this lt_kit (after a
        method changed; the training is not repeated): ``runs/<row>/metrics.json`` and ``rows/<row>.json`` are
        rewritten, the row's meta keeps its training record and gains ``rescored``. Rows whose run dir is not on
        this machine are left as they are. Returns the rows rescored."""
        done = []
        for row in self.m["rows"]:
            run, rec_path = self.run_dir(row), self.recorded(row)
            if not rec_path.is_file() or not (run / "metrics.json").is_file():
                continue
            rec = json.loads(rec_path.read_text())
            meta, old = rec["meta"], json.loads((self.results / "runs" / row["name"] / "metrics.json").read_text())
            metrics = {**run_summary(run), **{k: old[k] for k in ("seconds", "epochs_trained") if k in old}}
            write_json(self.results / "runs" / row["name"] / "metrics.json", metrics)
            meta["rescored"] = {"when": time.strftime("%Y-%m-%d %H:%M"), "version": __import__("lt_kit").__version__}
            secs = rec["rows"][0]["seconds"] if rec["rows"] else meta["wall_seconds"]
            rows = run_rows(metrics, dataset=meta["dataset"], ratio=meta["ratio"], seed=meta["seed"], seconds=secs,
                            run_dir=_rel(self.results / "runs" / row["name"]))
            write_json(rec_path, {"meta": meta, "rows": rows})
            done.append(row["name"])
        if done:
            self.table()
        return done

    def table(self) -> None:
        """``<name>.json`` (every recorded row) and ``<name>.md`` (per-row table + the grouped compare table)."""
        recs = self.recorded_rows()
        if not recs:
            return
        rows = [{**x, "paper": published(x)} for rec in recs for x in rec["rows"]]      # today's quoted figures
        metas = [rec["meta"] for rec in recs]
        meta = {"machine": "; ".join(sorted({f"{m['machine']} ({m['device']})" for m in metas})),
                "epochs": 200 if all(m["epochs"] == 200 for m in metas) else sorted({m["epochs"] for m in metas}),
                "schedule": "the reference's (params/cifar10_lt_resnet32.yaml)",
                "seeds": sorted({m["seed"] for m in metas}),
                "command": f"python bench/campaign.py run --data-root $CIFAR  (manifest {_rel(self.m['path'])})",
                "version": metas[-1]["version"], "val_per_class": 50, "rows": metas}
        groups = compare_runs([str(self.results / "runs" / m["row"]) for m in metas])
        md = markdown(rows, meta).replace("Validation split:",
                                          "Validation split (every row but those named *_noval):") + \
            "\n## Mean ± sample sd over seeds (`python -m lt_kit compare`)\n\n" + groups.markdown() + \
            "\n## Rows\n\n" + "\n".join(f"- {m['row']}: {m['wall_seconds'] / 3600:.2f} h of training on {m['machine']} "
                                         f"({m['device']}, bf16={m['bf16']}), finished {m['finished']}"
                                         for m in metas) + "\n"
        write_json(self.results / f"{self.m['name']}.json", {"meta": meta, "rows": rows})
        head = self.headline()
        if head:
            write_text(self.results / "headline.md", "# The headline table (rows at ratio 100 with a validation "
                                                     "split)\n\n" + head)
        write_text(self.results / f"{self.m['name']}.md", md)

    def headline(self, short: bool = False) -> str | None:
        """The headline table: every method of the recorded ratio-100 rows with a validation split, at its rule
        and at its validation choice, as mean ± sample sd over seeds (``lt_kit compare``'s groups), with the
        published 200-epoch figure beside it. ``short``: the rows that carry the README's reading
        (:func:`short_rows`). None before any such row is recorded."""
        recs = self.recorded_rows()
        ratio = self.m.get("defaults", {}).get("set", {}).get("imbalance_ratio")      # the manifest's own
        shown = {r["name"] for r in self.m["rows"] if r["headline"]}          # not the precision experiments
        recs = [r for r in recs if r["meta"]["val_per_class"] and ratio in (None, r["meta"]["ratio"])
                and r["meta"]["row"] in shown]
        if not recs:
            return None
        by_row = {r["meta"]["row"]: r for r in recs}
        comp = compare_runs([str(self.results / "runs" / r["meta"]["row"]) for r in recs])
        pct = lambda n, m, sd: "–" if not n else f"{100 * m:.1f}" + (f" ± {100 * sd:.1f}" if sd == sd else "")  # noqa: E731
        out = ["| method | chosen by | strength (per seed) | seeds | many | medium | overall | head | tail | "
               "published (200 epochs) |", "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
        for g in comp.groups:
            head, loss = g.params["head"], g.params.get("loss", "ce")
            recorded = [by_row[r.path.name] for r in sorted(g.runs, key=lambda r: r.seed)]     # seed order
            for e in (short_rows(g) if short else g.evaluations()):
                method, _, how = e.partition("/")
                method = None if method == "softmax" else method
                how = how or ("rule" if method else "")            # "tde" is the run's own alpha: the rule
                mine = [x for rec in recorded for x in rec["rows"] if (x["method"], x["how"]) == (method, how)]
                strengths, paper = [x["strength"] for x in mine], (published(mine[0]) if mine else None)
                st = g.stats(e)
                name = row_name(head, method, strengths[0] if how == "rule" and strengths else 0, loss=loss)
                if how == "val" or method is None:
                    name = name.split(" (")[0]
                shown = "–" if method is None else ", ".join(f"{v:g}" for v in strengths)
                out.append(f"| {name} | {chosen_by(method, how)} | {shown} | "
                           f"{_seeds_str(g.seeds)} | " + " | ".join(pct(*st[k]) for k in
                                                                   ("many", "medium", "overall", "head", "tail"))
                           + f" | {paper or '–'} |")
        ms = [by_row[r.path.name]["meta"] for g in comp.groups for r in g.runs]     # the runs the table shows
        machines = "; ".join(sorted({f"{m['machine']} ({m['device']})" for m in ms}))
        precision = " and ".join(sorted({"bf16" if m["bf16"] in (True, "true") else "float32" for m in ms}))
        epochs = "/".join(sorted({str(m["epochs"]) for m in ms}))
        which = ("The rows that carry the reading: each model alone, TDE and logit adjustment at their rule and "
                 "validation choice, and the better of cRT and LWS by validation accuracy (the authors' procedure); "
                 "every method and split: [docs/results.md]"
                 "(docs/results.md#the-200-epoch-campaign-tde-against-its-peers-same-subset-several-seeds). ") \
            if short else ""
        out += ["", f"{which}{ms[0]['dataset']} ratio {ms[0]['ratio']:g}, the manifest's recipe ({epochs} epochs), "
                    f"{precision}; {len(ms)} recorded run(s) on {machines}. Percent over the test set: mean ± "
                    "sample sd over the seeds listed (one seed: no sd). "
                    f"{ms[0]['val_per_class']} images per class were held out of the training pool for the validation "
                    "split before the subset was drawn (at CIFAR-10 scale the head class then has "
                    f"{5000 - ms[0]['val_per_class']:,}). "
                    "Many: > 100 training images (CIFAR-10-LT has no few-shot class); head / tail: the classes above / "
                    "at or below the median training count. Made by `python bench/campaign.py headline`."]
        return "\n".join(out) + "\n"

    def precision(self) -> str | None:
        """The bf16 experiment: every recorded bf16 row beside its float32 twin (the recorded float32 row with the
        same data set, ratio, head, loss, seed, split and epochs) at the deciding evaluations (DECIDING) and at
        their validation choices, each run's training time, and the rule's verdict (:func:`precision_verdict`).
        Written to ``precision.md``; None while no bf16 row is recorded."""
        recs = self.recorded_rows()
        is_bf16 = lambda m: m["bf16"] in (True, "true")                           # noqa: E731
        twins = []
        for rec in (r for r in recs if is_bf16(r["meta"])):
            key = tuple(rec["meta"][k] for k in TWIN_KEYS)
            fp32 = [r for r in recs if not is_bf16(r["meta"]) and tuple(r["meta"][k] for k in TWIN_KEYS) == key]
            if fp32:
                twins.append((fp32[0], rec))
        if not twins:
            return None

        def acc(rec, method, how):
            x = [r for r in rec["rows"] if (r["method"], r["how"]) == (method, how)]
            return (100 * x[0]["metrics"]["overall"], x[0]["strength"]) if x else (float("nan"), None)

        def timing(rec):
            m, hist = rec["meta"], self.results / "runs" / rec["meta"]["row"] / "history.json"
            secs = [e["seconds"] for e in json.loads(hist.read_text())] if hist.is_file() else []
            med = f", median epoch {statistics.median(secs):.1f} s" if secs else ""
            return f"{m['wall_seconds']:,.0f} s ({m['wall_seconds'] / 3600:.2f} h){med}, {m['machine']}"

        evals = [*DECIDING, ("tde", "val"), ("logit_adjust", "val"), (None, "")]
        out = ["| seed | evaluation | float32 | bf16 | bf16 − float32 | decides |", "|---|---|---:|---:|---:|---|"]
        diffs: dict[str, list[float]] = {f"{m}/{h}": [] for m, h in DECIDING}
        for fp, bf in twins:
            for method, how in evals:
                (a, sa), (b, sb) = acc(fp, method, how), acc(bf, method, how)
                name = f"{method}/{how}" if method else "the head's own logits"
                strength = f" ({sa:g} / {sb:g})" if how == "val" and sa is not None else ""
                if (method, how) in DECIDING and a == a and b == b:
                    diffs[name].append(b - a)
                out.append(f"| {fp['meta']['seed']} | {name}{strength} | {a:.2f} | {b:.2f} | {b - a:+.2f} | "
                           f"{'yes' if (method, how) in DECIDING else 'no'} |")
        verdict, why = precision_verdict(diffs)
        out += ["", "Training time (the sum of the epochs' seconds, history.json):", ""]
        out += [f"- seed {fp['meta']['seed']}: float32 {timing(fp)}; bf16 {timing(bf)}"
                for fp, bf in twins]
        out += ["", f"**Verdict: {verdict}** ({why}). The rule (docs/performance.md, \"bf16 at 200 epochs\"): bf16 "
                    f"becomes the CPU default (`bf16=auto`) when, over {PAIRS_NEEDED} seed pairs, bf16 − float32 "
                    f"averages {MEAN_BOUND} points or better at TDE's rule (alpha 1) and at logit adjustment's rule "
                    f"(tau 1), and no pair is below {SEED_BOUND}. The validation choices are shown, not used. Made by "
                    "`python bench/campaign.py precision`."]
        text = "\n".join(out) + "\n"
        write_text(self.results / "precision.md", "# bf16 against float32 at 200 epochs\n\n" + text)
        return text

    def write_headline(self) -> list[Path]:
        """The short table into README.md and the full one into docs/results.md, between their markers."""
        short, full = self.headline(short=True), self.headline()
        if full is None:
            return []
        return [write_between(ROOT / "README.md", HEADLINE_MARKERS, short),
                write_between(ROOT / "docs" / "results.md", HEADLINE_MARKERS, full)]

    def stash(self) -> list[str]:
        done = []
        for row in self.m["rows"]:
            run = self.run_dir(row)
            if self.state(row)[0] == "partial" and (run / "checkpoint.pt").is_file():
                dest = self.results / "partial" / row["name"]
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".lock", "*.tmp*"))
                # where this machine keeps CIFAR is no part of the run (a resume reads it from --data-root)
                p = yaml.safe_load((dest / "params.yaml").read_text())
                p["data_root"] = "DIR"
                write_text(dest / "params.yaml", yaml.safe_dump(p, sort_keys=False))
                ckpt = torch.load(dest / "checkpoint.pt", map_location="cpu", weights_only=False)
                ckpt["params"] = {**ckpt["params"], "data_root": "DIR"}
                torch.save(ckpt, dest / "checkpoint.pt")
                done.append(row["name"])
        return done


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=["run", "status", "table", "headline", "rescore", "stash", "precision"])
    ap.add_argument("--manifest", default=str(ROOT / "bench" / "campaign_e200.yaml"))
    ap.add_argument("--runs", help="where the row run dirs live (default ~/.cache/lt_kit/<manifest name>)")
    ap.add_argument("--results", help="where finished rows are recorded (default bench/results/<manifest name>)")
    ap.add_argument("--data-root", help="folder holding cifar-10-batches-py (run)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--jobs", type=int, default=1, help="rows at once, each in its own process (threads split)")
    ap.add_argument("--readme", action="store_true",
                    help="headline, and run after each recorded row: also write the table into README.md "
                         "between its campaign-headline markers")
    ap.add_argument("--max-rows", type=int, default=0, help="stop after this many rows recorded (0 = all)")
    args = ap.parse_args(argv)
    c = Campaign(load_manifest(Path(args.manifest)), args.runs, args.results)
    if args.command == "status":
        print(c.status())
    elif args.command == "table":
        c.table()
        print((c.results / f"{c.m['name']}.md").read_text() if (c.results / f"{c.m['name']}.md").is_file()
              else "no recorded rows yet")
    elif args.command == "headline":
        table = c.headline()
        if table is None:
            print("no recorded ratio-100 row with a validation split yet")
        else:
            print(table, end="")
            if args.readme:
                print("wrote " + ", ".join(str(p) for p in c.write_headline()))
    elif args.command == "rescore":
        print("rescored: " + (", ".join(c.rescore()) or "nothing (no recorded row's run dir is here)"))
    elif args.command == "precision":
        print(c.precision() or "no recorded bf16 row with a recorded float32 twin yet")
    elif args.command == "stash":
        print("stashed: " + (", ".join(c.stash()) or "nothing partial"))
    else:
        if not args.data_root:
            ap.error("run needs --data-root (the folder holding cifar-10-batches-py)")
        if args.jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // args.jobs)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            cmd = [sys.executable, __file__, "run", "--manifest", args.manifest, "--data-root", args.data_root,
                   "--device", args.device] + (["--runs", args.runs] if args.runs else []) + \
                (["--results", args.results] if args.results else []) + (["--readme"] if args.readme else [])
            procs = []
            for _ in range(args.jobs):
                procs.append(subprocess.Popen(cmd, env=env))
                time.sleep(20)           # the first worker takes (locks) the first row; the next one skips it
            sys.exit(max(p.wait() for p in procs))
        c.table()              # a kill between a row's record and its table leaves the tables one row behind
        n = 0
        for row in c.m["rows"]:
            if c.state(row)[0] == "done":
                continue
            print(f"{row['name']}: {'resume' if c.state(row)[0] == 'partial' else 'start'}", flush=True)
            if c.run_row(row, args.data_root, args.device):
                n += 1
                if args.readme:
                    print("wrote " + ", ".join(str(p) for p in c.write_headline()), flush=True)
                if args.max_rows and n >= args.max_rows:
                    break
        print(c.status())


if __name__ == "__main__":
    main()
