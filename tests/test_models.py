import pytest
import torch

from lt_kit.errors import LtKitError
from lt_kit.models import LTModel, ResNet32, create_backbone, list_backbones


@pytest.mark.parametrize("arch", list_backbones())
@pytest.mark.parametrize("head", ["causal_norm", "linear"])
def test_every_model_shapes_finite_and_all_params_get_gradients(arch, head):
    torch.manual_seed(0)
    model = LTModel(arch, 7, head=head)
    x = torch.randn(4, 3, 32, 32)
    logits, feats = model(x)
    assert logits.shape == (4, 7) and feats.shape == (4, model.num_features)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_resnet32_is_the_bbn_variant():
    net = ResNet32()
    assert sum(p.numel() for p in net.parameters()) == 537_488          # the reference's ResNet-32 (BBN)
    assert [len(net.layer1), len(net.layer2), len(net.layer3)] == [5, 5, 4]
    assert net.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 128)


def test_resnext50_feature_size_and_params():
    net = create_backbone("resnext50_32x4d")
    assert sum(p.numel() for p in net.parameters()) == 22_979_904      # torchvision's ResNeXt-50 32x4d trunk
    assert net.num_features == 2048


def test_causal_head_init_and_direction_buffer():
    m = LTModel("resnet32", 10)
    bound = 1 / 128 ** 0.5
    assert m.head.weight.abs().max() <= bound
    assert "direction" in m.state_dict() and m.direction.shape == (128,)


@pytest.mark.parametrize("make", ["LTModel", "CausalNormHead"])
def test_the_old_keyword_tau_warns_and_builds_what_cn_tau_builds(make):
    """``LTModel(..., tau=8)`` and ``CausalNormHead(..., tau=8)``, as written against 0.1.0: a FutureWarning naming
    the class and ``cn_tau`` at the caller's line, and the same module (scale, weights, logits) as ``cn_tau=8``.
    The head's ``**_`` used to swallow ``tau=`` and keep the default 16."""
    from lt_kit.models import CausalNormHead
    cls, args = {"LTModel": (LTModel, ("resnet32", 5)), "CausalNormHead": (CausalNormHead, (16, 5))}[make]
    torch.manual_seed(0)
    with pytest.warns(FutureWarning, match=rf"{make}\(\): the keyword tau= is now cn_tau=.*removed in lt_kit 0\.3\.0") as rec:
        old = cls(*args, tau=8.0)
    assert rec[0].filename == __file__                                 # the line that makes the instance
    torch.manual_seed(0)
    new = cls(*args, cn_tau=8.0)
    head = old.head if make == "LTModel" else old
    assert head.cn_tau == 8.0 and isinstance(old, torch.nn.Module) and type(old) is cls
    assert old.state_dict().keys() == new.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
    x = torch.randn(2, 3, 32, 32) if make == "LTModel" else torch.randn(2, 16)
    old.eval(), new.eval()
    out_old, out_new = old(x), new(x)
    out_old, out_new = (out_old[0], out_new[0]) if make == "LTModel" else (out_old, out_new)
    assert torch.equal(out_old, out_new)
    with pytest.raises(TypeError, match=f"{make}\\(\\) got both tau= and cn_tau="):
        cls(*args, tau=8.0, cn_tau=8.0)


def test_the_models_show_cn_tau_in_their_signature_and_do_not_warn_on_it():
    import inspect
    import warnings

    import lt_kit
    from lt_kit.models import CausalNormHead
    assert lt_kit.LTModel is LTModel
    for cls in (LTModel, CausalNormHead):
        params = inspect.signature(cls).parameters
        assert "cn_tau" in params and "tau" not in params and "self" not in params
        assert cls.__init__.__name__ == "__init__" and "cn_tau" in (cls.__doc__ or "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LTModel("resnet32", 3, cn_tau=8.0)
        LTModel("resnet32", 3, head="linear")


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(LtKitError, match="resnet32"):
        LTModel("resnet9000", 10)
