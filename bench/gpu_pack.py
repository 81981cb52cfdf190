"""Pack the CIFAR-10 images a CIFAR-10-LT run can read into ``gpu_pack/`` (ignored by git), small enough to
travel to a lent GPU machine (the working tree that travels is capped at 64 MiB; the whole of CIFAR-10 is 92 MB
even in ../shared/data's lossless codec).

lt_kit's long-tailed subsets are nested: every class is shuffled once by ``RandomState(subset_seed)`` and cut
to its count, so the ratio-100 and ratio-50 subsets lie inside the ratio-10 one. The pack keeps, for
``subset_seed`` 0, the coded streams of those 20,431 training images and of all 10,000 test images (about
46 MB), the labels of all 50,000 training images, and a SHA-256 of the kept pixels. ``bench/gpu_unpack.py``
rebuilds torchvision's folder from it with the left-out training images as zeros, which no run at ratio
>= ``--min-ratio`` ever reads (it checks that too), so runs read the data through lt_kit's normal path.

    python bench/gpu_pack.py --shared ../shared/data --cifar $CIFAR     # then carry gpu_pack
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lt_kit.data import long_tail_counts, long_tail_indices, read_cifar  # noqa: E402


def subset_streams(z, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The coded byte streams of images ``keep`` (sorted), with new offsets."""
    off, streams = z["offsets"], z["streams"]           # read once: each z[...] re-reads the archive
    parts = [streams[off[i]:off[i + 1]] for i in keep]
    lens = np.array([len(p) for p in parts], np.int64)
    return np.concatenate(parts), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="../shared/data (codec + npz)")
    ap.add_argument("--cifar", required=True, help="an unpacked copy (holding cifar-10-batches-py), to check pixels")
    ap.add_argument("--min-ratio", type=float, default=10, help="the smallest imbalance ratio the runs use")
    ap.add_argument("--out", default=str(ROOT / "gpu_pack"))
    a = ap.parse_args()
    shared, out = Path(a.shared), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, names = read_cifar("cifar10_lt", a.cifar)
    labels = train.labels.numpy()
    keep = np.sort(long_tail_indices(labels, long_tail_counts(10, 5000, a.min_ratio), 0))
    ztr, zte = dict(np.load(shared / "cifar10_train.npz")), dict(np.load(shared / "cifar10_test.npz"))
    if not (np.array_equal(ztr["labels"], labels) and np.array_equal(zte["labels"], test.labels.numpy())):
        sys.exit("the coded labels differ from the unpacked copy: unpack ../shared/data again")
    s_tr, o_tr = subset_streams(ztr, keep)
    pixels = np.concatenate([train.images.numpy()[keep], test.images.numpy()])          # (N, 3, 32, 32)
    np.savez(out / "cifar10_lt_pack.npz", train_streams=s_tr, train_offsets=o_tr, keep=keep,
             train_labels=labels.astype(np.uint8), test_streams=zte["streams"], test_offsets=zte["offsets"],
             test_labels=zte["labels"], label_names=np.array("\n".join(names)),
             sha256=np.array(hashlib.sha256(pixels.tobytes()).hexdigest()), min_ratio=np.array(a.min_ratio))
    shutil.copy(shared / "unpack.py", out / "codec.py")                 # the decoder (numpy only)
    shutil.copy(shared / "cifar10_model.npz", out / "cifar10_model.npz")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out}: {len(keep)} training + {len(test.labels)} test images, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
