import math

import numpy as np
import pytest

from lt_kit.maths.metrics import head_tail_accuracy, per_class_accuracy, shot_accuracy, shot_groups


def test_splits_follow_the_reference_thresholds():
    g = shot_groups([101, 100, 20, 19])
    assert g["many"].tolist() == [0] and g["medium"].tolist() == [1, 2] and g["few"].tolist() == [3]


def test_split_is_mean_of_class_accuracies_and_overall_is_micro():
    labels = np.array([0] * 4 + [1] * 2 + [2] * 2)
    preds = np.array([0, 0, 0, 0, 1, 0, 2, 0])       # class 0: 1.0, class 1: 0.5, class 2: 0.5
    out = shot_accuracy(preds, labels, train_counts=[500, 50, 50])
    assert out["many"] == 1.0
    assert out["medium"] == pytest.approx(0.5)
    assert out["overall"] == pytest.approx(6 / 8)
    assert math.isnan(out["few"])                      # empty split is NaN, not 0
    assert set(out) == {"many", "medium", "few", "overall"}


def test_custom_thresholds_and_fractions():
    labels = np.arange(4).repeat(5)
    preds = labels.copy()
    preds[:5] = 3                                      # class 0 all wrong
    out = shot_accuracy(preds, labels, [60, 30, 10, 5], many=50, few=15)
    assert out == {"many": 0.0, "medium": 1.0, "few": 1.0, "overall": 0.75}


def test_per_class_is_nan_for_absent_classes():
    acc = per_class_accuracy(np.array([0, 1]), np.array([0, 0]), 3)
    assert acc[0] == 0.5 and math.isnan(acc[1]) and math.isnan(acc[2])


def test_head_tail_uses_the_median_count():
    labels = np.arange(4).repeat(2)
    preds = np.array([0, 0, 1, 1, 0, 0, 0, 0])          # head classes 0,1 right; tail classes 2,3 wrong
    out = head_tail_accuracy(preds, labels, [100, 50, 20, 10])
    assert out == {"head": 1.0, "tail": 0.0}
