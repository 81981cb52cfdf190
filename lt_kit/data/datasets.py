"""Long-tailed data sets: the profile, the seeded subset, and the in-memory (tensor) data sets.

Every dataset fact lives in the ``DATASETS`` table below; nothing else in lt_kit branches on a dataset
name. Image-file data sets (ImageNet-LT, iNaturalist 2018, Places-LT, your own folder) are in ``imagefiles.py``.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lt_kit.errors import LtKitError
from lt_kit.folders import missing_dirs, remove_created

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# iNaturalist 2018's own statistics (facebookresearch/classifier-balancing, data/dataloader.py)
INAT_MEAN, INAT_STD = (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one data set. ``recipe`` holds the reference's training settings for it; they fill
    every parameter the user leaves at ``None`` (see ``config.resolve``)."""
    num_classes: int | None           # None: read from the data (``folder``)
    kind: str                         # "tensor": whole split in memory; "files": images read per batch
    image_size: int
    pad: int = 4                      # random-crop padding, pixels
    mean: tuple = CIFAR_MEAN
    std: tuple = CIFAR_STD
    recipe: dict = field(default_factory=dict)
    lists: dict | None = None         # list-file data sets: split -> default file name in data_root (no "val":
    #                                   the validation split comes from the training list, ``val_per_class``)
    color_jitter: bool = True         # image files: the reference's colour jitter in the training transform


DATASETS: dict[str, DatasetInfo] = {
    # The embedded default: scikit-learn's 1,797 real 8x8 handwritten digits (shipped inside the package, no
    # download), upsampled to 16x16 RGB. 50 images per class are held out as a balanced test set; the rest
    # (~125/class) is cut to a long tail. Thresholds are scaled down so that many/medium/few all exist. Batch 32
    # (13 steps an epoch on the 405-image subset): at 64 a seed alone moved TDE's gain over De-confound from -1.2
    # to +6.2 points (five seeds, one thread); at 32 it stayed within +0.8 to +3.4 (docs/results.md, the demo).
    "digits_lt": DatasetInfo(10, "tensor", 16, pad=2, mean=(0.3058,) * 3, std=(0.3190,) * 3,
                             recipe=dict(imbalance_ratio=20.0, max_per_class=120, epochs=30, batch_size=32,
                                         lr=0.05, milestones=[20, 26], warmup_epochs=3, alpha=1.0,
                                         many_threshold=60, few_threshold=15)),
    "cifar10_lt": DatasetInfo(10, "tensor", 32, recipe=dict(alpha=1.0)),
    "cifar100_lt": DatasetInfo(100, "tensor", 32, recipe=dict(alpha=1.5)),
    "imagenet_lt": DatasetInfo(1000, "files", 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                               recipe=dict(arch="resnext50_32x4d", batch_size=512, epochs=90, schedule="cosine",
                                           mu_schedule="lr_scaled", alpha=3.0, imbalance_ratio=1.0),
                               lists=dict(train="ImageNet_LT_train.txt", val="ImageNet_LT_val.txt",
                                          test="ImageNet_LT_test.txt")),
    # iNaturalist 2018 (8,142 classes, 437,513 training images), the Decoupling lists: papers report on its val
    # list, so that list is lt_kit's test split; a validation split can only come from the training list.
    # Recipe: facebookresearch/classifier-balancing config/iNaturalist18/feat_unifrom.yaml (ResNet-50, batch 512,
    # 90 epochs, lr 0.2 cosine to 0, weight decay 1e-4); transforms from its data/dataloader.py (own mean/std, no
    # colour jitter). TDE's authors publish no iNaturalist setting: lt_kit takes the lr-scaled direction momentum
    # their code applies to every non-CIFAR data set (classification/run_networks.py) and alpha 3.0, the value
    # of both of their 90-epoch large-scale configs (ImageNet-LT, Places-LT). cRT / LWS: classifier-balancing's
    # config/iNaturalist18/cls_crt.yaml and cls_lws.yaml (cRT 30 epochs; weight decay 1e-4 for both).
    "inat2018": DatasetInfo(8142, "files", 224, mean=INAT_MEAN, std=INAT_STD, color_jitter=False,
                            recipe=dict(arch="resnet50", batch_size=512, epochs=90, lr=0.2, schedule="cosine",
                                        weight_decay=1e-4, mu_schedule="lr_scaled", alpha=3.0, imbalance_ratio=1.0,
                                        crt_epochs=30, crt_weight_decay=1e-4, lws_weight_decay=1e-4),
                            lists=dict(train="iNaturalist18_train.txt", test="iNaturalist18_val.txt")),
    # Places-LT (365 classes, 62,500 training images, 4,980 down to 5 per class; val 20 and test 100 per class),
    # zhmiao/OpenLongTailRecognition-OLTR's lists. Recipe: TDE's own KaihuaTang/Long-Tailed-Recognition.pytorch
    # classification/config/Places_LT/causal_norm.yaml (ResNeXt-50 from scratch, batch 512, 90 epochs, lr 0.2
    # cosine, weight decay 5e-4, alpha 3.0). OLTR's ImageNet-pretrained ResNet-152 start is a preset
    # (params/places_lt_resnet152_frozen.yaml). cRT / LWS: classifier-balancing's config/Places_LT/cls_crt.yaml and
    # cls_lws.yaml (lr 0.1 at batch 256).
    "places_lt": DatasetInfo(365, "files", 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             recipe=dict(arch="resnext50_32x4d", batch_size=512, epochs=90, lr=0.2, schedule="cosine",
                                         mu_schedule="lr_scaled", alpha=3.0, imbalance_ratio=1.0,
                                         crt_lr=0.1, crt_batch_size=256, lws_lr=0.1, lws_batch_size=256),
                             lists=dict(train="Places_LT_train.txt", val="Places_LT_val.txt",
                                        test="Places_LT_test.txt")),
    "folder": DatasetInfo(None, "files", 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          recipe=dict(arch="resnet32", imbalance_ratio=1.0)),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise LtKitError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def long_tail_counts(num_classes: int, max_per_class: int, imbalance_ratio: float) -> list[int]:
    """The reference's exponential profile: ``int(max * (1/ratio) ** (i / (C - 1)))`` for class i.

    Class 0 is the head, class C-1 the tail (natural label order, as in LDAM/BBN/the reference)."""
    if not imbalance_ratio >= 1:
        raise LtKitError(f"imbalance_ratio must be >= 1 (max/min class size), got {imbalance_ratio}")
    if num_classes == 1:
        return [int(max_per_class)]
    r = 1.0 / imbalance_ratio
    return [int(max_per_class * r ** (i / (num_classes - 1))) for i in range(num_classes)]


def long_tail_indices(labels: np.ndarray, counts: list[int], seed: int = 0) -> np.ndarray:
    """Per class (in label order), shuffle that class's indices and keep the first ``counts[c]``.

    One ``RandomState(seed)`` drives all shuffles, so seed 0 reproduces LDAM/BBN's ``np.random.seed(0)``
    subset. (The reference leaves this unseeded; lt_kit makes it explicit and saves the indices.)"""
    rng = np.random.RandomState(seed)
    out = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if n > len(idx):
            raise LtKitError(f"class {c} has {len(idx)} images but the profile asks for {n}")
        rng.shuffle(idx)
        out.append(idx[:n])
    return np.concatenate(out)


@dataclass
class TensorSplit:
    """A whole split in memory: uint8 images (N, 3, H, W) and int64 labels (N,)."""
    images: torch.Tensor
    labels: torch.Tensor


# --------------------------------------------------------------------------- CIFAR (torchvision's layout)
_CIFAR = {
    "cifar10_lt": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                       test=["test_batch"], meta="batches.meta", label_key="labels", names_key="label_names",
                       tv="CIFAR10", url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100_lt": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                        label_key="fine_labels", names_key="fine_label_names", tv="CIFAR100",
                        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated or overwritten file
        raise LtKitError(f"{path} is corrupt ({type(e).__name__}: {e}); delete its folder and download "
                         "again (download=true)") from None


def _download_cifar(name: str, root: Path) -> None:
    """torchvision's own download and md5 check; a failure (no network, a proxy, a full disk) is one line that
    says where to put the data by hand, and leaves nothing behind: torchvision creates ``root`` before it
    reaches the network, so the folders this call created and the archive it began are removed again."""
    import torchvision.datasets as tvd
    spec = _CIFAR[name]
    new_dirs = missing_dirs(root)
    archive = root / spec["url"].rsplit("/", 1)[-1]          # where torchvision writes the download
    new_files = [] if archive.exists() else [archive]
    try:
        getattr(tvd, spec["tv"])(str(root), train=True, download=True)
    except BaseException as e:       # Ctrl-C mid-download too: take back what this call created, then report
        remove_created(new_dirs, new_files)
        if not isinstance(e, Exception):
            raise
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LtKitError(f"could not download {name[:-3]} ({why}); without a network, put {spec['folder']}/ in "
                         f"{root} (unpacked from {spec['url']}), or point data_root at the folder that holds "
                         "it") from None


def read_cifar(name: str, data_root: str | Path, *,
               download: bool = False) -> tuple[TensorSplit, TensorSplit, list[str]]:
    """Read CIFAR-10/100 from torchvision's on-disk layout under ``data_root`` (md5 not checked, so
    re-packed copies load too). Returns (train, test, class_names)."""
    spec, root = _CIFAR[name], Path(data_root).expanduser()
    folder = root / spec["folder"]
    files = spec["train"] + spec["test"] + [spec["meta"]]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and download:
        _download_cifar(name, root)
        missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        what = "is missing" if len(missing) == len(files) else f"is incomplete (missing {', '.join(missing)})"
        raise LtKitError(f"{folder} {what}. Set download=true to fetch {name[:-3]} with torchvision, or point "
                         f"data_root at the folder that contains {spec['folder']}/")

    def load(parts: list[str]) -> TensorSplit:
        data, labels = [], []
        for p in parts:
            d = _unpickle(folder / p)
            try:
                x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(d[spec["label_key"]], dtype=np.int64)
            except (KeyError, ValueError) as e:
                raise LtKitError(f"{folder / p} is not a CIFAR batch ({e}); delete {folder} and download "
                                 "again") from None
            if len(x) != len(y):
                raise LtKitError(f"{folder / p} is corrupt: {len(x)} images but {len(y)} labels")
            data.append(x)
            labels.append(y)
        return TensorSplit(torch.from_numpy(np.concatenate(data)), torch.from_numpy(np.concatenate(labels)))

    names = list(_unpickle(folder / spec["meta"]).get(spec["names_key"], []))
    return load(spec["train"]), load(spec["test"]), names


# --------------------------------------------------------------------------- embedded digits
def read_digits(test_per_class: int = 50) -> tuple[TensorSplit, TensorSplit, list[str]]:
    """scikit-learn's handwritten digits as 16x16 RGB uint8; a fixed, balanced held-out test split."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) * (255 / 16))[:, None]                 # (N, 1, 8, 8)
    x = torch.nn.functional.interpolate(x, size=16, mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = np.asarray(d.target, dtype=np.int64)
    rng = np.random.RandomState(1234)                      # fixed: the test split never depends on `seed`
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:test_per_class] for c in range(10)])
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    yt = torch.from_numpy(y)
    return (TensorSplit(x[train_idx], yt[train_idx]), TensorSplit(x[test_idx], yt[test_idx]),
            [str(i) for i in range(10)])


def balanced_val_indices(labels: np.ndarray, num_classes: int, per_class: int, seed: int, *,
                         too_few: str = "error") -> np.ndarray:
    """A balanced validation split drawn first from the training pool: per class (label order), shuffle
    that class's indices with ``RandomState(seed)`` and keep the first ``per_class``. lt_kit's departure
    from the reference (which selects on the test set): strengths and epochs are chosen on these images,
    and the long-tailed subset is drawn from the rest.

    A class with ``per_class`` images or fewer cannot give them and still train: ``too_few="error"`` (CIFAR,
    digits) refuses; ``"skip"`` (list data sets, whose tail classes hold 2 to 5 images) takes none from it, so
    it trains on all its images and has no validation image (NaN, left out of the validation split's means)."""
    rng = np.random.RandomState(seed)
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class:
            if too_few == "skip":
                continue
            raise LtKitError(f"class {c} has {len(idx)} training images, too few to hold out val_per_class="
                             f"{per_class} and still train on it; lower val_per_class")
        rng.shuffle(idx)
        out.append(idx[:per_class])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def load_tensor_dataset(name: str, data_root: str | Path, *, imbalance_ratio: float, max_per_class: int | None,
                        subset_seed: int, download: bool = False, val_per_class: int = 0) -> dict:
    """Load a ``kind == "tensor"`` data set and cut its training split to the long-tailed profile.

    With ``val_per_class > 0`` a balanced validation split is drawn first from the training pool
    (:func:`balanced_val_indices`) and the long-tailed subset from the rest, so the head class of a full
    CIFAR class has ``5000 - val_per_class`` images (``max_per_class = 0`` means "all that is left").
    Returns a dict with ``train``/``val``/``test`` (TensorSplit; ``val`` None without a split),
    ``train_counts``, ``class_names``, ``subset_indices`` and ``val_indices`` (indices into the full
    training split, saved with the run)."""
    info = dataset_info(name)
    train, test, names = read_digits() if name == "digits_lt" else read_cifar(name, data_root, download=download)
    labels = train.labels.numpy()
    val_idx = balanced_val_indices(labels, info.num_classes, val_per_class, subset_seed) if val_per_class else None
    pool = np.setdiff1d(np.arange(len(labels)), val_idx) if val_idx is not None else np.arange(len(labels))
    full_counts = np.bincount(labels[pool], minlength=info.num_classes)
    max_per_class = int(max_per_class or full_counts.max())
    counts = long_tail_counts(info.num_classes, max_per_class, imbalance_ratio)
    idx = pool[long_tail_indices(labels[pool], counts, subset_seed)]
    sub = TensorSplit(train.images[idx], train.labels[idx])
    val = TensorSplit(train.images[val_idx], train.labels[val_idx]) if val_idx is not None else None
    return dict(train=sub, val=val, test=test, train_counts=counts,
                class_names=names or [str(i) for i in range(len(counts))], subset_indices=idx, val_indices=val_idx)
