"""The model registry: published parameter counts and a forward/backward pass of every registered model."""
import pytest
import torch

from trainer.models import create_model, list_models

# CIFAR ResNet (option A) counts: 16/32/64-channel stages of n blocks. One block per stage adds
# 2*(9*16*16 + 2*16) + 2*(9*32*32 + 2*32) + 2*(9*64*64 + 2*64) = 97,216 parameters, and
# resnet20 (n=3) has 269,722, so depth 6n+2 has 269,722 + (n-3)*97,216: the published 0.27M/0.46M/1.7M.
CIFAR_COUNTS = {"resnet8": 75_290, "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
                "resnet56": 853_018, "resnet110": 1_727_962}


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,count", sorted(CIFAR_COUNTS.items()))
def test_cifar_resnet_parameter_counts(arch, count):
    assert _count(create_model(arch, 10, (3, 32, 32))) == count


def test_published_rounded_counts():
    assert round(_count(create_model("resnet20", 10, (3, 32, 32))) / 1e6, 2) == 0.27
    assert round(_count(create_model("resnet32", 10, (3, 32, 32))) / 1e6, 2) == 0.46
    assert round(_count(create_model("resnet110", 10, (3, 32, 32))) / 1e6, 1) == 1.7


def test_wide_and_imagenet_counts():
    # WRN-28-10: 36.5M (Zagoruyko & Komodakis); ImageNet ResNets as in He et al. / common references.
    assert _count(create_model("wrn28-10", 10, (3, 32, 32))) == 36_479_194
    assert _count(create_model("resnet18", 1000, (3, 224, 224))) == 11_689_512
    assert _count(create_model("resnet50", 1000, (3, 224, 224))) == 25_557_032


# the ILKP study's CIFAR variants: MobileNet (3.2M) and MobileNetV2 (2.24M) as in the common CIFAR ports of
# those models; VGG-16-BN: the 14.73M of the CIFAR VGG-16 with conv biases less its 4,224 conv biases
# (64*2 + 128*2 + 256*3 + 512*6 channels), as the study's convs have none
STUDY_COUNTS = {"mobilenet_cifar": 3_217_226, "mobilenetv2_cifar": 2_236_682, "vgg16_bn": 14_728_266 - 4_224}


@pytest.mark.parametrize("arch,count", sorted(STUDY_COUNTS.items()))
def test_ilkp_study_cifar_model_counts(arch, count):
    assert _count(create_model(arch, 10, (3, 32, 32))) == count


def test_mobilenets_list_their_depthwise_and_pointwise_convs():
    dw, pw = create_model("mobilenet_cifar", 10, (3, 32, 32)).separable_convs()
    assert len(dw) == len(pw) == 13 and all(c.groups == c.in_channels == c.out_channels for c in dw)
    assert (dw[0].in_channels, pw[0].out_channels, pw[-1].out_channels) == (32, 64, 1024)
    dw, pw = create_model("mobilenetv2_cifar", 10, (3, 32, 32)).separable_convs()
    # 17 blocks: the first (expansion 1) has only the projection, the others an expansion and a projection
    assert len(dw) == 17 and len(pw) == 1 + 2 * 16 and all(c.kernel_size == (1, 1) for c in pw)
    assert (pw[0].in_channels, pw[0].out_channels, pw[-1].out_channels) == (32, 16, 320)
    assert [c.stride[0] for c in dw].count(2) == 2  # CIFAR: only the 64- and 160-channel stages downsample


# one instance of each parametrised family, at a small size
FAMILY_EXAMPLES = {"wrn<depth>-<k>": "wrn10-1"}
IMAGENET = {"resnet18", "resnet34", "resnet50"}
SHAPES = {"digits_mlp": (1, 8, 8), "digits_cnn": (1, 8, 8), "cnn": (1, 28, 28), "mlp": (1, 28, 28),
          "linear": (50,)}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_model(name):
    torch.manual_seed(0)
    arch = FAMILY_EXAMPLES.get(name, name)
    # small inputs keep the test fast: global average pooling makes every conv net size-agnostic
    shape = SHAPES.get(arch, (3, 32, 32) if arch in IMAGENET else (3, 8, 8))
    model = create_model(arch, 7, shape)
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_unknown_arch_lists_names():
    with pytest.raises(ValueError, match=r"unknown arch 'resnet21'.*resnet20.*wrn<depth>-<k>"):
        create_model("resnet21", 10, (3, 32, 32))


def test_bad_wrn_depth_is_explained():
    with pytest.raises(ValueError, match="6n\\+4"):
        create_model("wrn27-2", 10, (3, 32, 32))


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = create_model("resnet8", 10, (3, 32, 32))
    torch.manual_seed(3)
    b = create_model("resnet8", 10, (3, 32, 32))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
