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
# # Compare runs
#
# A long-tail result moves by one to two points with the training seed and with the subset drawn, so a
# result here is a **group** of runs: the same parameters except `seed`, on the same training subset.
# Each group shows n, mean and sample standard deviation over its seeds, for each evaluation its runs hold:
# `softmax` (alpha 0), `tde` (the run's alpha) and each post-hoc method recorded in `metrics.json`.
# The same table comes from `python -m lt_kit compare 'runs/*'`.
#
# ```bash
# papermill notebooks/compare.ipynb runs/compare.ipynb -y '{runs: ["runs/c10_s*", "runs/c10_lin_s*"]}'
# ```

# %% tags=["parameters"]
runs: list = ["runs/*"]  # run folders or globs (relative paths: from the repository root)
evaluation: str = "tde"  # what the figures show: softmax (alpha 0), tde (the run's alpha) or a post-hoc method
strict: bool = False  # stop at a folder that cannot be compared instead of skipping it
out_dir: str = "runs/compare"  # folder for the table (compare.md, compare.csv) and the figures

# %%
from lt_kit.views.notebook import COMPARE_PARAMS, base_dir, check_parameters, resolve_path, save_and_show
from lt_kit.views.report import compare_runs

p = check_parameters(globals(), COMPARE_PARAMS)  # stops here on an unknown or ill-typed parameter
out = resolve_path(p["out_dir"])
comparison = compare_runs(p["runs"], strict=p["strict"], base=base_dir(), exclude=[out])
comparison.save(out)
print(comparison.text())

# %% [markdown]
# ## Per class and per split
# Per-class test accuracy against the class's training images, one line per group with a band of one
# standard deviation over its seeds; then many / medium / few / overall with error bars of one standard
# deviation, each seed a dot. Both are saved as PNG files in `out_dir`.

# %%
save_and_show(comparison.figures(comparison.check_evaluation(p["evaluation"])), out)
