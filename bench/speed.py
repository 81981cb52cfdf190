"""Training throughput, three ways, in one process on one machine (ResNet-32, CIFAR-10-LT ratio 100, batch 256):

  (a) lt_kit: ``TensorLoader`` (whole split as a uint8 tensor on the device, batched seeded crop/flip/normalise)
      feeding ``lt_kit.training.loop.train_one_epoch``, the step ``fit`` runs;
  (b) the reference's input path feeding the same model and the same step: torchvision's ``CIFAR10`` on disk
      subset to the same long-tailed indices, PIL transforms per image (RandomCrop(32, padding=4),
      RandomHorizontalFlip, ToTensor, Normalize), a ``DataLoader`` with worker processes, fp32;
  (c) the bound: forward + backward + optimizer step on one batch already on the device (no input path, no
      direction update, no bookkeeping).

The paths are measured in interleaved rounds (b, a, c, b, a, c, ...) and each figure is the median over
rounds, so background load on a shared machine hits all of them alike (per-round ratios are reported too).
Each model takes one untimed warm-up step; (b) takes one untimed step every round, which absorbs its worker
start-up and lets the prefetch queue fill, so its timed steps see the reference's steady state. The input
paths are also timed alone (no training), which bounds what they can cost the step.
``--options channels_last,compile,bf16,bf16_channels_last`` adds (a) and (c) with lt_kit's hardware options
(``bf16_channels_last``: both at once, the CPU default where the CPU has native bf16).
``--full-epochs 200`` then trains whole runs solo on each path of ``bench/fast_paths.py`` (eager, the fast step,
the fast step in bf16, the captured bound) and records ``seconds_200_epochs`` per path, measured.
The DataLoader of (b) has ``--workers`` (default 2) processes. Prints progress to stderr and one JSON line
to stdout last. Device-agnostic: ``--device cuda`` runs the same comparison on a GPU.

    python bench/speed.py --quick                                     # < 1 min on a 2-core CPU, fake data
    python bench/speed.py --data-root /path/holding/cifar-10-batches-py --out bench/results
"""
from __future__ import annotations

import argparse
import json
import pickle
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    CpuLoad,
    contention_note,
    machine_info,
    machine_lines,
    median,
    threads_and_device,
    write_results,
)

from lt_kit.config import DEFAULTS, resolve  # noqa: E402
from lt_kit.data.datasets import dataset_info, long_tail_counts  # noqa: E402
from lt_kit.data.loaders import TensorLoader  # noqa: E402
from lt_kit.maths.schedule import lr_at  # noqa: E402
from lt_kit.models import LTModel  # noqa: E402
from lt_kit.precision import autocast, native_bf16_cpu  # noqa: E402
from lt_kit.training.build import build_data  # noqa: E402
from lt_kit.training.fit import train_one_epoch  # noqa: E402

# --options: each names the Group settings it measures, against the plain fp32 contiguous group
OPTIONS = {"channels_last": {"channels_last": True}, "compile": {"compile": True}, "bf16": {"bf16": True},
           "bf16_channels_last": {"bf16": True, "channels_last": True},
           "compile_bf16_channels_last": {"compile": True, "bf16": True, "channels_last": True}}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_fake_cifar10(root: Path, counts: list[int], seed: int = 0) -> None:
    """A CIFAR-10 in torchvision's pickle layout whose classes hold exactly ``counts`` training images
    (so the ratio-100 subset is all of it: 12,406 images) and 100 test images each; pixels are noise,
    which costs the same to crop, flip and convert as real images."""
    rng = np.random.RandomState(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation(np.repeat(np.arange(10), counts))
    for i, part in enumerate(np.array_split(labels, 5), 1):
        data = rng.randint(0, 256, (len(part), 3072), dtype=np.uint8)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": data, "labels": part.tolist()}, f)
    test = np.repeat(np.arange(10), 100)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": rng.randint(0, 256, (len(test), 3072), dtype=np.uint8), "labels": test.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def reference_loader(root: Path, indices: np.ndarray, *, batch_size: int, workers: int, device: torch.device):
    """The reference's training input: torchvision ``CIFAR10`` (md5 checks off, so re-packed copies load),
    subset to the long-tailed indices, PIL transforms per image, a shuffling ``DataLoader`` with workers."""
    import torchvision.transforms as T
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        train_list = [[f, None] for f, _ in CIFAR10.train_list]
        test_list = [[f, None] for f, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    info = dataset_info("cifar10_lt")
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(info.mean, info.std)])
    ds = torch.utils.data.Subset(LocalCIFAR10(str(root), train=True, download=False, transform=tf),
                                 indices.tolist())
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       pin_memory=device.type == "cuda", drop_last=True)


class Take:
    """The next ``n`` batches of a running iterator, moved to ``device``: lets ``train_one_epoch`` run a few
    steps of a loader without restarting it (and, for a DataLoader, its workers)."""

    def __init__(self, it, n: int, device: torch.device | None = None):
        self.it, self.n, self.device = it, n, device

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            x, y = next(self.it)
            if self.device is not None:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield x, y


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Group:
    """One model + optimizer built the same way for every group (seed 0), with its hardware options."""

    def __init__(self, device, lr: float, *, channels_last=False, compile=False, bf16=False):
        torch.manual_seed(0)
        self.model = LTModel("resnet32", 10).to(
            device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        if compile:
            # compile what LTModel.forward calls: forward_features (torch.compile(module) alone compiles
            # only module.forward, which LTModel never calls)
            self.model.backbone.forward_features = torch.compile(self.model.backbone.forward_features)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.channels_last, self.bf16, self.compile = channels_last, bf16, compile
        self.first_step_s: float | None = None       # the group's first step (compile time, if any)
        self.warmed = False                           # the group has taken its untimed first step(s)


def run_a(g: Group, loader: TensorLoader, rnd: int, settle: int, steps: int, device) -> float:
    settle = 0 if g.warmed else settle               # same model, same shapes: one warm-up per group
    loader.set_epoch(rnd)
    it = iter(loader)
    t0 = time.perf_counter()
    if settle:
        train_one_epoch(g.model, Take(it, settle), g.opt, mu=0.9, epoch=1, bf16=g.bf16)
    sync(device)
    t1 = time.perf_counter()
    if settle:
        g.first_step_s, g.warmed = t1 - t0, True
    train_one_epoch(g.model, Take(it, steps), g.opt, mu=0.9, epoch=1, bf16=g.bf16)
    sync(device)
    return time.perf_counter() - t1


def run_b(g: Group, dl, rnd: int, settle: int, steps: int, device) -> float:
    # Fresh workers, as every epoch of the reference; the untimed steps absorb their start-up and let them
    # fill the prefetch queue, so the timed steps see the steady state (one batch made per batch taken).
    it = iter(dl)
    t0 = time.perf_counter()
    train_one_epoch(g.model, Take(it, settle, device), g.opt, mu=0.9, epoch=1)
    sync(device)
    t1 = time.perf_counter()
    if not g.warmed:
        g.first_step_s, g.warmed = t1 - t0, True
    train_one_epoch(g.model, Take(it, steps, device), g.opt, mu=0.9, epoch=1)
    sync(device)
    dt = time.perf_counter() - t1
    del it                                           # stop the workers before the next path runs
    return dt


def run_c(g: Group, batch, rnd: int, settle: int, steps: int, device) -> float:
    settle = 0 if g.warmed else settle
    x, y = batch
    amp = autocast(device, g.bf16)
    g.model.train()

    def step():
        with amp:
            logits, _ = g.model(x)
        loss = F.cross_entropy(logits.float(), y)
        g.opt.zero_grad(set_to_none=True)
        loss.backward()
        g.opt.step()

    t0 = time.perf_counter()
    for _ in range(settle):
        step()
    sync(device)
    t1 = time.perf_counter()
    if settle:
        g.first_step_s, g.warmed = t1 - t0, True
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - t1


def input_only(loader, n: int, device) -> float:
    """Seconds for the first ``n`` batches of a fresh iterator (worker start-up included), no training:
    how fast the input path alone can feed the step."""
    t0 = time.perf_counter()
    it = iter(loader)
    for _ in range(n):
        x, y = next(it)
    sync(device)
    dt = time.perf_counter() - t0
    del it
    return dt


def markdown(res: dict, info: dict, contention: str, command: str) -> str:
    bs = res["batch_size"]
    lines = ["# Training throughput: lt_kit vs the reference input path vs the bound", "",
             f"ResNet-32, CIFAR-10-LT ratio 100 ({res['train_images']:,} training images, {res['data']}), "
             f"batch {bs}, SGD step of epoch 1's recipe. {res['rounds']} interleaved rounds x {res['steps']} "
             f"timed steps per path; figures are medians over rounds. Untimed steps: {res['settle']} per model "
             f"before its first timed step, and {res['settle']} in every round for (b), whose workers start "
             f"afresh each round (as each epoch of the reference) and then run at their steady state.", "",
             *machine_lines(info, contention),
             f"- (b) DataLoader: {res['workers']} worker processes, PIL transforms per image, fp32, "
             f"contiguous memory", f"- Command: `{command}`", "",
             "| path | images/s (median) | ms per batch | best round | per round (images/s) |",
             "|---|---:|---:|---:|---|"]
    for v in res["variants"].values():
        lines.append(f"| {v['label']} | {v['img_s']:.1f} | {1000 * bs / v['img_s']:.0f} | {v['best_img_s']:.1f} | "
                     f"{', '.join(f'{r:.1f}' for r in v['rounds'])} |")
    lines += ["", "| ratio | value | goal |", "|---|---:|---:|",
              f"| a / c (input path overhead; 1 = none) | {res['a_over_c']:.3f} | >= 0.95 |",
              f"| a / b (lt_kit vs the reference input path) | {res['a_over_b']:.3f} | >= 1.3 |",
              f"| a / c, median of per-round ratios | {res['a_over_c_paired']:.3f} | |",
              f"| a / b, median of per-round ratios | {res['a_over_b_paired']:.3f} | |",
              f"| a / c, best rounds | {res['a_over_c_best']:.3f} | |",
              f"| a / b, best rounds | {res['a_over_b_best']:.3f} | |"]
    if "a_over_c_input_bound" in res:
        lines.append(f"| a / c implied by the input path's own time (1 / (1 + t_input / t_step)) | "
                     f"{res['a_over_c_input_bound']:.4f} | |")
    for key, desc in (("a_over_c_channels_last", "a / c, both channels_last"),
                      ("a_channels_last_over_b", "a (channels_last) / b"),
                      ("channels_last_speedup_a", "a channels_last / a contiguous"),
                      ("channels_last_speedup_c", "c channels_last / c contiguous"),
                      ("channels_last_speedup_c_paired", "c channels_last / c contiguous, per-round median"),
                      ("a_over_c_compile", "a / c, both compiled"),
                      ("a_compile_over_b", "a (compiled) / b"),
                      ("compile_speedup_a", "a compiled / a eager"),
                      ("compile_speedup_c", "c compiled / c eager"),
                      ("a_over_c_bf16", "a / c, both bf16"), ("a_bf16_over_b", "a (bf16) / b"),
                      ("bf16_speedup_a", "a bf16 / a fp32 (contiguous)"),
                      ("bf16_speedup_c", "c bf16 / c fp32 (contiguous)"),
                      ("bf16_cl_over_cl_a", "a bf16 + channels_last / a channels_last"),
                      ("bf16_cl_over_cl_c", "c bf16 + channels_last / c channels_last"),
                      ("a_over_c_bf16_channels_last", "a / c, both bf16 + channels_last")):
        if key in res:
            lines.append(f"| {desc} | {res[key]:.3f} | |")
    if "compile_first_step_s" in res:
        lines += ["", f"torch.compile: the first compiled step (tracing + inductor code generation, cold cache "
                      f"unless reused) took {res['compile_first_step_s']:.0f} s; it is not in the figures."]
    if (res.get("others_cores") or 0) > 0.25:
        lines += ["", "Reading these figures on a shared CPU: other processes' load moves a single step's time by "
                      "tens of percent from round to round, so each figure carries that noise. (a) does all of (c)'s "
                      "work plus its input path, so a / c above 1 is noise; the input path's own time (the "
                      "'input path alone' rows) bounds what it can cost. The 'best round' column approximates the "
                      "least-disturbed machine."]
    if res.get("solo"):
        lines += ["", "## Whole runs, solo (training only, measured: `--full-epochs`)", "",
                  "| path | epochs | memory format | seconds | images/s | last-epoch loss |",
                  "|---|---:|---|---:|---:|---:|"]
        for k, v in res["solo"].items():
            if "error" in v:
                lines.append(f"| {k} | failed: {v['error']} | | | | |")
                continue
            fmt = "channels_last" if v.get("channels_last") else "contiguous"
            lines.append(f"| {k} | {v['epochs']} | {fmt} | {v['seconds']:.1f} | {v['img_s']:.0f} | "
                         f"{v['last_loss']:.4f} |")
        proj = res.get("seconds_200_epochs_projected")
        if proj:
            lines += ["", f"200 epochs, **projected** from {proj['from_measured_epochs']} measured epochs (training "
                          "only): " + ", ".join(f"{k} {v / 60:.0f} min" for k, v in proj.items()
                                                 if k not in ("from_measured_epochs", "note"))]
    if res.get("seconds_200_epochs_source", "").startswith("measured: the campaign"):
        lines += ["", "## 200 epochs, measured (the campaign's recorded rows)", ""] + \
                 [f"- {k}: {v:.0f} s ({v / 60:.0f} min)" for k, v in res["seconds_200_epochs"].items()]
    for n in res.get("notes", []):
        lines += ["", n]
    return "\n".join(lines)


def prepare_data(data_root, device: str, batch_size: int):
    """The reference's CIFAR-10-LT ratio-100 training split on ``device``: real (``data_root``) or fake data
    of the same shapes. Returns (params, data, root, description, temp dir or None)."""
    tmp = None
    if data_root:
        root, data_desc = Path(data_root), "real CIFAR-10 from $CIFAR"     # no machine path in results
    else:
        tmp = tempfile.TemporaryDirectory(prefix="lt_speed_")
        root, data_desc = Path(tmp.name), "fake CIFAR-10 (noise pixels, real shapes)"
        write_fake_cifar10(root, long_tail_counts(10, 5000, 100))
    params = resolve({"dataset": "cifar10_lt", "data_root": str(root), "imbalance_ratio": 100.0,
                      "batch_size": batch_size, "device": device, "channels_last": False})   # (a) contiguous
    from lt_kit.training.build import resolve_device
    return params, build_data(params, resolve_device(device)), root, data_desc, tmp


def campaign_measured(device_type: str, rows_dir: Path = ROOT / "bench" / "results" / "campaign_e200" / "rows") -> dict:
    """Measured 200-epoch training times on this kind of device: the campaign's recorded rows (bench/campaign.py),
    each the sum of its 200 epochs' seconds over every resumption (pauses between resumptions not counted, other
    load on the machine included). {label: seconds}, label naming the row, precision and machine."""
    out = {}
    for f in sorted(rows_dir.glob("*.json")) if rows_dir.is_dir() else ():
        m = json.loads(f.read_text())["meta"]
        if m.get("epochs") == 200 and str(m.get("device", "")).split(":")[0] == device_type:
            prec = "bf16" if m.get("bf16") in (True, "true") else "float32"
            out[f"campaign {m['row']} ({prec}, {m['machine']})"] = m["wall_seconds"]
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py/ (default: fake CIFAR-10 in a temp dir)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5)")
    p.add_argument("--steps", type=int, help="timed steps per path per round (default 1 on CPU, 20 on GPU)")
    p.add_argument("--settle", type=int, help="untimed steps before the timed ones (default 1 on CPU, 3 on GPU): "
                                              "once per model (warm-up), and every round for (b) (fresh workers)")
    p.add_argument("--input-batches", type=int, default=10,
                   help="batches timed for the input paths alone (no training), per round; 0 to skip")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of (b) (the reference used 12)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads of this process")
    p.add_argument("--options", default="channels_last",
                   help="comma list of lt_kit options to measure on (a) and (c): " + ", ".join(OPTIONS) + "; "
                        "'' for none")
    p.add_argument("--full-epochs", type=int, default=0,
                   help="after the rounds, train N whole epochs solo on each of --solo-paths (bench/fast_paths.py) "
                        "and record the measured seconds (200: seconds_200_epochs); 0 = skip")
    p.add_argument("--solo-paths", default="eager,fast,fast_bf16,bound",
                   help="paths of --full-epochs: eager, fast, fast_bf16, bound, eager_bf16, bound_bf16")
    p.add_argument("--quick", action="store_true", help="1 round, 1 timed step, no options (< 1 min on 2 cores)")
    p.add_argument("--out", help="write speed.json and speed.md into this folder")
    p.add_argument("--note", default="", help="load note for the markdown, e.g. 'contended: another job ran'")
    args = p.parse_args(argv)

    device = threads_and_device(p, args)
    gpu = device.type == "cuda"
    rounds = args.rounds if args.rounds is not None else 1 if args.quick else 5
    steps = args.steps if args.steps is not None else 20 if gpu else 1
    settle = args.settle if args.settle is not None else 3 if gpu else 1
    if rounds < 1 or steps < 1 or settle < 1:
        p.error("--rounds, --steps and --settle must be >= 1")
    options = [] if args.quick and args.options == "channels_last" else [o for o in args.options.split(",") if o]
    bad = set(options) - set(OPTIONS)
    if bad:
        p.error(f"unknown option(s) {', '.join(sorted(bad))}; valid: {', '.join(OPTIONS)}")
    notes = []
    if any("bf16" in o for o in options) and not gpu and not native_bf16_cpu():
        notes.append("this CPU has no native bf16: bf16 figures are oneDNN's emulation.")
    if gpu:
        torch.backends.cudnn.benchmark = True        # lt_kit's default cudnn_benchmark=True

    params, data, root, data_desc, tmp = prepare_data(args.data_root, str(device), args.batch_size)
    n_train = len(data.train.images)
    per_round = settle + steps
    if per_round > len(data.train):
        p.error(f"--settle + --steps = {per_round} exceeds the {len(data.train)} steps of one epoch")
    lr = lr_at(1, **{k: params[k] for k in ("lr", "schedule", "epochs", "warmup_epochs", "milestones",
                                             "lr_factor")})
    info = dataset_info("cifar10_lt")
    loaders = {False: data.train, True: TensorLoader(
        data.train.images, data.train.labels, batch_size=args.batch_size, mean=info.mean, std=info.std,
        train=True, pad=info.pad, seed=params["seed"], channels_last=True)}
    ref = reference_loader(root, data.subset_indices, batch_size=args.batch_size, workers=args.workers,
                           device=device)

    groups = {"": Group(device, lr)}
    for o in options:
        groups[o] = Group(device, lr, **OPTIONS[o])
    batches = {cl: next(iter(loaders[cl])) for cl in (False, True)}
    # (b) first: its untimed steps (needed every round for its fresh workers) also warm up the model of (a), (c)
    variants = {"b": ("b", "", f"(b) reference: torchvision + PIL + DataLoader({args.workers} workers)"),
                "a": ("a", "", "(a) lt_kit TensorLoader + train_one_epoch"),
                "c": ("c", "", "(c) bound: one in-memory batch, fwd + bwd + step")}
    for o in options:
        variants[f"a_{o}"] = ("a", o, f"(a) lt_kit, {o}")
        variants[f"c_{o}"] = ("c", o, f"(c) bound, {o}")
    log(f"speed: {n_train} training images ({data_desc}), batch {args.batch_size}, device {device}, "
        f"{rounds} rounds x ({settle} untimed + {steps} timed) steps, paths: {', '.join(variants)}")

    times: dict[str, list[float]] = {k: [] for k in variants}
    t_start = time.perf_counter()
    with CpuLoad() as load:
        for rnd in range(1, rounds + 1):
            for name, (path, grp, _) in variants.items():
                g = groups[grp]
                if path == "a":
                    dt = run_a(g, loaders[g.channels_last], rnd, settle, steps, device)
                elif path == "b":
                    dt = run_b(g, ref, rnd, settle, steps, device)
                else:
                    dt = run_c(g, batches[g.channels_last], rnd, settle, steps, device)
                times[name].append(steps * args.batch_size / dt)
                log(f"  round {rnd} {name:<16} {times[name][-1]:8.1f} images/s")
            for name, loader in (("a_input", loaders[False]), ("b_input", ref))[:2 if args.input_batches else 0]:
                dt = input_only(loader, args.input_batches, device)
                times.setdefault(name, []).append(args.input_batches * args.batch_size / dt)
                log(f"  round {rnd} {name:<16} {times[name][-1]:8.1f} images/s (input path alone)")
    solo_res = {}
    if args.full_epochs:
        from fast_paths import solo
        for path in args.solo_paths.split(","):
            cl = DEFAULTS["channels_last"]            # whole runs in lt_kit's default memory format
            try:
                solo_res[path] = {**solo(path, {**params, "channels_last": cl}, loaders[cl], data.train_counts,
                                         device, args.full_epochs), "channels_last": cl}
            except Exception as e:                    # one failing path must not lose the others' figures
                solo_res[path] = {"error": repr(e)}
                log(f"  solo {path:<10} FAILED: {e!r}")
                continue
            log(f"  solo {path:<10} {args.full_epochs} epochs: {solo_res[path]['seconds']:.1f} s, "
                f"{solo_res[path]['img_s']:.0f} images/s")
            if args.out:                              # what is done so far survives a later crash or time limit
                Path(args.out).mkdir(parents=True, exist_ok=True)
                (Path(args.out) / "solo_partial.json").write_text(json.dumps(solo_res, indent=1))
    elapsed = time.perf_counter() - t_start
    if tmp is not None:
        tmp.cleanup()

    labels = {k: v[2] for k, v in variants.items()}
    labels.update(a_input=f"(a) input path alone: TensorLoader, {args.input_batches} batches, no training",
                  b_input=f"(b) input path alone: DataLoader({args.workers} workers) from a fresh iterator, "
                          f"{args.input_batches} batches, no training")
    res: dict = {"variants": {k: {"label": labels[k], "img_s": round(median(v), 2), "best_img_s": round(max(v), 2),
                                  "rounds": [round(x, 2) for x in v]} for k, v in times.items()}}
    m = {k: v["img_s"] for k, v in res["variants"].items()}
    paired = lambda x, y: round(median([p / q for p, q in zip(times[x], times[y])]), 3)  # noqa: E731
    out = {"a_img_s": m["a"], "b_img_s": m["b"], "c_img_s": m["c"],
           "a_over_c": round(m["a"] / m["c"], 3), "a_over_b": round(m["a"] / m["b"], 3),
           "a_over_c_paired": paired("a", "c"), "a_over_b_paired": paired("a", "b"),
           "a_over_c_best": round(max(times["a"]) / max(times["c"]), 3),
           "a_over_b_best": round(max(times["a"]) / max(times["b"]), 3)}
    if args.input_batches:
        out["a_input_img_s"], out["b_input_img_s"] = m["a_input"], m["b_input"]
        # if the input path ran serially before each step, a/c could not fall below this
        out["a_over_c_input_bound"] = round(1 / (1 + m["c"] / m["a_input"]), 4)
    for o in options:
        out[f"a_{o}_img_s"], out[f"c_{o}_img_s"] = m[f"a_{o}"], m[f"c_{o}"]
        out[f"a_over_c_{o}"] = round(m[f"a_{o}"] / m[f"c_{o}"], 3)
        out[f"a_{o}_over_b"] = round(m[f"a_{o}"] / m["b"], 3)
        out[f"{o}_speedup_a"] = round(m[f"a_{o}"] / m["a"], 3)
        out[f"{o}_speedup_c"] = round(m[f"c_{o}"] / m["c"], 3)
        out[f"{o}_speedup_c_paired"] = paired(f"c_{o}", "c")
    for o in ("bf16_channels_last",):              # bf16's own gain, at the same memory format
        if o in options and "channels_last" in options:
            out["bf16_cl_over_cl_a"] = round(m["a_bf16_channels_last"] / m["a_channels_last"], 3)
            out["bf16_cl_over_cl_c"] = round(m["c_bf16_channels_last"] / m["c_channels_last"], 3)
    if solo_res:
        out["solo"] = solo_res
        out[f"seconds_{args.full_epochs}_epochs"] = {k: v["seconds"] for k, v in solo_res.items() if "seconds" in v}
        if args.full_epochs != 200:          # a projection, labelled as one: the measured epochs times 200 / N
            out["seconds_200_epochs_projected"] = {
                "from_measured_epochs": args.full_epochs,
                "note": "projected, not measured: training only, no evaluation",
                **{k: round(v["seconds"] * 200 / args.full_epochs, 1) for k, v in solo_res.items() if "seconds" in v}}
    if "seconds_200_epochs" not in out:     # no solo 200-epoch run here: the campaign's measured rows, if any
        measured = campaign_measured(torch.device(device).type)
        if measured:
            out["seconds_200_epochs"] = measured
            out["seconds_200_epochs_source"] = ("measured: the campaign's recorded 200-epoch rows on this kind of "
                                                "device (training epochs summed over resumptions; bench/campaign.py)")
    if "compile" in options:
        out["compile_first_step_s"] = round(groups["compile"].first_step_s, 1)
    info_m = machine_info(device)
    out.update({"batch_size": args.batch_size, "train_images": n_train, "data": data_desc, "device": str(device),
                "device_name": info_m.get("gpu", info_m["cpu"]),
                "rounds": rounds, "steps": steps, "settle": settle, "workers": args.workers,
                "threads": args.threads, "elapsed_s": round(elapsed, 1), "others_cores": load.others_cores,
                "goals": {"a_over_c": 0.95, "a_over_b": 1.3}, "notes": notes})
    res = {**out, **res, "machine": info_m}
    if args.out:
        argv_ = sys.argv[1:] if argv is None else argv
        command = shlex.join(["python", "bench/speed.py", *argv_])
        if args.data_root:
            command = command.replace(shlex.quote(args.data_root), "$CIFAR")
        md = markdown(res, info_m, contention_note(load.others_cores, args.note), command)
        res["command"] = command
        for path in write_results(args.out, "speed", res, md):
            log(f"wrote {path}")
    print(json.dumps({k: v for k, v in out.items() if k != "notes"}))
    return res


if __name__ == "__main__":
    main()
