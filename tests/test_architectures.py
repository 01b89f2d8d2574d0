"""Tests for course_lib.architectures against torchvision's models and hand-worked cases.

Big models are built on the meta device (shapes only, no memory, no initialisation time) whenever only
their structure is checked; numerical comparisons load torchvision's weights into ours.
"""
import math

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock as TvBasicBlock
from torchvision.models.resnet import Bottleneck as TvBottleneck
from torchvision.models.vgg import cfgs as tv_vgg_cfgs
from torchvision.models.vgg import make_layers as tv_make_layers

from course_lib import architectures as A


def key_shapes(model):
    return [(name, tuple(t.shape)) for name, t in model.state_dict().items()]


def assert_no_hooks(model):
    for module in model.modules():
        assert not module._forward_hooks, module


# --- parameter-count and layout parity with torchvision -------------------------------------------

PARITY = [
    ("alexnet", lambda: A.alexnet(), lambda: tvm.alexnet(weights=None), 61_100_840),
    ("vgg A", lambda: A.vgg("A"), lambda: tvm.vgg11(weights=None), 132_863_336),
    ("vgg B", lambda: A.vgg("B"), lambda: tvm.vgg13(weights=None), 133_047_848),
    ("vgg D", lambda: A.vgg("D"), lambda: tvm.vgg16(weights=None), 138_357_544),
    ("vgg E", lambda: A.vgg("E"), lambda: tvm.vgg19(weights=None), 143_667_240),
    ("vgg D bn", lambda: A.vgg("D", batch_norm=True), lambda: tvm.vgg16_bn(weights=None), 138_365_992),
    ("googlenet", lambda: A.googlenet(),
     lambda: tvm.googlenet(weights=None, aux_logits=False, init_weights=False), 6_624_904),
    ("googlenet aux", lambda: A.googlenet(aux_logits=True),
     lambda: tvm.googlenet(weights=None, aux_logits=True, init_weights=False), 13_004_888),
    ("resnet18", lambda: A.resnet(18), lambda: tvm.resnet18(weights=None), 11_689_512),
    ("resnet34", lambda: A.resnet(34), lambda: tvm.resnet34(weights=None), 21_797_672),
    ("resnet50", lambda: A.resnet(50), lambda: tvm.resnet50(weights=None), 25_557_032),
    ("resnet101", lambda: A.resnet(101), lambda: tvm.resnet101(weights=None), 44_549_160),
    ("resnet152", lambda: A.resnet(152), lambda: tvm.resnet152(weights=None), 60_192_808),
]


@pytest.mark.parametrize("name, ours, theirs, expected", PARITY, ids=[p[0] for p in PARITY])
def test_parameter_count_and_state_dict_layout_equal_torchvision(name, ours, theirs, expected):
    with torch.device("meta"):
        model, reference = ours(), theirs()
    assert A.count_parameters(model) == A.count_parameters(reference) == expected
    # Same keys with the same shapes in the same order: torchvision's weights load into ours.
    assert key_shapes(model) == key_shapes(reference)


def test_num_classes_changes_only_the_heads():
    with torch.device("meta"):
        assert A.count_parameters(A.resnet(18, num_classes=10)) == 11_689_512 - 513_000 + 5_130
        assert A.count_parameters(A.resnet(18, in_channels=1)) == 11_689_512 - 2 * 49 * 64
        assert A.count_parameters(tvm.googlenet(weights=None, num_classes=7, aux_logits=True, init_weights=False)) \
            == A.count_parameters(A.googlenet(num_classes=7, aux_logits=True))


def test_vgg_c_counted_by_hand():
    with torch.device("meta"):
        model = A.vgg("C")
    # B plus one 1x1 conv in each of the last three stages: 256->256, 512->512, 512->512 (+ biases).
    assert A.count_parameters(model) == 133_047_848 + (256 * 256 + 256) + 2 * (512 * 512 + 512) == 133_638_952
    one_by_one = [(m.in_channels, m.out_channels) for m in model.features if isinstance(m, nn.Conv2d)
                  and m.kernel_size == (1, 1)]
    assert one_by_one == [(256, 256), (512, 512), (512, 512)]


@pytest.mark.parametrize("config, weight_layers", [("A", 11), ("B", 13), ("C", 16), ("D", 16), ("E", 19)])
def test_vgg_weight_layers_match_the_paper_table(config, weight_layers):
    with torch.device("meta"):
        model = A.vgg(config)
    assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()) == weight_layers
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_features_equals_torchvision_make_layers(batch_norm):
    torch.manual_seed(0)
    ours = A.vgg_features(A.VGG_CONFIGS["A"], batch_norm=batch_norm)
    theirs = tv_make_layers(tv_vgg_cfgs["A"], batch_norm=batch_norm)
    assert key_shapes(ours) == key_shapes(theirs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 32, 48)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours(x).shape == (2, 512, 1, 1)


def test_vgg_features_kernel_pairs_and_channels():
    features = A.vgg_features([8, (1, 4), "M", (5, 6)], in_channels=2)
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (2, 8, (3, 3), (1, 1)), (8, 4, (1, 1), (0, 0)), (4, 6, (5, 5), (2, 2))]
    assert features(torch.randn(3, 2, 10, 7)).shape == (3, 6, 5, 3)


@pytest.mark.parametrize("bad", [[64, "X"], [0], [(2, 8)], [(3, 8, 1)], [64.0], "A", 5])
def test_vgg_features_rejects_bad_config(bad):
    with pytest.raises(ValueError, match="config_list"):
        A.vgg_features(bad)


def test_vgg_and_resnet_reject_unknown_configurations():
    with pytest.raises(ValueError, match="config"):
        A.vgg("F")
    with pytest.raises(ValueError, match="config"):
        A.vgg([64, "M"])
    with pytest.raises(ValueError, match="depth"):
        A.resnet(20)
    with pytest.raises(ValueError, match="layers"):
        A.ResNet(A.ResidualBlock, (2, 2, 2))
    with pytest.raises(ValueError, match="num_classes"):
        A.alexnet(num_classes=0)


# --- forward passes -------------------------------------------------------------------------------


def test_lenet5_classic_layout():
    model = A.lenet5()
    assert A.count_parameters(model) == 61_706  # 156 + 2,416 + 48,120 + 10,164 + 850
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 10)
    assert A.lenet5(num_classes=4, in_channels=3)(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_alexnet_and_vgg_forward_small_inputs():
    torch.manual_seed(0)
    assert A.alexnet(num_classes=5)(torch.randn(2, 3, 63, 70)).shape == (2, 5)
    with torch.device("meta"):  # shape inference only: 130M parameters need no real memory here
        for config in "ABCDE":
            assert A.vgg(config, num_classes=7)(torch.empty(2, 3, 32, 40)).shape == (2, 7)
        assert A.vgg("C", num_classes=7)(torch.empty(1, 3, 224, 224)).shape == (1, 7)


@pytest.mark.parametrize("depth, size", [(18, (64, 48)), (50, (33, 47))])
def test_resnet_equals_torchvision_with_loaded_weights(depth, size):
    torch.manual_seed(0)
    theirs = getattr(tvm, f"resnet{depth}")(weights=None, num_classes=6).double().eval()
    ours = A.resnet(depth, num_classes=6).double().eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x))


def test_googlenet_equals_torchvision_and_aux_heads_in_train_mode():
    torch.manual_seed(0)
    theirs = tvm.googlenet(weights=None, aux_logits=True, init_weights=False, num_classes=9).eval()
    ours = A.googlenet(num_classes=9, aux_logits=True).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 64, 80)
    torch.testing.assert_close(ours(x), theirs(x))

    ours.train()
    out = ours(x)
    assert isinstance(out, A.GoogLeNetOutputs)
    assert [t.shape for t in out] == [(2, 9)] * 3
    no_aux = A.googlenet(num_classes=9).train()
    assert no_aux.aux1 is None and no_aux(x).shape == (2, 9)


# --- Inception ------------------------------------------------------------------------------------

INCEPTION_3A = (192, 64, 96, 128, 16, 32, 32)


@pytest.mark.parametrize("reduced, channels", [(True, 64 + 128 + 32 + 32), (False, 64 + 128 + 32 + 192)])
def test_inception_output_channels_naive_vs_reduced(reduced, channels):
    module = A.InceptionModule(*INCEPTION_3A, reduced=reduced)
    out = module(torch.randn(2, 192, 9, 6))
    assert out.shape == (2, channels, 9, 6)
    assert A.inception_output_channels(*INCEPTION_3A, reduced=reduced) == channels


def conv_mult_adds(module, x):
    """Oracle: multiply-adds of every Conv2d measured from its actual output during a forward."""
    total = []

    def hook(conv, inputs, output):
        kh, kw = conv.kernel_size
        total.append(output.numel() * conv.in_channels // conv.groups * kh * kw)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    module(x)
    for h in handles:
        h.remove()
    return sum(total)


@pytest.mark.parametrize("reduced", [True, False])
@pytest.mark.parametrize("large_kernel", [5, 3])
def test_inception_cost_matches_the_built_module(reduced, large_kernel):
    channels = (12, 5, 3, 7, 2, 4, 6)
    module = A.InceptionModule(*channels, reduced=reduced, large_kernel=large_kernel)
    cost = A.inception_cost(*channels, size=(7, 5), reduced=reduced, large_kernel=large_kernel)
    assert cost["params"] == A.count_parameters(module)
    assert cost["mult_adds"] == conv_mult_adds(module, torch.randn(1, 12, 7, 5))


def test_inception_cost_hand_cases():
    # Naive module on a 28x28x256 input with 128 1x1, 192 3x3 and 96 5x5 filters: 854M multiply-adds.
    naive = A.inception_cost(256, 128, 64, 192, 64, 96, 64, size=28, reduced=False)
    assert naive["mult_adds"] == 28 * 28 * 256 * (128 * 1 + 192 * 9 + 96 * 25) == 854_196_224
    reduced = A.inception_cost(256, 128, 64, 192, 64, 96, 64, size=28)
    assert reduced["mult_adds"] == 28 * 28 * (256 * (128 + 64 + 64 + 64) + 64 * 192 * 9 + 64 * 96 * 25)
    assert reduced["mult_adds"] < naive["mult_adds"] / 3
    # torchvision's inception3a (3x3 in the "5x5" branch), counted by torchvision itself.
    with torch.device("meta"):
        tv_3a = tvm.googlenet(weights=None, aux_logits=False, init_weights=False).inception3a
    assert A.inception_cost(*INCEPTION_3A, size=28, large_kernel=3)["params"] == A.count_parameters(tv_3a) == 155_872


def test_inception_rejects_bad_arguments():
    with pytest.raises(ValueError, match="ch3x3red"):
        A.InceptionModule(192, 64, 0, 128, 16, 32, 32)
    with pytest.raises(ValueError, match="large_kernel"):
        A.InceptionModule(*INCEPTION_3A, large_kernel=4)
    with pytest.raises(ValueError, match="size"):
        A.inception_cost(*INCEPTION_3A, size=0)
    with pytest.raises(ValueError, match="reduced"):
        A.inception_output_channels(*INCEPTION_3A, reduced="yes")


# --- residual blocks ------------------------------------------------------------------------------


def randomise_batch_norm(model):
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight.data, m.bias.data, m.running_mean):
                t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator, dtype=m.running_var.dtype) + 0.5)


@pytest.mark.parametrize("in_channels, out_channels, stride, projected", [
    (6, 6, 1, False), (6, 6, 2, True), (4, 6, 1, True), (4, 8, 2, True)])
def test_residual_block_equals_torchvision_basic_block(in_channels, out_channels, stride, projected):
    torch.manual_seed(0)
    ours = A.ResidualBlock(in_channels, out_channels, stride=stride).double()
    assert (ours.downsample is not None) == projected
    downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                               nn.BatchNorm2d(out_channels)) if projected else None
    theirs = TvBasicBlock(in_channels, out_channels, stride=stride, downsample=downsample).double()
    randomise_batch_norm(ours)
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(3, in_channels, 9, 7, dtype=torch.float64)
    out = ours(x)
    assert out.shape == (3, out_channels, math.ceil(9 / stride), math.ceil(7 / stride))
    torch.testing.assert_close(out, theirs(x))


@pytest.mark.parametrize("in_channels, width, stride", [(16, 4, 1), (8, 4, 2), (12, 3, 1)])
def test_bottleneck_equals_torchvision(in_channels, width, stride):
    torch.manual_seed(0)
    ours = A.Bottleneck(in_channels, width, stride=stride)
    projected = stride != 1 or in_channels != 4 * width
    assert (ours.downsample is not None) == projected
    downsample = nn.Sequential(nn.Conv2d(in_channels, 4 * width, 1, stride=stride, bias=False),
                               nn.BatchNorm2d(4 * width)) if projected else None
    theirs = TvBottleneck(in_channels, width, stride=stride, downsample=downsample)
    randomise_batch_norm(ours)
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(2, in_channels, 6, 5)
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours(x).shape == (2, 4 * width, math.ceil(6 / stride), math.ceil(5 / stride))


def test_residual_block_adds_its_input_and_plain_block_does_not():
    residual = A.ResidualBlock(5, 5)
    plain = A.ResidualBlock(5, 5, residual=False)
    assert A.count_parameters(residual) == A.count_parameters(plain) == 2 * (5 * 5 * 9 + 2 * 5)
    for block in (residual, plain):
        nn.init.zeros_(block.bn2.weight)  # F(x) = 0
        block.eval()
    x = torch.randn(2, 5, 4, 6)
    torch.testing.assert_close(residual(x), torch.relu(x))  # H(x) = relu(0 + x)
    assert torch.equal(plain(x), torch.zeros_like(x))
    assert A.ResidualBlock(4, 8, stride=2, residual=False).downsample is None


@pytest.mark.parametrize("size", [8, 16])
def test_small_resnet_plain_and_residual_share_parameters(size):
    torch.manual_seed(0)
    residual = A.small_resnet(4, width=8, residual=True)
    plain = A.small_resnet(4, width=8, residual=False)
    assert key_shapes(residual) == key_shapes(plain)
    assert sum(isinstance(m, nn.Conv2d) for m in plain.modules()) == 1 + 2 * 4
    x = torch.randn(3, 1, size, size)
    assert residual(x).shape == plain(x).shape == (3, 10)
    with pytest.raises(ValueError, match="depth_blocks"):
        A.small_resnet(0)


# --- count_parameters and topk_error --------------------------------------------------------------


def test_count_parameters_trainable_and_shared():
    shared = nn.Linear(3, 4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), shared, shared, nn.BatchNorm1d(4))
    assert A.count_parameters(model) == (3 * 2 * 9 + 3) + (3 * 4 + 4) + 2 * 4
    model[0].requires_grad_(False)
    assert A.count_parameters(model, trainable_only=True) == (3 * 4 + 4) + 2 * 4
    with pytest.raises(ValueError, match="model"):
        A.count_parameters(torch.zeros(3))
    with pytest.raises(ValueError, match="trainable_only"):
        A.count_parameters(model, trainable_only=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_error_equals_torch_topk(dtype):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=generator, dtype=dtype)
    labels = torch.randint(0, 7, (50,), generator=generator)
    for k in range(1, 8):
        hit = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
        expected = 1 - hit.to(dtype).mean()
        result = A.topk_error(logits, labels, k)
        assert result.dtype == dtype and result.dim() == 0
        torch.testing.assert_close(result, expected)
    assert A.topk_error(logits, labels, 7) == 0


def test_topk_error_hand_case():
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.9],    # ranking 3, 1, 2, 0
                           [2.0, 1.0, 3.0, 0.0],    # ranking 2, 0, 1, 3
                           [0.0, 0.0, 1.0, 0.0]])   # ties below class 2
    labels = torch.tensor([1, 3, 0], dtype=torch.int32)
    # row 0: label ranked 2nd; row 1: ranked 4th; row 2: three classes tie for 2nd, counted in its favour
    assert A.topk_error(logits, labels, 1).item() == 1.0
    assert A.topk_error(logits, labels, 2).item() == pytest.approx(1 / 3)
    assert A.topk_error(logits, labels, 3).item() == pytest.approx(1 / 3)
    assert A.topk_error(logits, labels, 4).item() == 0.0


@pytest.mark.parametrize("logits, labels, k, match", [
    (torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), 0, "k must"),
    (torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), 6, "k must"),
    (torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), True, "k must"),
    (torch.randn(4, 5), torch.tensor([0, 1, 2]), 1, "labels"),
    (torch.randn(4, 5), torch.tensor([0.0, 1.0, 2.0, 3.0]), 1, "labels"),
    (torch.randn(4, 5), torch.tensor([0, 1, 2, 5]), 1, "labels"),
    (torch.randn(4, 5), torch.tensor([[0, 1, 2, 3]]), 1, "labels"),
    (torch.randn(5), torch.tensor([0]), 1, "logits"),
    (torch.randint(0, 3, (4, 5)), torch.tensor([0, 1, 2, 3]), 1, "logits"),
    (torch.randn(0, 5), torch.zeros(0, dtype=torch.long), 1, "logits"),
])
def test_topk_error_rejects_bad_input(logits, labels, k, match):
    with pytest.raises(ValueError, match=match):
        A.topk_error(logits, labels, k)


# --- layer table and receptive fields -------------------------------------------------------------

HAND_STACKS = [
    # No ReLUs: an inactive unit would hide its pixels from the measured field.
    ("three 3x3 convs", lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 3, 3, padding=1),
                                              nn.Conv2d(3, 4, 3)), (7, 7)),
    ("3x3 stride 2 then 3x3", lambda: nn.Sequential(nn.Conv2d(2, 3, 3, stride=2), nn.Conv2d(3, 4, 3)), (7, 7)),
    ("one 7x7", lambda: nn.Sequential(nn.Conv2d(2, 4, 7)), (7, 7)),
    ("dilated 3x3", lambda: nn.Sequential(nn.Conv2d(2, 4, 3, dilation=2)), (5, 5)),
    ("avgpool 2 then 3x3", lambda: nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(2, 4, 3)), (6, 6)),
    ("3x5 kernel, stride (2, 1), then 3x3", lambda: nn.Sequential(nn.Conv2d(2, 3, (3, 5), stride=(2, 1)),
                                                                   nn.Conv2d(3, 4, 3)), (7, 7)),
    ("1x5 then 5x1", lambda: nn.Sequential(nn.Conv2d(2, 3, (1, 5)), nn.Conv2d(3, 4, (5, 1))), (5, 5)),
    ("1x3 stride (1, 3) then 3x3", lambda: nn.Sequential(nn.Conv2d(2, 3, (1, 3), stride=(1, 3)),
                                                          nn.Conv2d(3, 4, 3)), (3, 9)),
]


@pytest.mark.parametrize("name, build, field", HAND_STACKS, ids=[s[0] for s in HAND_STACKS])
def test_receptive_field_hand_worked_and_measured(name, build, field):
    torch.manual_seed(0)
    model = build()
    rows = A.layer_table(model, (2, 23, 25))
    assert rows[-1]["receptive_field"] == field
    assert A.empirical_receptive_field(model, (2, 23, 25), channel=3) == field
    assert_no_hooks(model)


def test_layer_table_rows_match_a_real_forward():
    model = A.lenet5().double()
    rows = A.layer_table(model, (1, 32, 32))
    names = [name for name, m in model.named_children()]
    assert [r["name"] for r in rows] == names
    assert [r["type"] for r in rows] == [type(m).__name__ for m in model.children()]
    x = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    for row, layer in zip(rows, model.children()):
        x = layer(x)
        assert row["output_shape"] == tuple(x.shape[1:])
        assert row["parameters"] == sum(p.numel() for p in layer.parameters())
    # conv 5 -> pool 2 (6) -> conv 5 at jump 2 (14) -> pool 2 (16); no field for non-window layers
    assert [r["receptive_field"] for r in rows[:6]] == [(5, 5), None, (6, 6), (14, 14), None, (16, 16)]
    assert all(r["receptive_field"] is None for r in rows[6:])


def test_layer_table_follows_the_main_path_of_a_resnet():
    model = A.resnet(18)
    rows = {r["name"]: r for r in A.layer_table(model, (3, 64, 64))}
    # 7x7/2 conv (7), 3x3/2 pool (11, jump 4), four 3x3 convs at jump 4 (+8 each) = 43
    assert rows["layer1.1.conv2"]["receptive_field"] == (43, 43)
    # the 1x1 stride-2 shortcut sees its block input (43) and does not widen the main path
    assert rows["layer2.0.downsample.0"]["receptive_field"] == (43, 43)
    assert rows["layer2.0.conv2"]["receptive_field"] == (43 + 8 + 16,) * 2
    assert rows["layer2.1.conv1"]["receptive_field"] == (43 + 8 + 16 + 16,) * 2
    assert rows["layer4.1.conv2"]["receptive_field"] == (435, 435)  # ResNet-18's published value
    assert rows["layer4.1.conv2"]["output_shape"] == (512, 2, 2)
    assert_no_hooks(model)

    by_stage = A.layer_table(model, (3, 64, 64), max_depth=1)
    assert [r["name"] for r in by_stage] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                             "layer4", "avgpool", "flatten", "fc"]
    assert sum(r["parameters"] for r in by_stage) == 11_689_512
    assert by_stage[7]["receptive_field"] == (435, 435) and by_stage[7]["output_shape"] == (512, 2, 2)


def test_layer_table_takes_the_widest_inception_branch():
    torch.manual_seed(0)
    model = nn.Sequential(A.InceptionModule(3, 2, 2, 2, 2, 2, 2), nn.Conv2d(8, 2, 3, padding=1)).double()
    for m in model.modules():  # positive weights on a positive image keep every ReLU on
        if isinstance(m, nn.Conv2d):
            m.weight.data.abs_()
    rows = A.layer_table(model, (3, 15, 15))
    # branches: 1x1 (1), 1x1+3x3 (3), 1x1+5x5 (5), pool 3x3+1x1 (3); concatenation then a 3x3 conv: 5 + 2
    assert rows[-1]["receptive_field"] == (7, 7)
    assert A.empirical_receptive_field(model, (3, 15, 15), channel=1) == (7, 7)


def test_layer_table_restores_mode_and_removes_hooks_after_an_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 5), nn.BatchNorm2d(2), nn.Dropout())
    model.train()
    model[2].eval()
    with pytest.raises(ValueError, match="input_size"):
        A.layer_table(model, (1, 3, 3))
    assert_no_hooks(model)
    assert [m.training for m in model.modules()] == [True, True, True, False]
    A.layer_table(model, (1, 7, 6))
    assert_no_hooks(model)
    assert [m.training for m in model.modules()] == [True, True, True, False]
    assert torch.equal(model[1].running_mean, torch.zeros(2))  # ran in eval mode: statistics untouched


@pytest.mark.parametrize("bad", [(1, 8), (1, 0, 8), 8, (1, 8.0, 8)])
def test_layer_table_rejects_bad_input_size(bad):
    with pytest.raises(ValueError, match="input_size"):
        A.layer_table(A.lenet5(), bad)
    with pytest.raises(ValueError, match="max_depth"):
        A.layer_table(A.lenet5(), (1, 32, 32), max_depth=0)


def test_format_layer_table():
    rows = A.layer_table(A.googlenet(num_classes=10), (3, 64, 64), max_depth=1)
    text = A.format_layer_table(rows)
    lines = text.splitlines()
    assert len(lines) == len(rows) + 4  # header, rule, rows, rule, total
    assert lines[0].split() == ["layer", "type", "output", "params", "field"]
    assert lines[-1] == f"total parameters: {A.count_parameters(A.googlenet(num_classes=10)):,}"
    assert any(line.split()[:3] == ["inception3a", "InceptionModule", "256x8x8"] for line in lines)
    with pytest.raises(ValueError, match="rows"):
        A.format_layer_table("conv1")


def test_empirical_receptive_field_leaves_the_model_alone_and_checks_arguments():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 3, 3)).train()
    before = [p.clone() for p in model.parameters()]
    assert A.empirical_receptive_field(model, (2, 12, 9)) == (5, 5)
    assert all(p.dtype == torch.float32 and p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.training and model[0].training
    with pytest.raises(ValueError, match="channel"):
        A.empirical_receptive_field(model, (2, 12, 9), channel=3)
    with pytest.raises(ValueError, match="input_size"):
        A.empirical_receptive_field(model, (2, 4, 3))
    with pytest.raises(ValueError, match="feature map"):
        A.empirical_receptive_field(A.lenet5(), (1, 32, 32))


def test_ilsvrc_top5_story():
    # The deck's "ImageNet performance" slide: every winner, and VGG second in 2014 behind GoogLeNet.
    assert [e.top5_error for e in A.ILSVRC_TOP5] == [28.2, 25.8, 16.4, 11.7, 7.3, 6.7, 3.57]
    assert [e.entry for e in A.ILSVRC_TOP5][2::2] == ["AlexNet", "VGG", "ResNet"]
    assert [e.layers for e in A.ILSVRC_TOP5] == [None, None, 8, 8, 19, 22, 152]
    winners = [e for e in A.ILSVRC_TOP5 if e.place == 1]
    assert [e.year for e in winners] == list(range(2010, 2016))
    vgg, googlenet = (e for e in A.ILSVRC_TOP5 if e.year == 2014)
    assert (vgg.entry, vgg.place, googlenet.entry, googlenet.place) == ("VGG", 2, "GoogLeNet", 1)
    assert googlenet.top5_error < vgg.top5_error
