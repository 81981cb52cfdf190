"""What else moves the CPU training step? Candidates measured side by side, interleaved in rounds, against the
bound in the same precision (bf16 autocast on the backbone, channels_last: the CPU's fastest lt_kit setting).

Variants, each a ResNet-32 + causal-norm step at batch 256 on the reference's CIFAR-10-LT split:
  bound           one batch already in memory, forward + backward + SGD (PyTorch's default CPU SGD: a loop
                  over tensors); no input path, no direction update
  sgd_foreach     the bound with ``SGD(foreach=True)``
  sgd_fused       the bound with ``SGD(fused=True)`` (what ``fast_step`` uses)
  bn_fp32         the bound with every BatchNorm run in float32 (input cast up, output cast back)
  one_thread      the bound on 1 intra-op thread (the images/s of one core; the others use --threads)
  eager           ``train_one_epoch`` over the tensor loader: fit's own path (crops, flips, direction update)
  fast            ``FastStep``: the whole step as one function on static buffers, fused SGD
``bound_fp32`` and ``eager_fp32``: the same in float32 (channels_last), for bf16's own speed-up; and, with
``--compile``, the bound under ``torch.compile`` (mode default, then max-autotune-no-cudagraphs),
timed after its compilation (reported separately).

    python bench/cpu_candidates.py --data-root $CIFAR --rounds 3 --steps 4 --out bench/results/cpu_candidates
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CpuLoad, contention_note, machine_info, median  # noqa: E402
from speed import prepare_data  # noqa: E402

from lt_kit.data.loaders import TensorLoader  # noqa: E402
from lt_kit.methods import make_criterion  # noqa: E402
from lt_kit.models import LTModel  # noqa: E402
from lt_kit.precision import autocast  # noqa: E402
from lt_kit.training.fast_step import FastStep, make_optimizer  # noqa: E402
from lt_kit.training.loop import train_one_epoch  # noqa: E402

VARIANTS = ("bound", "sgd_foreach", "sgd_fused", "bn_fp32", "one_thread", "eager", "fast", "bound_fp32", "eager_fp32")


class _Float32Norm(torch.nn.Module):
    """A BatchNorm run in float32 whatever the autocast dtype of its input."""

    def __init__(self, bn: torch.nn.BatchNorm2d):
        super().__init__()
        self.bn = bn

    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return self.bn(x.float()).to(x.dtype)


def _bn_fp32(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(module, name, _Float32Norm(child))
        else:
            _bn_fp32(child)


def build(variant: str, params: dict, loader: TensorLoader, counts, compile_mode: str | None = None):
    """A fresh model (seed 0) and a function that runs ``n`` steps of ``variant`` (``_fp32``: in float32)."""
    bf16 = variant not in ("bound_fp32", "eager_fp32")
    variant = variant.removesuffix("_fp32") if not bf16 else variant
    torch.manual_seed(0)
    model = LTModel("resnet32", 10).to(memory_format=torch.channels_last)
    if variant == "bn_fp32":
        _bn_fp32(model.backbone)
    crit = make_criterion(params, counts, 1)
    dev = torch.device("cpu")
    if variant in ("eager", "fast"):             # whole epochs of a loader holding n batches' images
        small = {}

        def part(n):
            if n not in small:
                small[n] = TensorLoader(loader.images[:n * 256], loader.labels[:n * 256], batch_size=256,
                                        mean=loader.mean, std=loader.std, train=True, pad=loader.pad, seed=0,
                                        channels_last=True)
            return small[n]
        if variant == "eager":
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            return lambda n: train_one_epoch(model, part(n), opt, mu=0.9, epoch=1, bf16=bf16, criterion=crit)["loss"]
        runners = {}

        def fast(n):
            if n not in runners:
                runners[n] = FastStep(model, part(n), make_optimizer(model, params, dev), bf16=bf16)
            return runners[n].run_epoch(1, 0.1, 0.9, crit, phase=("ce",))["loss"]
        return fast
    kw = {"sgd_foreach": {"foreach": True}, "sgd_fused": {"fused": True}}.get(variant, {"foreach": False})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, **kw)
    x, y = next(iter(loader))
    fwd = torch.compile(model, mode=compile_mode) if compile_mode else model

    def run(n):
        for _ in range(n):
            with autocast(dev, bf16):
                logits, _ = fwd(x)
            loss = crit(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return float(loss)
    return run


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", help="folder holding cifar-10-batches-py (default: fake data, real shapes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--compile", action="store_true", help="also the compiled bound (two modes; minutes each)")
    ap.add_argument("--out", help="folder for cpu_candidates.json / .md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    params, data, _, data_desc, _tmp = prepare_data(args.data_root, "cpu", 256)
    tr = data.train
    loader = TensorLoader(tr.images, tr.labels, batch_size=256, mean=tr.mean, std=tr.std, train=True, pad=tr.pad,
                          seed=0, channels_last=True)
    variants = [v for v in args.variants.split(",") if v]
    runs = {v: build(v, params, loader, data.train_counts) for v in variants}
    compile_s = {}
    if args.compile:
        for mode in ("default", "max-autotune-no-cudagraphs"):
            name = f"compile_{mode}"
            runs[name] = build("bound", params, loader, data.train_counts, compile_mode=mode)
            t = time.perf_counter()
            runs[name](1)                                   # compilation happens here
            compile_s[name] = round(time.perf_counter() - t, 1)
            variants.append(name)
    for v in variants:                                      # one untimed warm-up step each
        if v == "one_thread":
            torch.set_num_threads(1)
        runs[v](1)
        torch.set_num_threads(args.threads)
    times = {v: [] for v in variants}
    with CpuLoad() as load:
        for _ in range(args.rounds):
            for v in variants:
                torch.set_num_threads(1 if v == "one_thread" else args.threads)
                t = time.perf_counter()
                runs[v](args.steps)
                times[v].append(time.perf_counter() - t)
            torch.set_num_threads(args.threads)
    img_s = {v: round(256 * args.steps / median(ts), 1) for v, ts in times.items()}
    res = {"machine": machine_info(torch.device("cpu")), "data": data_desc, "threads": args.threads,
           "rounds": args.rounds, "steps": args.steps, "precision": "bf16 autocast (backbone), channels_last",
           "img_s": img_s, "vs_bound": {v: round(s / img_s["bound"], 3) for v, s in img_s.items()}
           if "bound" in img_s else None, "compile_seconds": compile_s,
           "contention": contention_note(load.others_cores), "command": "python " + " ".join(
               a.replace(args.data_root, "$CIFAR") if args.data_root else a for a in sys.argv)}
    print(json.dumps(res, indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cpu_candidates.json").write_text(json.dumps(res, indent=1))
        lines = [f"# CPU step candidates, bf16 + channels_last ({res['machine']['cpu']}, {args.threads} threads)", "",
                 f"Command: `{res['command']}`  ", f"Data: {data_desc}; {res['contention']}.", "",
                 "| variant | images/s (median of rounds) | vs bound |", "|---|---:|---:|"]
        lines += [f"| {v} | {s} | {res['vs_bound'][v] if res['vs_bound'] else '–'} |" for v, s in img_s.items()]
        if compile_s:
            lines += ["", "Compilation (first step): " + ", ".join(f"{k} {v} s" for k, v in compile_s.items())]
        (out / "cpu_candidates.md").write_text("\n".join(lines) + "\n")
    return res


if __name__ == "__main__":
    main()
