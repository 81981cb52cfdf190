# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.text_representation.format_version
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Train: causal-norm classifier, momentum direction, De-confound-TDE
#
# Trains on a long-tailed split, evaluates the balanced test split without TDE (De-confound, alpha 0) and
# with it (De-confound-TDE at the preset alpha), and writes a run folder (parameters, checkpoint, feature
# cache, `metrics.json`, figures under `figures/`). The parameters cell below is the whole interface:
# leave a value at `None` to take the data set's reference recipe.
#
# ```bash
# mkdir -p runs   # papermill writes its output notebook first
# # the embedded digits (no download), into runs/train
# papermill notebooks/train.ipynb runs/train.ipynb
# # the reference CIFAR-10-LT ResNet-32 recipe, into runs/train_cifar10_lt (CIFAR is fetched if data/ lacks it)
# papermill notebooks/train.ipynb runs/c10.ipynb -p dataset cifar10_lt
# # a preset from params/
# papermill notebooks/train.ipynb runs/c100.ipynb -f params/cifar100_lt_resnet32.yaml -p run_dir runs/c100
# ```
#
# An unknown or ill-typed parameter stops the notebook at the next cell with a clear error. Relative paths
# start where papermill runs, or at the repository root when JupyterLab runs the kernel in `notebooks/`.
#
# **Several GPUs:** train from a terminal with torchrun (data-parallel, rank 0 writes the run folder), then
# open `tde_explorer.ipynb` and `momentum_direction.ipynb` on that folder:
#
# ```bash
# torchrun --nproc_per_node=4 -m lt_kit train --params params/cifar10_lt_resnet32.yaml --run-dir runs/c10
# ```

# %% tags=["parameters"]
from typing import Optional  # for the annotations below (papermill reads Optional[T], not T | None)

dataset: str = "digits_lt"  # digits_lt (embedded, no download), cifar10_lt, cifar100_lt, imagenet_lt, inat2018, places_lt, folder
imbalance_ratio: Optional[float] = None  # largest / smallest training class, at least 1 (100 on CIFAR, 20 on digits)
arch: Optional[str] = None  # backbone: resnet32, resnet50, resnet152 or resnext50_32x4d
pretrained: Optional[str] = None  # backbone weights (empty: none): torchvision, torchvision:IMAGENET1K_V1, a .pt/.pth file or timm:NAME
freeze_backbone: Optional[bool] = None  # train the head only on the pretrained fixed features (BatchNorm in eval mode)
head: Optional[str] = None  # causal_norm (De-confound), linear (softmax baseline) or norm_linear (LDAM's cosine head)
loss: Optional[str] = None  # ce (default), logit_adjusted (loss_tau 1: Balanced Softmax) or ldam_drw (norm_linear head)
epochs: Optional[int] = None  # training epochs (200 on CIFAR, 30 on digits)
batch_size: Optional[int] = None  # images per step, all processes together
lr: Optional[float] = None  # peak SGD learning rate
alpha: Optional[float] = None  # TDE strength at test time; 0 is De-confound without TDE
device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:N, mps
seed: Optional[int] = None  # seed of initialisation, shuffling and augmentation
data_root: Optional[str] = None  # folder holding the data (torchvision layout for CIFAR); None: data
download: bool = True  # fetch CIFAR with torchvision when data_root lacks it
run_dir: Optional[str] = None  # the run folder this notebook writes; None: runs/train (digits), runs/train_<dataset>
overwrite: bool = False  # replace an earlier run in run_dir (it is moved aside, not deleted)
resume: bool = False  # continue the run in run_dir from its last complete epoch
# Every other lt_kit parameter (`python -m lt_kit params` explains each); None: the recipe's value.
max_per_class: Optional[int] = None  # images in the head class; 0: all of the largest class (folder: the smallest's size)
subset_seed: Optional[int] = None  # seed of the long-tailed subset and the val split (0 is LDAM/BBN's subset)
val_per_class: Optional[int] = None  # images per class held out from the training data as a balanced val split (0: none)
val_root: Optional[str] = None  # folder: class-per-subfolder balanced validation images (empty: none)
train_list: Optional[str] = None  # list data sets: train list file (empty: the data set's list in data_root)
val_list: Optional[str] = None  # list data sets: val list file, used to pick the best epoch (inat2018: none)
test_list: Optional[str] = None  # list data sets: test list file (inat2018: its val list, the reported set)
test_root: Optional[str] = None  # folder: class-per-subfolder balanced test images
image_size: Optional[int] = None  # image-file data sets: crop size in pixels (0: the data set's default)
num_workers: Optional[int] = None  # DataLoader workers for image-file data sets
num_heads: Optional[int] = None  # K, heads of the causal-norm classifier
tau: Optional[float] = None  # tau, the logit scale
gamma: Optional[float] = None  # gamma, the causal norm's class-agnostic term in the weight norm
norm_scale: Optional[float] = None  # norm_linear head: logit scale s (LDAM: 30)
loss_tau: Optional[float] = None  # logit_adjusted loss: tau of the log-prior shift (1 is Balanced Softmax)
ldam_max_margin: Optional[float] = None  # ldam_drw: the largest class margin (LDAM: 0.5)
drw_beta: Optional[float] = None  # ldam_drw: beta of the deferred class-balanced weights (0.9999)
augment: Optional[str] = None  # modern recipe: none (crop + flip), autoaugment (CIFAR-10 policy) or randaugment, per image
randaugment_ops: Optional[int] = None  # randaugment: operations per image (N, 2)
randaugment_magnitude: Optional[int] = None  # randaugment: magnitude bin M of 31 (9)
cutout: Optional[int] = None  # Cutout: side of one black square per image in pixels (0: off; 16 on CIFAR)
mixup_alpha: Optional[float] = None  # mixup Beta(alpha, alpha) (0: off); the direction then sees mixed features
cutmix_alpha: Optional[float] = None  # CutMix Beta(alpha, alpha) (0: off); with mixup on, each batch picks one
label_smoothing: Optional[float] = None  # label smoothing of the training loss (0: off)
sam_rho: Optional[float] = None  # SAM radius (0: off; 0.05 in DDC and GLMC), two passes per step
mu: Optional[float] = None  # momentum of the direction update (d becomes mu*d plus the batch-mean feature)
mu_schedule: Optional[str] = None  # fixed (CIFAR) or lr_scaled (ImageNet-LT)
momentum: Optional[float] = None  # SGD momentum
weight_decay: Optional[float] = None  # SGD weight decay, on every parameter
schedule: Optional[str] = None  # warmup_multistep or cosine (stepped once per epoch)
warmup_epochs: Optional[int] = None  # linear warm-up epochs (warmup_multistep)
milestones: Optional[list[int]] = None  # epochs at which lr is multiplied by lr_factor (warmup_multistep)
lr_factor: Optional[float] = None  # lr multiplier at each milestone
select_best: Optional[bool] = None  # keep the epoch best on the validation split (needs one); else the last epoch
eval_every: Optional[int] = None  # score the validation split every N epochs (needs one; 0: only after training)
train_feature_passes: Optional[int] = None  # cRT/LWS training-feature cache: passes over the subset (1: plain images; K above 1: augmented; 0: none)
crt_epochs: Optional[int] = None  # cRT: epochs of classifier re-training on cached features (Kang et al.: 10)
crt_lr: Optional[float] = None  # cRT: peak lr, cosine to 0 (Kang et al.: 0.2)
crt_batch_size: Optional[int] = None  # cRT: class-balanced batch (Kang et al.: 512)
crt_weight_decay: Optional[float] = None  # cRT: SGD weight decay (Kang et al.: 5e-4; 1e-4 on iNaturalist)
lws_epochs: Optional[int] = None  # LWS: epochs of learning the per-class scales (Kang et al.: 5)
lws_lr: Optional[float] = None  # LWS: peak lr, cosine to 0 (Kang et al.: 0.2)
lws_batch_size: Optional[int] = None  # LWS: class-balanced batch (Kang et al.: 512)
lws_weight_decay: Optional[float] = None  # LWS: SGD weight decay on the scales (Kang et al.: 5e-4; 1e-4 on iNaturalist)
many_threshold: Optional[int] = None  # many-shot: more than this many training images
few_threshold: Optional[int] = None  # few-shot: fewer than this many training images
channels_last: Optional[bool] = None  # channels-last memory format (default on: faster on the CPU and GPUs)
bf16: Optional[bool] = None  # bfloat16 autocast of the backbone (None: auto, the default, on for a CPU with native bf16; False: float32)
compile: Optional[bool] = None  # torch.compile the backbone
fast_step: Optional[bool] = None  # the whole step on static buffers, a CUDA graph on CUDA (tensor data, one process)
cudnn_benchmark: Optional[bool] = None  # let cuDNN pick the fastest convolution algorithms
sync_bn: Optional[bool] = None  # SyncBatchNorm across processes under torchrun

# %%
from lt_kit import fit, format_table
from lt_kit.views.notebook import check_train_parameters, save_and_show, train_figures

job = check_train_parameters(globals())  # stops here on an unknown or ill-typed parameter
job  # noqa: B018 - shown as the cell's output

# %% [markdown]
# ## Train
# The progress bar counts optimizer steps over all epochs; `log.txt` in the run folder has one line per epoch,
# and a checkpoint is written after every epoch (set `resume=True` to continue an interrupted run).

# %%
metrics = fit(job.params, job.run_dir, resume=job.resume, overwrite=job.overwrite)

# %% [markdown]
# ## Results on the balanced test split
# De-confound is the causal-norm classifier without TDE (alpha 0); De-confound-TDE removes the head
# direction's effect at the preset alpha. Many / medium / few follow the reference's thresholds (training
# images per class); `-` marks a split with no class.

# %%
print(format_table(metrics))

# %% [markdown]
# ## Training curves and per-class accuracy
# Saved as PNG files in the run folder's `figures/`.

# %%
save_and_show(train_figures(job.run_dir), job.run_dir / "figures")

# %% [markdown]
# Next: open `tde_explorer.ipynb` with `run_dir` set to this run to move alpha, and
# `momentum_direction.ipynb` to look at the direction TDE removes.
