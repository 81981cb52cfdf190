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
# # The momentum direction d_hat
#
# During training, lt_kit keeps a moving sum of the batch-mean features, d (the reference's rule: d becomes
# mu times d plus the batch mean). TDE treats its direction d_hat as the head bias every feature carries and
# removes alpha times each feature's component along it (per classifier head). This notebook looks at d_hat
# in a finished run.
#
# ```bash
# papermill notebooks/momentum_direction.ipynb out.ipynb -p run_dir runs/train
# ```

# %% tags=["parameters"]
from typing import Optional  # for the annotations below (papermill reads Optional[T], not T | None)

run_dir: str = "runs/train"  # a run folder written by train.ipynb or `python -m lt_kit train`
alpha: Optional[float] = None  # TDE strength for the logit shift; None: the run's alpha
max_points: int = 2000  # test features drawn in the 2-D projection

# %%
import lt_kit.views.plots as plots
from lt_kit.views.notebook import DIRECTION_PARAMS, check_parameters, load_run, save_and_show

p = check_parameters(globals(), DIRECTION_PARAMS)  # stops here on an unknown or ill-typed parameter
run = load_run(p["run_dir"])
tde_alpha = run.alpha if p["alpha"] is None else p["alpha"]
cache = run.cache
print(f"{run.path}: {len(cache.labels)} test features of dimension {cache.features.shape[1]}, "
      f"{cache.num_heads} heads, {cache.head} head, alpha {tde_alpha:g}")

# %% [markdown]
# ## Which classes does d_hat point at?
# The cosine between d_hat and each class's classifier weight (per head, averaged over heads), against the
# class's training count. Head classes dominate the batch means d accumulates, so their weights tend to
# align with it; TDE lowers a class's logit in proportion to this alignment.

# %%
alignment = plots.class_alignment(cache)
save_and_show({"direction_alignment": plots.alignment_figure(alignment, cache.train_counts, cache.class_names)},
              run.figures)

# %% [markdown]
# ## How much of each test feature lies along d_hat
# cos(x, d_hat) for the test images of the many-, medium- and few-shot classes: the factor that alpha scales.

# %%
save_and_show({"direction_cos_by_split": plots.cos_split_figure(plots.cos_by_split(cache))}, run.figures)

# %% [markdown]
# ## The test features in two dimensions
# Horizontal: cos(x, d_hat); vertical: the main remaining variation, orthogonal to d_hat.

# %%
projection = plots.direction_projection(cache, max_points=p["max_points"])
save_and_show({"direction_projection": plots.projection_figure(projection, cache.train_counts, cache.class_names)},
              run.figures)

# %% [markdown]
# ## What TDE does to each class's logit
# Each class's mean logit over all test images, without TDE and at alpha; the right panel is the change.

# %%
shift = plots.logit_shift(cache, tde_alpha)
save_and_show({"direction_logit_shift": plots.logit_shift_figure(shift, cache.train_counts, tde_alpha,
                                                                 cache.class_names)}, run.figures)
