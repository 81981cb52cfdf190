import pytest

from lt_kit.maths.schedule import lr_at, mu_at

CIFAR = dict(lr=0.2, schedule="warmup_multistep", epochs=200, warmup_epochs=5, milestones=[120, 160], lr_factor=0.01)


def test_warmup_multistep_matches_the_reference_stepping():
    got = [lr_at(e, **CIFAR) for e in (1, 2, 3, 4, 5, 119, 120, 159, 160, 200)]
    want = [0.09333, 0.12, 0.14667, 0.17333, 0.2, 0.2, 0.002, 0.002, 2e-5, 2e-5]
    assert got == pytest.approx(want, rel=1e-3)


def test_cosine_epoch_indexing():
    cos = dict(lr=0.2, schedule="cosine", epochs=90)
    assert lr_at(1, **cos) == pytest.approx(0.199939, rel=1e-5)
    assert lr_at(45, **cos) == pytest.approx(0.1)
    assert lr_at(90, **cos) == pytest.approx(0.0, abs=1e-12)


def test_mu_schedules():
    assert mu_at(0.2, mu=0.9, mu_schedule="fixed") == 0.9
    assert mu_at(0.2, mu=0.9, mu_schedule="lr_scaled") == pytest.approx(0.9)
    assert mu_at(0.001, mu=0.9, mu_schedule="lr_scaled") == pytest.approx(0.995)
    assert mu_at(0.0, mu=0.9, mu_schedule="lr_scaled") == 1.0
