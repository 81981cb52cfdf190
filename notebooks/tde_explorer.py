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
# # TDE alpha explorer, beside the usual post-hoc methods
#
# Moves the strength of a post-hoc method over a finished run: alpha of the Total Direct Effect (causal-norm
# runs), tau of logit adjustment (any run) and tau of tau-normalisation (linear-head runs). Every strength is
# scored from the run's cached test features (`features.pt`), without the backbone, so the slider redraws in
# milliseconds. When the run holds a validation split (trained with `val_per_class`), each method's strength
# is chosen on it; the best strength on the test set is shown only "for reading, chosen on test".
# `test_prior` re-weights the balanced test set to a test label distribution of the LADE / SADE protocol
# (backward50 .. uniform .. forward50): the sweep and the live view are drawn under it, and a control beside
# the slider changes it live. Its last entry, `estimated`, is the case where nobody knows the prior: a test set
# drawn to `estimate_from`, its prior estimated from its unlabelled images by `estimator` (EM or BBSE), the
# strength chosen on the validation split re-weighted to that estimate.
#
# ```bash
# papermill notebooks/tde_explorer.ipynb out.ipynb -p run_dir runs/train     # static figures only
# papermill notebooks/tde_explorer.ipynb out.ipynb -p run_dir runs/train -p test_prior forward50
# jupyter lab notebooks/tde_explorer.ipynb                                   # with the selector and slider
# ```

# %% tags=["parameters"]
run_dir: str = "runs/train"  # a run folder written by train.ipynb or `python -m lt_kit train`
method: str = ""  # the slider's first method: tde, logit_adjust, tau_norm; empty: tde, else the head's first
alpha_max: float = 3.0  # right end of the TDE slider and sweep (the other methods use their own range)
sweep_step: float = 0.05  # strength spacing of the static sweep
test_prior: str = "uniform"  # test label distribution: uniform, forward2..forward50, backward2..backward50 (LADE / SADE protocol), or estimated
estimate_from: str = "forward50"  # the 'estimated' prior's drawn test set follows this prior (forward50 .. backward50)
estimator: str = "em"  # how the 'estimated' prior is read from the drawn images: em or bbse
draws: int = 10  # sub-sampled test sets per prior in the 'prior unknown' table (0: skip that section)

# %%
from lt_kit.evaluation.adaptation import format_adaptation
from lt_kit.evaluation.analysis import calibration_table
from lt_kit.evaluation.analysis_text import format_calibration, format_shift
from lt_kit.views.adaptation import adaptation_figure
from lt_kit.views.explorer import AlphaExplorer
from lt_kit.views.notebook import EXPLORER_PARAMS, check_parameters, save_and_show
from lt_kit.views.plots import prior_figure, reliability_figure
from lt_kit.views.posthoc import comparison_figure, comparison_table, method_curves

p = check_parameters(globals(), EXPLORER_PARAMS)  # stops here on an unknown, ill-typed or invalid parameter
explorer = AlphaExplorer.from_run(p["run_dir"], alpha_max=p["alpha_max"], method=p["method"],
                                  test_prior=p["test_prior"], estimate_from=p["estimate_from"],
                                  estimator=p["estimator"])
print(explorer.describe())

# %% [markdown]
# ## Every method on this checkpoint
# Overall and tail accuracy against each method's strength, on shared axes. Marked on each curve: the paper's
# fixed rule (open diamond: TDE's preset alpha, tau = 1 for the others) and the strength chosen on the
# validation split (filled circle, when the run has one). cRT and LWS re-train the classifier on the
# cached training features and have no strength: a dashed level line each, a square at the epoch chosen on the
# validation split. The table gives many / medium / few / overall and
# head / tail for each; the rows chosen on the test set are labelled so and are not results. This section is
# the balanced test set as it is, whatever `test_prior` is.

# %%
info = explorer.summary()  # every method's rule and val choice, once (cRT, LWS: from the training-feature cache)
curves = method_curves(explorer.cache, explorer.val_cache, explorer.preset_alpha, info)
print(comparison_table(explorer.cache, explorer.val_cache, explorer.preset_alpha, info))
save_and_show({"methods": comparison_figure(curves, explorer.cache.head)}, explorer.run_dir / "figures")

# %% [markdown]
# ## Accuracy against the selected method's strength
# Overall, many, medium and few (reference thresholds), plus head / tail split at the median training count,
# which stays meaningful where the reference thresholds leave a split empty (CIFAR-10-LT has no few-shot
# class). Marked: the paper rule, the validation-chosen strength, for TDE the reference's rule of thumb (the
# alpha at which the mean of alpha times cos(x, d_hat) is 1, over the validation features when the run has
# them, else over the test features and labelled for reading), and the best on test, for reading. Under a
# `test_prior` other than uniform, every accuracy is prior-weighted (each split within its classes) and the
# validation choice is made on the validation split re-weighted to that prior.

# %%
sweep = explorer.sweep(p["sweep_step"])
print(explorer.sweep_summary(sweep))
save_and_show({explorer.figure_name("sweep"): explorer.sweep_figure(sweep)}, explorer.run_dir / "figures")

# %% [markdown]
# ## Accuracy under label shift
# The checkpoint under the test label distributions of LADE / SADE's test-agnostic protocol: backward50 (the
# rarest training class 50 times as frequent as the commonest) through uniform (the balanced test set) to
# forward50 (long-tailed like the training set). Accuracy under a prior is the prior-weighted mean of the
# per-class accuracies on the balanced test set, the expectation of SADE's resampled test sets. One line per
# method at its paper rule (solid) and, when the run has a validation split, at the strength chosen on it
# re-weighted to each prior (dash-dot); logit adjustment with the known test prior (dashed) is an oracle that
# reads the prior, a reference and not a method. The shaded column is `test_prior`.

# %%
table = explorer.shift_table()  # every method under every protocol prior (lt_kit.evaluation.analysis)
print(format_shift(table))
save_and_show({"label_shift": prior_figure(table, mark=explorer.prior_name)}, explorer.run_dir / "figures")

# %% [markdown]
# ## Calibration
# Can each method's probabilities (the softmax of its logits) be trusted? Per evaluation: accuracy, ECE (15
# equal-width confidence bins) and NLL on the test set, as they are and after a temperature fitted on the
# validation split (T changes no prediction), overall and per many / medium / few; then the reliability
# diagrams (accuracy per confidence bin against the diagonal of a calibrated model).

# %%
calibration = calibration_table(explorer.analysis())  # lt_kit.evaluation.analysis: every evaluation at once
print(format_calibration(calibration))
save_and_show({"reliability": reliability_figure(calibration)}, explorer.run_dir / "figures")

# %% [markdown]
# ## When the test prior is unknown
# A deployed model does not know its test prior. Here `draws` test sets are sub-sampled from the balanced test
# set to each protocol prior (SADE's construction), and on each one the prior is estimated from the unlabelled
# images: EM on posteriors calibrated on the validation split, and BBSE with the validation split's confusion
# matrix. Each method is then adapted to the estimate (logit adjustment with the estimated prior; each
# strength chosen on the validation split re-weighted to it) and scored on the drawn set, beside the method
# as it is (unadapted) and adapted to the drawn set's true prior (oracle). Needs a validation split;
# `draws = 0` skips it.

# %%
if p["draws"] and explorer.val_cache is not None:
    adapted = explorer.adaptation_table(p["draws"])  # EM / BBSE / oracle on p["draws"] drawn sets per prior
    print(format_adaptation(adapted))
    save_and_show({"adaptation": adaptation_figure(adapted)}, explorer.run_dir / "figures")
else:
    print("skipped: " + ("draws = 0" if not p["draws"] else "the run has no validation split"))

# %% [markdown]
# ## The selector, the slider and the test prior
# Overall accuracy against the strength under the test prior (grey dashed: the balanced test set), with the
# strength chosen on the validation split re-weighted to the prior (circle) and the best on test under it
# (star, for reading, chosen on test); per-class accuracy (head to tail) with the prior's share of the test
# images; the splits under the prior beside their strength-0 values (the head's own logits); and how many test
# images are predicted as each class: TDE and logit adjustment take predictions away from the head classes as
# the strength grows. Pick a method with the buttons (the slider jumps to its paper rule); click a handle and
# use the arrow keys for single steps. Without a widget front end (papermill, a static viewer) the figure shows
# the paper rule of the first method under `test_prior`.

# %%
explorer.show(save=explorer.run_dir / "figures" / f"{explorer.figure_name('panel')}.png")

# %% [markdown]
# ## Update time
# One slider move, and one test-prior change: the metrics, the redraw and the PNG, measured in this kernel
# (median and worst of 20 each).

# %%
explorer.benchmark()
