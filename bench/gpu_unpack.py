"""Rebuild ``cifar-10-batches-py/`` from ``gpu_pack/`` (see ``bench/gpu_pack.py``) on the GPU machine.

Decodes the kept images in parallel worker processes with ../shared/data's codec, checks their SHA-256, and
writes torchvision's pickles: the training images left out of the pack are zeros (no run at ratio >=
the pack's ``min_ratio`` reads them; ``bench/accuracy_parallel.py`` checks every run's saved subset).

    python bench/gpu_unpack.py --pack gpu_pack --out /tmp/cifar [--workers 14]
"""
from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

_codec, _model = None, None


def _init(pack: str) -> None:
    global _codec, _model
    sys.path.insert(0, pack)
    import codec                                          # ../shared/data/unpack.py, copied by gpu_pack.py
    _codec, _model = codec, dict(np.load(Path(pack) / "cifar10_model.npz"))


def _decode(args) -> np.ndarray:
    streams, offsets = args
    return _codec.decode(streams, offsets, _model)       # (n, 32, 32, 3) uint8, HWC


def decode_all(pack: Path, streams: np.ndarray, offsets: np.ndarray, workers: int) -> np.ndarray:
    n = len(offsets) - 1
    cuts = np.linspace(0, n, workers + 1).astype(int)
    jobs = [(streams[offsets[a]:offsets[b]], offsets[a:b + 1] - offsets[a]) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    with ProcessPoolExecutor(len(jobs), initializer=_init, initargs=(str(pack),)) as ex:
        parts = list(ex.map(_decode, jobs))
    return np.concatenate(parts).transpose(0, 3, 1, 2)   # (n, 3, 32, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", default="gpu_pack")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=8)
    a = ap.parse_args()
    t = time.time()
    pack = Path(a.pack).resolve()
    z = np.load(pack / "cifar10_lt_pack.npz")
    kept = decode_all(pack, z["train_streams"], z["train_offsets"], a.workers)
    test = decode_all(pack, z["test_streams"], z["test_offsets"], a.workers)
    digest = hashlib.sha256(np.concatenate([kept, test]).tobytes()).hexdigest()
    if digest != str(z["sha256"]):
        sys.exit(f"decoded pixels differ from the packed checksum ({digest} != {z['sha256']})")
    labels = z["train_labels"].astype(int)
    train = np.zeros((len(labels), 3, 32, 32), np.uint8)
    train[z["keep"]] = kept
    folder = Path(a.out) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rows = train.reshape(len(train), 3072)
    for b in range(5):
        sl = slice(b * 10000, (b + 1) * 10000)
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({"data": rows[sl], "labels": labels[sl].tolist()}, f, protocol=4)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": test.reshape(len(test), 3072), "labels": z["test_labels"].astype(int).tolist()}, f, protocol=4)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": str(z["label_names"]).split("\n")}, f, protocol=4)
    np.save(Path(a.out) / "kept_train_indices.npy", z["keep"])
    print(f"{folder}: {len(kept)} of {len(labels)} training images (rest zero, min ratio {float(z['min_ratio']):g}), "
          f"{len(test)} test images, checksum ok, {time.time() - t:.1f} s", flush=True)


if __name__ == "__main__":
    main()
