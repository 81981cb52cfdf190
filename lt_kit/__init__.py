"""lt_kit: a notebook-first workbench for long-tailed classification with Causal-TDE
(Tang, Huang, Zhang, NeurIPS 2020)."""
__version__ = "0.2.0"

from lt_kit.config import DEFAULTS, PARAMS, resolve
from lt_kit.data.datasets import DATASETS, long_tail_counts, long_tail_indices
from lt_kit.errors import LtKitError, NonFiniteLossError
from lt_kit.evaluation.analysis import analyse, calibration_table, paired_gaps, shift_table
from lt_kit.evaluation.features import FeatureCache
from lt_kit.evaluation.summary import AlphaEvaluator, MethodEvaluator, choose_on_val, format_table, summary
from lt_kit.maths.metrics import head_tail_accuracy, per_class_accuracy, shot_accuracy
from lt_kit.maths.posthoc import logit_adjust, tau_normalize
from lt_kit.maths.tde import rule_of_thumb_alpha, tde_logits, tde_parts, update_direction
from lt_kit.methods import POSTHOC
from lt_kit.models import HEADS, LTModel, list_backbones
from lt_kit.runs.compare import group_runs, mean_std, read_run
from lt_kit.training.fit import fit
from lt_kit.training.loop import train_one_epoch
from lt_kit.training.score import run_analysis, score_run, test_run  # test_run: deprecated, removed in 0.3.0
from lt_kit.views.report import Comparison, compare_runs

__all__ = ["DATASETS", "DEFAULTS", "HEADS", "PARAMS", "POSTHOC", "AlphaEvaluator", "FeatureCache", "LTModel",
           "LtKitError", "MethodEvaluator", "choose_on_val", "logit_adjust", "tau_normalize",
           "NonFiniteLossError", "fit", "format_table", "head_tail_accuracy", "list_backbones", "long_tail_counts",
           "long_tail_indices", "per_class_accuracy", "resolve", "rule_of_thumb_alpha", "shot_accuracy", "summary",
           "tde_logits", "tde_parts", "score_run", "test_run", "train_one_epoch", "update_direction",
           "Comparison", "compare_runs", "group_runs", "mean_std", "read_run",
           "analyse", "calibration_table", "paired_gaps", "run_analysis", "shift_table"]
