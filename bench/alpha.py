"""The cost of evaluating one TDE alpha: lt_kit's cached path against the reference's full backbone pass.

  lt_kit: a ``FeatureCache`` of the test split (10,000 x 128 features, 100 classes; synthetic but shaped like
      a trained causal-norm model's: ReLU-positive class-clustered features, a momentum direction near their
      mean, a causal-norm weight whose norms grow with class size). ``AlphaEvaluator`` precomputes Eq. 8's
      two alpha-free terms once; each alpha is then one multiply-add, an argmax and the shot metrics. Timed:
      ``.metrics(alpha)`` (what the notebook slider calls: many/medium/few/overall, head/tail, per-class,
      prediction counts) and the lean path (``.logits`` + argmax + ``shot_accuracy``).
  reference: per alpha, a ResNet-32 forward pass over the 10,000 test images (eval mode, no grad, batches
      of 256, images already normalised in memory, so this is a lower bound on the reference's cost: its
      PIL test loader is not counted), then the TDE logits and the same metrics. The backbone is timed on
      ``--ref-images`` images and scaled linearly to the whole split.

Prints progress to stderr and one JSON line to stdout last.

    python bench/alpha.py --out bench/results
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CpuLoad, contention_note, machine_info, machine_lines, median, threads_and_device, write_results  # noqa: E402

from lt_kit.data.datasets import long_tail_counts  # noqa: E402
from lt_kit.evaluation.features import FeatureCache
from lt_kit.evaluation.summary import AlphaEvaluator, one_thread  # noqa: E402
from lt_kit.maths.metrics import shot_accuracy  # noqa: E402
from lt_kit.maths.tde import tde_logits  # noqa: E402
from lt_kit.models import LTModel  # noqa: E402


def synthetic_cache(n: int = 10_000, dim: int = 128, classes: int = 100, seed: int = 0) -> FeatureCache:
    """A feature cache shaped like a trained CIFAR-100-LT (ratio 100) causal-norm model's test split.

    Features are ReLU-positive: a sparse class centre plus a component every class shares, plus noise. The
    direction is their mean (times ~1/(1 - mu), as the momentum sum). The weight leans towards the shared
    component the more training images a class had: the head bias TDE removes. At alpha 0 this gives about
    59/39/14% many/medium/few (39% overall); alpha 1 lifts few-shot to about 62%."""
    g = torch.Generator().manual_seed(seed)
    counts = long_tail_counts(classes, 500, 100.0)
    labels = torch.arange(classes).repeat_interleave(n // classes)
    labels = torch.cat([labels, torch.arange(n - len(labels))])                   # any remainder, class 0..
    centres = torch.randn(classes, dim, generator=g).abs() * (torch.rand(classes, dim, generator=g) < 0.3)
    shared = torch.rand(dim, generator=g)
    features = torch.relu(0.6 * centres[labels] + shared + torch.randn(n, dim, generator=g))
    direction = features.mean(0) * 10
    headness = torch.tensor(counts, dtype=torch.float32).log() / np.log(max(counts))   # 1 (head) .. ~0.26
    weight = centres + 0.5 * headness[:, None] * shared + 0.3 * torch.randn(classes, dim, generator=g)
    return FeatureCache(features, labels, weight, direction, "causal_norm", 2, 16.0, 1 / 32, counts,
                        [f"c{i}" for i in range(classes)], 100, 20)


def time_per_call(fn, alphas, repeat: int) -> float:
    """Median seconds of ``fn(alpha)`` over ``repeat`` passes of the alpha list."""
    fn(alphas[0])
    per = []
    for _ in range(repeat):
        for a in alphas:
            t = time.perf_counter()
            fn(a)
            per.append(time.perf_counter() - t)
    return median(per)


def markdown(res: dict, info: dict, contention: str, command: str) -> str:
    r, sec = res, res["seconds"]
    ms = lambda s: f"{1000 * s:.2f} ms"  # noqa: E731
    meets = lambda s: "yes" if s <= r["goal_ms"] / 1000 else "no"  # noqa: E731
    rows = [("`AlphaEvaluator.metrics(alpha)`: logits, many/medium/few/overall, head/tail, per-class, "
             "prediction counts", "metrics"),
            ("lean: `AlphaEvaluator.logits(alpha)` + argmax + `shot_accuracy`", "lean"),
            ("`AlphaEvaluator.logits(alpha)` only", "logits")]
    lines = ["# One TDE alpha: cached features vs a backbone pass per alpha", "",
             f"Test split: {r['n']:,} x {r['dim']} features, {r['classes']} classes (synthetic, CIFAR-100-LT "
             f"ratio-100 shapes), ResNet-32. Each figure: median per alpha over {r['alphas']} alphas, median "
             f"over {r['repeat']} interleaved passes.", "",
             *machine_lines(info, contention), f"- Command: `{command}`", "",
             f"| path | per alpha, {r['threads']} threads | per alpha, 1 thread | <= {r['goal_ms']:g} ms |",
             "|---|---:|---:|:---:|"]
    for desc, k in rows:
        lines.append(f"| lt_kit {desc} | {ms(sec[k])} | {ms(sec[k + '_1t'])} | "
                     f"{meets(sec[k])} / {meets(sec[k + '_1t'])} |")
    lines += [f"| reference: ResNet-32 over {r['n']:,} images (timed on {r['ref_images']}, scaled) + TDE "
              f"logits + metrics | {r['reference_s']:.2f} s | | no |", "",
              f"- One-off `AlphaEvaluator` set-up (the two alpha-free terms): {ms(r['setup_s'])}",
              f"- Reference parts: backbone {r['ref_backbone_s']:.2f} s (in-memory tensors, no PIL test loader: "
              f"a lower bound), TDE logits {ms(r['ref_tde_s'])}, metrics {ms(r['ref_metrics_s'])}",
              f"- Speed-up, reference / `metrics`: {r['speedup_metrics']:,.0f}x with {r['threads']} threads, "
              f"{r['speedup_metrics_1thread']:,.0f}x with 1 thread",
              "- '1 thread': the per-alpha call wrapped in `torch.set_num_threads(1)` (restored after). Each "
              "per-alpha op touches ~1M floats; with several threads each op waits until all of them are "
              "scheduled, which on a busy machine costs about a scheduler time slice per op."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="test images")
    p.add_argument("--dim", type=int, default=128, help="feature dimension (ResNet-32: 128)")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--alphas", type=int, default=50, help="distinct alphas timed")
    p.add_argument("--repeat", type=int, default=4, help="passes over the alphas")
    p.add_argument("--ref-images", type=int, default=1024, help="images the reference backbone is timed on")
    p.add_argument("--device", default="cpu", help="device of the reference backbone pass (the cache is on CPU)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write alpha.json and alpha.md into this folder")
    p.add_argument("--note", default="", help="load note for the markdown")
    args = p.parse_args(argv)
    device = threads_and_device(p, args)
    alphas = [float(a) for a in np.random.RandomState(0).permutation(np.linspace(0.0, 3.0, args.alphas))]

    with CpuLoad() as load:
        cache = synthetic_cache(args.n, args.dim, args.classes)
        t = time.perf_counter()
        ev = AlphaEvaluator(cache)
        setup_s = time.perf_counter() - t
        labels, counts = cache.labels.numpy(), cache.train_counts

        def lean(a):
            return shot_accuracy(ev.logits(a).argmax(1).numpy(), labels, counts, cache.many_threshold,
                                 cache.few_threshold)
        def single(fn):
            def run(a):
                with one_thread():
                    return fn(a)
            return run
        # interleaved passes, so a burst of background load hits every variant alike
        fns = {"logits": ev.logits, "lean": lean, "metrics": ev.metrics,
               "logits_1t": single(ev.logits), "lean_1t": single(lean), "metrics_1t": single(ev.metrics)}
        per = {k: [] for k in fns}
        for _ in range(args.repeat):
            for k, fn in fns.items():
                per[k].append(time_per_call(fn, alphas, 1))
        sec = {k: median(v) for k, v in per.items()}
        logits_s, lean_s, metrics_s = sec["logits"], sec["lean"], sec["metrics"]
        print("alpha: setup %.2f ms; per alpha (ms): " % (1000 * setup_s)
              + ", ".join(f"{k} {1000 * v:.3f}" for k, v in sec.items()), file=sys.stderr, flush=True)

        # the reference: the backbone per alpha (timed on a slice, scaled), then TDE logits and metrics
        torch.manual_seed(0)
        model = LTModel("resnet32", args.classes).to(device).eval()
        images = torch.randn(args.ref_images, 3, 32, 32, device=device)
        with torch.no_grad():
            model.backbone(images[:256])                                          # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            for i in range(0, args.ref_images, 256):
                model.backbone(images[i:i + 256])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            ref_backbone_s = (time.perf_counter() - t) * args.n / args.ref_images
        ref_tde_s = time_per_call(lambda a: tde_logits(cache.features, cache.weight, cache.direction, a,
                                                       cn_tau=cache.cn_tau, gamma=cache.gamma,
                                                       num_heads=cache.num_heads), alphas[:5], 1)
        preds = ev.predict(1.0)
        ref_metrics_s = time_per_call(lambda a: shot_accuracy(preds, labels, counts), alphas[:5], 1)
        reference_s = ref_backbone_s + ref_tde_s + ref_metrics_s
        print(f"reference per alpha: {reference_s:.2f} s (backbone {ref_backbone_s:.2f} s from "
              f"{args.ref_images} images)", file=sys.stderr, flush=True)

    res = {"metrics_ms": round(1000 * metrics_s, 3), "lean_ms": round(1000 * lean_s, 3),
           "metrics_1thread_ms": round(1000 * sec["metrics_1t"], 3), "lean_1thread_ms": round(1000 * sec["lean_1t"], 3),
           "threads": torch.get_num_threads(),
           "reference_s": round(reference_s, 3), "speedup_metrics": round(reference_s / metrics_s, 1),
           "speedup_lean": round(reference_s / lean_s, 1), "goal_ms": 5.0,
           "speedup_metrics_1thread": round(reference_s / sec["metrics_1t"], 1),
           "logits_ms": round(1000 * logits_s, 3), "logits_1thread_ms": round(1000 * sec["logits_1t"], 3),
           "setup_ms": round(1000 * setup_s, 2),
           "n": args.n, "dim": args.dim, "classes": args.classes, "alphas": args.alphas, "repeat": args.repeat,
           "ref_images": args.ref_images, "others_cores": load.others_cores}
    full = {**res, "seconds": sec, "metrics_s": metrics_s, "lean_s": lean_s, "logits_s": logits_s, "setup_s": setup_s,
            "ref_backbone_s": ref_backbone_s, "ref_tde_s": ref_tde_s, "ref_metrics_s": ref_metrics_s,
            "machine": machine_info(device)}
    if args.out:
        command = shlex.join(["python", "bench/alpha.py", *(sys.argv[1:] if argv is None else argv)])
        full["command"] = command
        md = markdown(full, full["machine"], contention_note(load.others_cores, args.note), command)
        for path in write_results(args.out, "alpha", full, md):
            print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(res))
    return full


if __name__ == "__main__":
    main()
