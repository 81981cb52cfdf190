"""Turn resolved parameters into a device, loaders and a model: the one place that wires data to code."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lt_kit.data.datasets import dataset_info, load_tensor_dataset
from lt_kit.data.loaders import TensorLoader
from lt_kit.errors import LtKitError, worker_error
from lt_kit.maths.seeds import stream_seed
from lt_kit.models import LTModel
from lt_kit.pretrained import preset


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; anything else is checked for availability."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise LtKitError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LtKitError(f"device {name!r} asked for but CUDA is not available; use device=auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise LtKitError("device 'mps' asked for but MPS is not available; use device=auto or cpu")
    return dev


@dataclass
class Data:
    train: object                 # iterable of (x, y) batches with len() and set_epoch()
    test: object
    val: object | None
    train_counts: list[int]
    class_names: list[str]
    subset_indices: object        # numpy indices into the full training split
    val_indices: object = None    # numpy indices of the validation split drawn from the training pool, if any
    group_counts: list | None = None   # what many / medium / few are counted on, if not train_counts (a list data
    #                                    set's training list before its validation hold-out: FeatureCache.group_counts)


def _cpus() -> int:
    """CPU cores this process may use (more DataLoader workers than that only add a torch warning)."""
    import os
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _smaller_batch(n: int) -> int:
    """A power of two giving about 8 steps per epoch over ``n`` images (at least 1)."""
    b = 1
    while b * 2 <= max(1, n // 8):
        b *= 2
    return b


class _FileLoader:
    """A DataLoader (workers, pinned memory) that yields batches on ``device`` and supports ``set_epoch``."""

    def __init__(self, dataset, *, batch_size, train, num_workers, device, seed, rank=0, world_size=1,
                 channels_last=False):
        self.sampler = torch.utils.data.DistributedSampler(dataset, world_size, rank, shuffle=train, seed=seed,
                                                           drop_last=train) if world_size > 1 else None
        self.seed, g = seed, torch.Generator().manual_seed(seed)
        self.generator = g
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size // world_size, shuffle=train and self.sampler is None,
            sampler=self.sampler, num_workers=min(num_workers, _cpus()), pin_memory=device.type == "cuda",
            drop_last=train, generator=g)   # workers restart each epoch, seeded from (seed, epoch): resumable;
        # (no more workers than cores: more only add a torch warning and wait for a core)
        self.device, self.channels_last = device, channels_last
        if train and len(self.loader) == 0:
            raise LtKitError(f"batch_size {batch_size} is larger than the training split ({len(dataset)} images); "
                             f"set a smaller one, e.g. --set batch_size={_smaller_batch(len(dataset))} (the recipe: "
                             "`python -m lt_kit params --dataset NAME`)")

    def set_epoch(self, epoch: int) -> None:
        """Seed this epoch's order from (seed, epoch), so a resumed run sees the same batches."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.generator.manual_seed(stream_seed(self.seed, epoch))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        try:
            for x, y in self.loader:
                yield (x.to(self.device, non_blocking=True).contiguous(memory_format=fmt),
                       y.to(self.device, non_blocking=True))
        except LtKitError as e:         # raised in a worker: torch wraps it in the worker's traceback
            raise worker_error(e) from None


def build_data(params: dict, device: torch.device, rank: int = 0, world_size: int = 1) -> Data:
    """Loaders for the training split (long-tailed) and the balanced test split (and val, if any)."""
    info = dataset_info(params["dataset"])
    bs, seed, cl = params["batch_size"], params["seed"], params["channels_last"]
    from lt_kit.training.distributed import DistInfo, local_batch_size
    local_batch_size(bs, DistInfo(rank, world_size))        # LtKitError unless the global batch splits evenly
    pre = preset(params)                # pretrained weights bring their input size and normalisation
    if info.kind == "tensor":
        d = load_tensor_dataset(params["dataset"], params["data_root"], imbalance_ratio=params["imbalance_ratio"],
                                max_per_class=params["max_per_class"], subset_seed=params["subset_seed"],
                                download=params["download"], val_per_class=params["val_per_class"])
        mean, std = (pre["mean"], pre["std"]) if pre else (info.mean, info.std)     # tensor images keep their size
        kw = dict(batch_size=bs, mean=mean, std=std, pad=info.pad, seed=seed, channels_last=cl)
        from lt_kit.data.augment import make_policy
        train = TensorLoader(d["train"].images.to(device), d["train"].labels.to(device), train=True,
                             rank=rank, world_size=world_size, policy=make_policy(params), cutout=params["cutout"],
                             **kw)
        test = TensorLoader(d["test"].images.to(device), d["test"].labels.to(device), train=False, **kw)
        val = TensorLoader(d["val"].images.to(device), d["val"].labels.to(device), train=False, **kw) \
            if d["val"] is not None else None
        return Data(train, test, val, d["train_counts"], d["class_names"], d["subset_indices"], d["val_indices"])
    from lt_kit.data.imagefiles import load_file_dataset
    d = load_file_dataset(params, info, pre)
    kw = dict(batch_size=bs, num_workers=params["num_workers"], device=device, seed=seed, channels_last=cl)
    train = _FileLoader(d["train"], train=True, rank=rank, world_size=world_size, **kw)
    test = _FileLoader(d["test"], train=False, **kw)
    val = _FileLoader(d["val"], train=False, **kw) if d["val"] is not None else None
    return Data(train, test, val, d["train_counts"], d["class_names"], d["subset_indices"], d["val_indices"],
                d["group_counts"])


class _Pass:
    """One augmented pass of a tensor training split, as an iterable of batches (``TensorLoader.augmented_pass``)."""

    def __init__(self, loader: TensorLoader, seed: int):
        self.loader, self.seed = loader, seed

    def __iter__(self):
        return self.loader.augmented_pass(torch.Generator().manual_seed(self.seed))


class _SeededPass:
    """An image-file pass whose random transforms are seeded: in the main process (``num_workers=0``) from
    ``seed``, in workers from the loader's generator (seeded the same)."""

    def __init__(self, loader, seed: int):
        self.loader, self.seed = loader, seed

    def __iter__(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            yield from self.loader


def train_pass_loaders(params: dict, device: torch.device, data: Data) -> list:
    """The loaders of the training-feature cache: the long-tailed training subset in order, every image, once
    per pass. ``train_feature_passes`` = 1: the images as the test split sees them (no augmentation); K > 1: K
    passes with the training crop and flip, pass k seeded by (seed, k), so the cache is the same on a re-run."""
    k = params["train_feature_passes"]
    seeds = [stream_seed(params["seed"], i, "train_features") for i in range(k)]
    tr = data.train
    if isinstance(tr, TensorLoader):
        plain = TensorLoader(tr.images, tr.labels, batch_size=tr.batch_size, mean=tr.mean, std=tr.std, train=False,
                             pad=tr.pad, channels_last=tr.channels_last)
        return [plain] if k == 1 else [_Pass(plain, s) for s in seeds]
    from lt_kit.data.imagefiles import ImageListDataset, preprocess, test_transform, train_transform
    pre = preprocess(params, dataset_info(params["dataset"]), preset(params))
    samples = tr.loader.dataset.samples
    kw = dict(batch_size=params["batch_size"], train=False, num_workers=params["num_workers"], device=device,
              channels_last=params["channels_last"])
    if k == 1:
        return [_FileLoader(ImageListDataset(samples, test_transform(pre)), seed=seeds[0], **kw)]
    return [_SeededPass(_FileLoader(ImageListDataset(samples, train_transform(pre)), seed=s, **kw), s) for s in seeds]


def build_model(params: dict, num_classes: int) -> LTModel:
    """The backbone + head named by ``params`` (on the CPU; move it with ``.to(device)``), its backbone frozen
    with ``freeze_backbone``. Pretrained weights are loaded by ``fit`` when a run starts (``load_pretrained``):
    a resumed or scored run takes its weights from its own checkpoint."""
    model = LTModel(params["arch"], num_classes, head=params["head"], num_heads=params["num_heads"],
                    cn_tau=params["tau"], gamma=params["gamma"], norm_scale=params["norm_scale"])
    if params.get("freeze_backbone"):
        model.freeze_backbone()
    return model
