"""Training-time long-tail losses (logit-adjusted / Balanced Softmax, LDAM-DRW) against hand-computed cases,
the DRW switch epoch, the loss/head pairs, and a smoke training per loss on the embedded data."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from lt_kit.config import load_params_file, resolve
from lt_kit.errors import LtKitError
from lt_kit.maths.losses import drw_weights, ldam_loss, ldam_margins, logit_adjusted_loss
from lt_kit.methods import LOSSES, drw_epoch, make_criterion
from lt_kit.models import HEADS, LTModel
from lt_kit.training.fit import fit


def test_logit_adjusted_loss_by_hand():
    logits, y = torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    # counts 3:1 -> log prior (ln .75, ln .25); tau 1: logits become (2 + ln .75, ln .25)
    z = torch.tensor([2 + math.log(0.75), math.log(0.25)])
    expect = -(z[1] - torch.logsumexp(z, 0))
    assert logit_adjusted_loss(logits, y, [3, 1], 1.0).item() == pytest.approx(expect.item(), rel=1e-6)
    assert logit_adjusted_loss(logits, y, [3, 1], 0.0).item() == pytest.approx(F.cross_entropy(logits, y).item())
    # Balanced Softmax: tau = 1 equals cross-entropy on softmax weighted by the class counts (Ren et al.)
    p = torch.tensor([3.0, 1.0]) * logits.exp()
    assert logit_adjusted_loss(logits, y, [3, 1], 1.0).item() == pytest.approx(-(p[0, 1] / p.sum()).log().item(), rel=1e-6)


@pytest.mark.parametrize("fn", ["logit_adjusted_loss", "adjusted_cross_entropy"])
def test_the_old_keyword_tau_of_the_losses_warns_and_gives_what_loss_tau_gives(fn):
    """``tau=``, the name of ``loss_tau`` before 0.2.0: a FutureWarning at the caller's line and the same loss bit
    for bit until 0.3.0; both names given is a TypeError; the signature shows ``loss_tau`` only."""
    import inspect

    from lt_kit.maths import losses
    from lt_kit.maths.posthoc import log_prior
    f = getattr(losses, fn)
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 0, 0])
    third = [6, 3, 1] if fn == "logit_adjusted_loss" else log_prior([6, 3, 1])    # counts / a built log prior
    with pytest.warns(FutureWarning, match=rf"{fn}\(\): the keyword tau= is now loss_tau=.*removed in lt_kit 0\.3\.0") as rec:
        old = f(logits, y, third, tau=0.5)
    assert rec[0].filename == __file__
    assert torch.equal(old, f(logits, y, third, loss_tau=0.5)) and torch.equal(old, f(logits, y, third, 0.5))
    assert not torch.equal(old, f(logits, y, third, 1.0))                             # 0.5 was used
    with pytest.raises(TypeError, match="got both tau= and loss_tau="):
        f(logits, y, third, tau=0.5, loss_tau=0.5)
    assert "loss_tau" in inspect.signature(f).parameters and "tau" not in inspect.signature(f).parameters


def test_logit_adjusted_loss_says_what_its_prior_argument_is():
    """Counts as a list or as a tensor are counts; a log prior is given by keyword and checked to be one."""
    from lt_kit.maths.posthoc import log_prior
    logits, y = torch.zeros(2, 2), torch.tensor([0, 1])
    expect = -(math.log(5000 / 5050) + math.log(50 / 5050)) / 2                       # 2.3125
    for counts in ([5000, 50], torch.tensor([5000, 50]), torch.tensor([5000.0, 50.0])):
        assert logit_adjusted_loss(logits, y, counts).item() == pytest.approx(expect, rel=1e-5)
    assert logit_adjusted_loss(logits, y, log_prior=log_prior([5000, 50])).item() == pytest.approx(expect, rel=1e-5)
    for wrong in (torch.tensor([5000, 50]), torch.tensor([5000.0, 50.0]), torch.tensor([0.0, 0.0]), [-0.01, -4.6]):
        with pytest.raises(ValueError, match="log_prior"):
            logit_adjusted_loss(logits, y, log_prior=wrong)
    with pytest.raises(ValueError, match="log_prior .*2 classes"):
        logit_adjusted_loss(logits, y, log_prior=log_prior([1, 2, 3]))
    with pytest.raises(ValueError, match="class_counts or log_prior"):
        logit_adjusted_loss(logits, y, [5000, 50], log_prior=log_prior([5000, 50]))
    with pytest.raises(ValueError, match="class_counts or log_prior"):
        logit_adjusted_loss(logits, y)
    with pytest.raises(ValueError, match="negative .*log prior"):
        logit_adjusted_loss(logits, y, log_prior([5000, 50]))                         # a log prior as counts
    with pytest.raises(TypeError):
        logit_adjusted_loss(logits, y, None, 1.0, 0.0, log_prior([5000, 50]))          # keyword only


def test_ldam_margins_and_drw_weights_by_hand():
    m = ldam_margins([5000, 50], 0.5)                 # n^-1/4: 5000^-.25, 50^-.25; the largest scaled to 0.5
    assert m[1].item() == pytest.approx(0.5)
    assert m[0].item() == pytest.approx(0.5 * (50 / 5000) ** 0.25, rel=1e-6)            # 0.5 / sqrt(10)
    w = drw_weights([5000, 50], 0.9999)
    raw = [(1 - 0.9999) / (1 - 0.9999 ** n) for n in (5000, 50)]
    assert w.tolist() == pytest.approx([2 * r / sum(raw) for r in raw], rel=1e-5)
    assert w.sum().item() == pytest.approx(2.0) and w[1] > w[0]


def test_ldam_loss_by_hand():
    logits, y = torch.tensor([[3.0, 1.0], [0.5, 2.0]]), torch.tensor([0, 1])
    margins, s = torch.tensor([0.1, 0.4]), 30.0
    shifted = torch.tensor([[3.0 - 3.0, 1.0], [0.5, 2.0 - 12.0]])         # true logit minus s * m_y
    assert ldam_loss(logits, y, margins, s).item() == pytest.approx(F.cross_entropy(shifted, y).item(), rel=1e-6)
    w = torch.tensor([0.5, 1.5])
    assert ldam_loss(logits, y, margins, s, w).item() == pytest.approx(
        F.cross_entropy(shifted, y, weight=w).item(), rel=1e-6)


def smoke(**kw):
    return resolve({**load_params_file(ROOT / "params" / "smoke.yaml"), **kw})


def test_drw_switches_at_the_first_lr_drop():
    p = smoke(head="norm_linear", loss="ldam_drw", epochs=45, warmup_epochs=3, milestones=[27, 36])
    assert drw_epoch(p) == 27
    counts = [100, 10]
    logits, y = torch.tensor([[1.0, 2.0], [2.0, 1.0]]), torch.tensor([0, 1])
    before, at = make_criterion(p, counts, 26), make_criterion(p, counts, 27)
    m = ldam_margins(counts)
    assert before(logits, y).item() == pytest.approx(ldam_loss(logits, y, m, 30.0).item())
    assert at(logits, y).item() == pytest.approx(ldam_loss(logits, y, m, 30.0, drw_weights(counts)).item())
    assert before(logits, y).item() != pytest.approx(at(logits, y).item())
    from lt_kit.maths.schedule import lr_at
    sched = {k: p[k] for k in ("lr", "schedule", "epochs", "warmup_epochs", "milestones", "lr_factor")}
    assert lr_at(27, **sched) < lr_at(26, **sched)              # the same epoch the lr first drops
    with pytest.raises(LtKitError, match="needs schedule=warmup_multistep"):
        smoke(head="norm_linear", loss="ldam_drw", schedule="cosine")


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("head", list(HEADS))
def test_loss_head_pairs_fit_or_are_refused_with_the_valid_pairs(loss, head):
    if head in LOSSES[loss].heads:
        assert smoke(head=head, loss=loss)["loss"] == loss
    else:
        with pytest.raises(LtKitError, match=f"loss '{loss}' does not fit head '{head}'.*valid pairs: ce with"):
            smoke(head=head, loss=loss)


def test_norm_linear_head_is_a_scaled_cosine_classifier():
    m = LTModel("resnet32", 4, head="norm_linear", norm_scale=30.0)
    f = torch.rand(5, 128)
    out = m.head(f)
    expect = 30 * F.normalize(f, dim=1) @ F.normalize(m.head.raw_weight, dim=1).T
    torch.testing.assert_close(out, expect)
    assert out.abs().max() <= 30 + 1e-4


@pytest.mark.parametrize("head,loss", [("linear", "logit_adjusted"), ("norm_linear", "ldam_drw"),
                                       ("causal_norm", "logit_adjusted")])
def test_smoke_training_per_loss(head, loss, tmp_path):
    m = fit(smoke(head=head, loss=loss, epochs=3, milestones=[2]), tmp_path / "run", progress=False)
    assert m["loss"] == loss and 0 <= m["softmax"]["overall"] <= 1
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(math.isfinite(h["loss"]) for h in hist) and len(hist) == 3
    assert "logit_adjust" in m["methods"]                        # post-hoc methods work on every loss's run
