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


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(LtKitError, match="resnet32"):
        LTModel("resnet9000", 10)
