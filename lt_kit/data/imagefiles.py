"""Image-file data sets, read per batch by a DataLoader with workers: list files (ImageNet-LT, iNaturalist 2018,
Places-LT: ``relative/path label`` lines) and your own class-per-subfolder folder. Transforms are the reference's
ImageNet-LT ones (``classification/data/dataloader.py``); iNaturalist's training transform has no colour jitter
(as the reference's), and pretrained weights bring their own size and normalisation (``Preprocess``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from lt_kit.data.datasets import balanced_val_indices, long_tail_counts, long_tail_indices
from lt_kit.errors import LtKitError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Preprocess:
    """Crop size, test-time resize and normalisation of an image-file data set."""
    size: int
    resize: int
    mean: tuple
    std: tuple
    jitter: bool = True


def preprocess(params: dict, info, preset: dict | None = None) -> Preprocess:
    """The data set's input, or the pretrained weights' ``preset`` (``pretrained.preset``): its normalisation
    always, its crop and resize unless ``image_size`` is set (then resize keeps the preset's ratio)."""
    if preset is None:
        size = params["image_size"] or info.image_size
        return Preprocess(size, int(round(size * 256 / 224)), info.mean, info.std, info.color_jitter)
    size = params["image_size"] or preset["crop"]
    return Preprocess(size, int(round(size * preset["resize"] / preset["crop"])), tuple(preset["mean"]),
                      tuple(preset["std"]), info.color_jitter)


def train_transform(p: Preprocess) -> T.Compose:
    """The reference's ImageNet-LT training augmentation at crop ``p.size`` (colour jitter when ``p.jitter``)."""
    jitter = [T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0)] if p.jitter else []
    return T.Compose([T.RandomResizedCrop(p.size), T.RandomHorizontalFlip(), *jitter,
                      T.ToTensor(), T.Normalize(p.mean, p.std)])


def test_transform(p: Preprocess) -> T.Compose:
    """Resize to ``p.resize`` (256 at 224), centre crop ``p.size``: the reference's test transform."""
    return T.Compose([T.Resize(p.resize), T.CenterCrop(p.size), T.ToTensor(), T.Normalize(p.mean, p.std)])


class ImageListDataset(torch.utils.data.Dataset):
    """``(path, label)`` samples; images are opened with PIL and converted to RGB."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples, self.transform = samples, transform
        self.labels = np.array([s[1] for s in samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except OSError as e:    # truncated or not an image: name the file (files are only checked for existence)
            raise LtKitError(f"cannot read image {path} ({type(e).__name__}: {e}); replace or remove it") from None
        return self.transform(img), label


def _few(items: list) -> str:
    return ", ".join(str(i) for i in items[:3]) + (", ..." if len(items) > 3 else "")


def read_list_file(list_file: str | Path, image_root: str | Path, num_classes: int | None = None,
                   split: str = "") -> list[tuple[str, int]]:
    """Parse ``relative/path label`` lines; every listed image must exist and, given ``num_classes``, every label
    be a class id. Each problem is one error at start naming the first few offenders."""
    list_file, root = Path(list_file).expanduser(), Path(image_root).expanduser()
    if not list_file.is_file():
        raise LtKitError(f"list file {list_file} not found; give train_list/val_list/test_list or put the data "
                         f"set's list files in data_root")
    samples, missing, bad = [], [], []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise LtKitError(f"{list_file}:{n}: expected 'relative/path label', got {line!r}")
        path, label = root / parts[0], int(parts[1])
        if not path.is_file():
            missing.append(parts[0])
        if num_classes is not None and not 0 <= label < num_classes:
            bad.append((n, label))
        samples.append((str(path), label))
    if missing:
        raise LtKitError(f"{list_file} names {len(missing)} image(s) missing under {root}, e.g. {_few(missing)}; "
                         "check data_root (the image root the list paths are relative to)")
    if bad:
        raise LtKitError(f"label {bad[0][1]} in the {split} list {list_file} is outside 0..{num_classes - 1} "
                         f"({len(bad)} line(s): {_few([f'line {n}: {lbl}' for n, lbl in bad])}); is it the list of "
                         "another data set?")
    if not samples:
        raise LtKitError(f"{list_file} lists no images")
    return samples


def _visible(p: Path) -> bool:
    """Skip hidden entries: ``.ipynb_checkpoints`` folders, macOS ``._x.jpg`` resource forks, ``.DS_Store``."""
    return not p.name.startswith(".")


def scan_folder(root: str | Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Class-per-subfolder images -> (class names in sorted order, samples). Every class folder must hold
    at least one image (searched recursively)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LtKitError(f"image folder {root} not found: expected one subfolder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
    if not classes:
        raise LtKitError(f"{root} has no class subfolders: put each class's images in a folder named after it")
    samples = []
    for c, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*")
                       if p.suffix.lower() in IMAGE_EXTS and _visible(p) and p.is_file())
        if not files:
            raise LtKitError(f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_EXTS))}); "
                             "add images or remove the folder")
        samples += [(str(p), c) for p in files]
    return classes, samples


def same_path(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name one file or folder (``~``, ``..`` and symlinks followed)."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _not_the_test_set(key: str, path: Path, test_key: str, test: Path) -> None:
    """A training or validation split read from the test set's own list or folder is refused: a choice made
    on it, or training on it, would report a test-chosen result."""
    if same_path(path, test):
        use = "training on the test images" if key in ("data_root", "train_list") else \
            "a validation split that is the test set"
        raise LtKitError(f"{key} {path} is the test set ({test_key} {test}): {use} reports a test-chosen result; "
                         f"point {key} at other images")


def _lists(params: dict, info, root: Path):
    """A list data set's train and test lists, and its validation split: the val list (the data set's own, or
    ``val_list``), else drawn from the training list with ``val_per_class``, else none. Neither train nor val
    may be the test list. Returns (train, val, test, val_indices): val_indices index the training list when the
    split was drawn from it."""
    given = {s: params[f"{s}_list"] for s in ("train", "val", "test")}
    lists = {s: Path(given[s]).expanduser() if given[s] else root / info.lists[s] if s in info.lists else None
             for s in given}
    k = params["val_per_class"]
    if k and given["val"]:
        raise LtKitError(f"val_list and val_per_class={k} both name a validation split; give one of them")
    from_list = not k and lists["val"] is not None and (bool(given["val"]) or lists["val"].is_file())
    _not_the_test_set("train_list", lists["train"], "test_list", lists["test"])
    if from_list:
        _not_the_test_set("val_list", lists["val"], "test_list", lists["test"])

    def read(split: str) -> list[tuple[str, int]]:
        return read_list_file(lists[split], root, info.num_classes, split)
    train, test = read("train"), read("test")
    if from_list:
        return train, read("val"), test, None
    if k:
        labels = np.array([s[1] for s in train])
        val_idx = balanced_val_indices(labels, info.num_classes, k, params["subset_seed"], too_few="skip")
        if not len(val_idx):
            raise LtKitError(f"val_per_class={k} leaves no validation image: every class of {lists['train']} has {k} "
                             "training images or fewer; lower val_per_class")
        return train, [train[i] for i in val_idx], test, val_idx
    where = f"{lists['val']} is not there" if lists["val"] is not None else f"{params['dataset']} has no val list"
    if params["select_best"]:
        raise LtKitError(f"select_best picks the best epoch on the val list, but {where}; give val_list=PATH or "
                         "val_per_class=N, or set select_best=false")
    if params["eval_every"]:
        raise LtKitError(f"eval_every scores the val list every {params['eval_every']} epochs, but {where}; give "
                         "val_list=PATH or val_per_class=N, or set eval_every=0")
    return train, None, test, None


def _folder(params: dict, root: Path):
    """Train and test class-per-subfolder trees with the same class folders."""
    if not params["test_root"]:
        raise LtKitError("dataset=folder needs test_root: a class-per-subfolder folder of balanced test images")
    for key in ("data_root", "val_root"):
        if params[key]:
            _not_the_test_set(key, Path(params[key]).expanduser(), "test_root", Path(params["test_root"]).expanduser())
    names, train = scan_folder(root)
    test_names, test = scan_folder(params["test_root"])
    if test_names != names:
        only_tr, only_te = sorted(set(names) - set(test_names)), sorted(set(test_names) - set(names))
        raise LtKitError(f"train ({root}) and test ({Path(params['test_root']).expanduser()}) class folders "
                         f"differ: only in train {only_tr}, only in test {only_te}; both need the same classes")
    val = None
    if params["val_root"]:
        val_names, val = scan_folder(params["val_root"])
        if val_names != names:
            raise LtKitError(f"val_root ({Path(params['val_root']).expanduser()}) class folders differ from the "
                             f"training folders ({root}); both need the same classes")
    return names, train, val, test


def load_file_dataset(params: dict, info, preset: dict | None = None) -> dict:
    """Build the train/val/test ``ImageListDataset``s for a list data set (``info.lists``) or ``folder``.

    A list data set keeps its class count whatever the lists hold (class ids are the data set's; a class with no
    test image has NaN accuracy and is left out of the split means). ``folder`` counts its classes from the train
    tree. ``preset``: the pretrained weights' input (``pretrained.preset``). Every check (files, classes, labels)
    runs here, before any training step.

    ``group_counts``: with a validation split drawn from the training list (``val_per_class``), the per-class
    counts of that list as published, on which many / medium / few are defined (the published splits are the
    full lists': a class of 101 listed images stays many-shot when 2 go to validation); else None, and the
    groups come from ``train_counts``.
    """
    pre = preprocess(params, info, preset)
    tr, te = train_transform(pre), test_transform(pre)
    root = Path(params["data_root"]).expanduser()
    val_idx = None
    if info.lists:
        num_classes = info.num_classes
        train, val, test, val_idx = _lists(params, info, root)
        names = [str(i) for i in range(num_classes)]
    else:
        names, train, val, test = _folder(params, root)
        num_classes = len(names)
    idx = np.arange(len(train))
    listed = np.bincount([s[1] for s in train], minlength=num_classes).tolist()   # the list before any hold-out
    if val_idx is not None:                # the training split is what the validation split leaves
        idx = np.setdiff1d(idx, val_idx)
        train = [train[i] for i in idx]
    labels = np.array([s[1] for s in train])
    counts = np.bincount(labels, minlength=num_classes).tolist()
    if params["imbalance_ratio"] > 1 and info.lists:
        raise LtKitError(f"{params['dataset']} is long-tailed already: leave imbalance_ratio at 1 (its lists fix the "
                         "subset)")
    if params["imbalance_ratio"] > 1:      # make a balanced folder long-tailed with the reference profile
        head = params["max_per_class"] or min(c for c in counts if c)
        counts = long_tail_counts(num_classes, head, params["imbalance_ratio"])
        short = [(names[c], have, want) for c, (have, want) in
                 enumerate(zip(np.bincount(labels, minlength=num_classes), counts)) if have < want]
        if short:
            raise LtKitError(f"class {short[0][0]!r} has {short[0][1]} training images but the long-tail profile "
                             f"asks for {short[0][2]}; lower max_per_class (0 = the smallest class's size)")
        idx = long_tail_indices(labels, counts, params["subset_seed"])
        train = [train[i] for i in idx]
    return dict(train=ImageListDataset(train, tr), test=ImageListDataset(test, te),
                val=ImageListDataset(val, te) if val else None, train_counts=counts, class_names=names,
                subset_indices=idx, val_indices=val_idx, group_counts=listed if val_idx is not None else None)
