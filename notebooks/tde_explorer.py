# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # TDE alpha explorer
#
# Moves alpha, the strength of the Total Direct Effect, over a finished run. Every alpha is scored from the
# run's cached test features (`features.pt`), without the backbone, so the slider redraws in milliseconds.
#
# ```bash
# papermill notebooks/tde_explorer.ipynb out.ipynb -p run_dir runs/train     # static figures only
# jupyter lab notebooks/tde_explorer.ipynb                                   # with the live slider
# ```

# %% tags=["parameters"]
run_dir: str = "runs/train"  # a run folder written by train.ipynb or `python -m lt_kit train`
alpha_max: float = 3.0  # right end of the slider and the sweep
sweep_step: float = 0.05  # alpha spacing of the static sweep

# %%
from lt_kit.explorer import AlphaExplorer
from lt_kit.notebook import EXPLORER_PARAMS, check_parameters, save_and_show

p = check_parameters(globals(), EXPLORER_PARAMS)  # stops here on an unknown or ill-typed parameter
explorer = AlphaExplorer.from_run(p["run_dir"], alpha_max=p["alpha_max"])
print(explorer.describe())

# %% [markdown]
# ## Accuracy against alpha
# Overall, many, medium and few (reference thresholds), plus head / tail split at the median training count,
# which stays meaningful where the reference thresholds leave a split empty (CIFAR-10-LT has no few-shot
# class). Marked: the best overall alpha, the run's preset alpha and the reference's rule of thumb (the
# alpha at which the mean of alpha times cos(x, d_hat) over the test features is 1).

# %%
sweep = explorer.sweep(p["sweep_step"])
print(explorer.sweep_summary(sweep))
save_and_show({"tde_sweep": explorer.sweep_figure(sweep)}, explorer.run_dir / "figures")

# %% [markdown]
# ## The slider
# Per-class accuracy (head to tail), the splits beside their alpha-0 values, and how many test images are
# predicted as each class: TDE takes predictions away from the head classes as alpha grows. Click the
# handle and use the arrow keys for single steps. Without a widget front end (papermill, a static viewer)
# the figure shows the preset alpha.

# %%
explorer.show(save=explorer.run_dir / "figures" / "tde_alpha_panel.png")

# %% [markdown]
# ## Update time
# One slider move: the metrics at the new alpha, the redraw and the PNG, measured in this kernel.

# %%
explorer.benchmark()
