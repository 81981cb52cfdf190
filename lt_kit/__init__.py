"""lt_kit: a notebook-first workbench for long-tailed classification with Causal-TDE
(Tang, Huang, Zhang, NeurIPS 2020)."""
__version__ = "0.1.0"

from .compare import Comparison, compare_runs, group_runs, mean_std, read_run
from .config import DEFAULTS, PARAMS, resolve
from .data import DATASETS, long_tail_counts, long_tail_indices
from .errors import LtKitError, NonFiniteLossError
from .evaluate import AlphaEvaluator, FeatureCache, MethodEvaluator, choose_on_val, format_table, summary
from .metrics import head_tail_accuracy, per_class_accuracy, shot_accuracy
from .methods import POSTHOC
from .models import HEADS, LTModel, list_backbones
from .posthoc import logit_adjust, tau_normalize
from .tde import rule_of_thumb_alpha, tde_logits, tde_parts, update_direction
from .train import fit, test_run, train_one_epoch

__all__ = ["DATASETS", "DEFAULTS", "HEADS", "PARAMS", "POSTHOC", "AlphaEvaluator", "FeatureCache", "LTModel",
           "LtKitError", "MethodEvaluator", "choose_on_val", "logit_adjust", "tau_normalize",
           "NonFiniteLossError", "fit", "format_table", "head_tail_accuracy", "list_backbones", "long_tail_counts",
           "long_tail_indices", "per_class_accuracy", "resolve", "rule_of_thumb_alpha", "shot_accuracy", "summary",
           "tde_logits", "tde_parts", "test_run", "train_one_epoch", "update_direction",
           "Comparison", "compare_runs", "group_runs", "mean_std", "read_run"]
