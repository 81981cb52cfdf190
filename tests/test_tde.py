import math

import pytest
import torch

from lt_kit.maths.tde import rule_of_thumb_alpha, tde_logits, tde_parts, update_direction


def reference_loop(x, w, d, alpha, tau, gamma, heads):
    """Eq. 8 written the way the reference's CausalNormClassifier does it: split into heads, loop."""
    hd = x.shape[1] // heads
    out = torch.zeros(x.shape[0], w.shape[0], dtype=x.dtype)
    for h in range(heads):
        xs, ws, ds = x[:, h * hd:(h + 1) * hd], w[:, h * hd:(h + 1) * hd], d[h * hd:(h + 1) * hd]
        xn = xs / xs.norm(dim=1, keepdim=True)
        wn = ws / (ws.norm(dim=1, keepdim=True) + gamma)
        dn = ds / ds.norm()
        cos = (xn * dn).sum(1, keepdim=True)
        out += (tau / heads) * (xn - alpha * cos * dn) @ wn.T
    return out


@pytest.mark.parametrize("heads,alpha", [(1, 1.0), (2, 0.0), (2, 1.5), (4, 3.0)])
def test_matches_per_head_loop(heads, alpha):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 16, generator=g, dtype=torch.float64)
    w = torch.randn(5, 16, generator=g, dtype=torch.float64)
    d = torch.rand(16, generator=g, dtype=torch.float64) * 10
    got = tde_logits(x, w, d, alpha, cn_tau=16.0, gamma=1 / 32, num_heads=heads)
    torch.testing.assert_close(got, reference_loop(x, w, d, alpha, 16.0, 1 / 32, heads))


def test_alpha_zero_is_eq7_and_ignores_direction():
    x, w = torch.rand(4, 8), torch.randn(3, 8)
    eq7 = tde_logits(x, w, None, 0.0)
    torch.testing.assert_close(tde_logits(x, w, torch.rand(8), 0.0), eq7)
    # Eq. 7 by hand: tau/H * sum_h <x_h/|x_h|, w_h/(|w_h|+gamma)>
    xh, wh = x.view(4, 2, 4), w.view(3, 2, 4)
    manual = 8.0 * torch.einsum("bhd,chd->bc", xh / xh.norm(dim=-1, keepdim=True),
                                wh / (wh.norm(dim=-1, keepdim=True) + 1 / 32))
    torch.testing.assert_close(eq7, manual)


def test_direction_orthogonal_to_every_head_changes_nothing():
    x = torch.zeros(6, 8)
    x[:, [0, 1, 4, 5]] = torch.rand(6, 4) + 0.1          # features live in channels 0,1 (head 0) and 4,5 (head 1)
    d = torch.zeros(8)
    d[[2, 3, 6, 7]] = torch.rand(4) + 0.1                 # direction orthogonal inside each head
    w = torch.randn(3, 8)
    torch.testing.assert_close(tde_logits(x, w, d, 2.5), tde_logits(x, w, None, 0.0))


def test_direction_along_features_lowers_the_favoured_class():
    d = torch.tensor([1.0, 0.0, 1.0, 0.0])
    w = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])   # class 0 = the "head" direction
    x = torch.tensor([[1.0, 0.9, 1.0, 0.9]])
    before, after = tde_logits(x, w, d, 0.0), tde_logits(x, w, d, 1.0)
    assert before[0, 0] > before[0, 1] and after[0, 0] < after[0, 1]


def test_parts_compose_to_logits_for_any_alpha():
    x, w, d = torch.rand(5, 12), torch.randn(4, 12), torch.rand(12)
    base, effect = tde_parts(x, w, d, num_heads=3)
    for a in (0.0, 0.5, 2.0):
        torch.testing.assert_close(base - a * effect, tde_logits(x, w, d, a, num_heads=3))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "x"])
def test_non_finite_alpha_is_refused(bad):
    with pytest.raises(ValueError, match="finite"):
        tde_logits(torch.rand(2, 4), torch.rand(3, 4), torch.rand(4), bad)


def test_heads_must_divide_features():
    with pytest.raises(ValueError, match="divisible"):
        tde_logits(torch.rand(2, 6), torch.rand(3, 6), None, 0.0, num_heads=4)


def test_direction_update_is_the_reference_rule():
    d = torch.tensor([1.0, 2.0])
    out = update_direction(d.clone(), torch.tensor([0.5, 0.5]), 0.9)
    torch.testing.assert_close(out, torch.tensor([1.4, 2.3]))


def test_rule_of_thumb_alpha():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([1.0, 1.0])
    # one head: cos = 1/sqrt(2) for both samples -> alpha = sqrt(2)
    assert rule_of_thumb_alpha(x, d, num_heads=1) == pytest.approx(math.sqrt(2))


# --------------------------------------------------------------------------- the old keyword tau (before 0.2.0)
@pytest.mark.parametrize("fn", [tde_logits, tde_parts])
def test_the_old_keyword_tau_warns_and_gives_what_cn_tau_gives(fn):
    """A notebook written against 0.1.0 calls ``tde_logits(..., tau=16)``: it still runs for one release, with a
    FutureWarning that names cn_tau and points at the caller's line, and the same logits as ``cn_tau=``."""
    g = torch.Generator().manual_seed(0)
    x, w, d = torch.rand(6, 8, generator=g), torch.randn(4, 8, generator=g), torch.rand(8, generator=g)
    args = (x, w, d, 1.5) if fn is tde_logits else (x, w, d)
    with pytest.warns(FutureWarning, match=r"tau= is now cn_tau=.*removed in lt_kit 0\.3\.0") as rec:
        old = fn(*args, tau=12.0, gamma=1 / 32, num_heads=2)
    assert rec[0].filename == __file__                  # stacklevel: the warning names the caller's line
    new = fn(*args, cn_tau=12.0, gamma=1 / 32, num_heads=2)
    both = lambda r: r if isinstance(r, tuple) else (r,)  # noqa: E731 - tde_parts gives (base, effect)
    for a, b in zip(both(old), both(new)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(both(fn(*args))[0], both(old)[0])        # tau=12 was used, not the default 16


@pytest.mark.parametrize("fn", [tde_logits, tde_parts])
def test_both_tau_and_cn_tau_is_a_type_error(fn):
    x, w, d = torch.rand(3, 4), torch.randn(2, 4), torch.rand(4)
    args = (x, w, d, 1.0) if fn is tde_logits else (x, w, d)
    with pytest.raises(TypeError, match="got both tau= and cn_tau="):
        fn(*args, tau=16.0, cn_tau=16.0)


def test_the_new_keyword_and_the_default_do_not_warn():
    import warnings
    x, w, d = torch.rand(3, 4), torch.randn(2, 4), torch.rand(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tde_logits(x, w, d, 1.0)
        tde_logits(x, w, d, 1.0, cn_tau=8.0)
        tde_parts(x, w, d, cn_tau=8.0)


def test_the_public_names_are_the_wrapped_functions():
    import inspect

    import lt_kit
    assert lt_kit.tde_logits is tde_logits and lt_kit.tde_parts is tde_parts
    assert "cn_tau" in inspect.signature(lt_kit.tde_logits).parameters           # help() shows the new name
    assert "tau" not in inspect.signature(lt_kit.tde_logits).parameters
