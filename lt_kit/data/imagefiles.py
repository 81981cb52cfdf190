"""Image-file data sets, read per batch by a DataLoader with workers: ImageNet-LT's list files and your
own class-per-subfolder folder. Transforms are the reference's ImageNet-LT ones (``classification/data/dataloader.py``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from lt_kit.data.datasets import long_tail_counts, long_tail_indices
from lt_kit.errors import LtKitError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def train_transform(size: int, mean, std) -> T.Compose:
    """The reference's ImageNet-LT training augmentation at crop ``size``."""
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
                      T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0),
                      T.ToTensor(), T.Normalize(mean, std)])


def test_transform(size: int, mean, std) -> T.Compose:
    """Resize to size*256/224 (256 at 224), centre crop ``size``: the reference's test transform."""
    return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])


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


def read_list_file(list_file: str | Path, image_root: str | Path) -> list[tuple[str, int]]:
    """Parse ImageNet-LT's ``relative/path label`` lines; every listed image must exist."""
    list_file, root = Path(list_file).expanduser(), Path(image_root).expanduser()
    if not list_file.is_file():
        raise LtKitError(f"list file {list_file} not found; give train_list/val_list/test_list or put "
                         f"ImageNet_LT_{{train,val,test}}.txt in data_root")
    samples, missing = [], []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise LtKitError(f"{list_file}:{n}: expected 'relative/path label', got {line!r}")
        path = root / parts[0]
        if not path.is_file():
            missing.append(parts[0])
        samples.append((str(path), int(parts[1])))
    if missing:
        raise LtKitError(f"{list_file} names {len(missing)} image(s) missing under {root}, e.g. {missing[0]}; "
                         "check data_root (the image root the list paths are relative to)")
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


def _imagenet_lt(params: dict, root: Path, num_classes: int):
    """The three ImageNet-LT list files (val optional unless ``select_best`` or ``eval_every`` needs it),
    none of train and val the test list, labels checked."""
    given = {s: params[f"{s}_list"] for s in ("train", "val", "test")}
    lists = {s: Path(given[s]).expanduser() if given[s] else root / f"ImageNet_LT_{s}.txt" for s in given}
    for split in ("train", "val"):
        if split == "train" or given["val"] or lists["val"].is_file():
            _not_the_test_set(f"{split}_list", lists[split], "test_list", lists["test"])
    train, test = read_list_file(lists["train"], root), read_list_file(lists["test"], root)
    if given["val"] or lists["val"].is_file():          # a val list named explicitly must exist
        val = read_list_file(lists["val"], root)
    elif params["select_best"]:
        raise LtKitError(f"select_best picks the best epoch on the val list, but {lists['val']} is not there; "
                         "give val_list=PATH or set select_best=false")
    elif params["eval_every"]:
        raise LtKitError(f"eval_every scores the val list every {params['eval_every']} epochs, but {lists['val']} "
                         "is not there; give val_list=PATH or set eval_every=0")
    else:
        val = None
    for split, samples in (("train", train), ("val", val or []), ("test", test)):
        bad = [lbl for _, lbl in samples if not 0 <= lbl < num_classes]
        if bad:
            raise LtKitError(f"label {bad[0]} in the {split} list {lists[split]} is outside 0..{num_classes - 1}")
    return train, val, test


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


def load_file_dataset(params: dict, info) -> dict:
    """Build the train/val/test ``ImageListDataset``s for ``imagenet_lt`` or ``folder``.

    ImageNet-LT keeps its 1000 classes whatever the lists hold (class ids are ImageNet's; a class with no
    test image has NaN accuracy and is left out of the split means). ``folder`` counts its classes from
    the train tree. Every check (files, classes, labels) runs here, before any training step.
    """
    size = params["image_size"] or info.image_size
    tr, te = train_transform(size, info.mean, info.std), test_transform(size, info.mean, info.std)
    root = Path(params["data_root"]).expanduser()
    if params["dataset"] == "imagenet_lt":
        num_classes = info.num_classes
        train, val, test = _imagenet_lt(params, root, num_classes)
        names = [str(i) for i in range(num_classes)]
    else:
        names, train, val, test = _folder(params, root)
        num_classes = len(names)
    labels = np.array([s[1] for s in train])
    counts = np.bincount(labels, minlength=num_classes).tolist()
    idx = np.arange(len(train))
    if params["imbalance_ratio"] > 1 and params["dataset"] == "imagenet_lt":
        raise LtKitError("imagenet_lt is long-tailed already: leave imbalance_ratio at 1 (its lists fix the subset)")
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
                subset_indices=idx)
