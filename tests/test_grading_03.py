"""Graders of lecture 03: straightforward student answers pass; every known mistake and other plausible
wrong answers fail with a message that names the failing case; what the texts state (Inception's branch
order and eps, ties in top-k, the calls they forbid, dtypes) is enforced; odd answers are explained."""
import pytest
import torch
from torch import nn
from torchvision.models.googlenet import Inception as TvInception
from torchvision.models.vgg import cfgs as tv_vgg_cfgs
from torchvision.models.vgg import make_layers as tv_make_layers

from course_lib import architectures as A
from course_lib.grading import check, exercise_names, get_exercise
from course_lib.grading import architectures as G
from course_lib.grading.core import case_generator

LECTURE = "03_architectures"
NAMES = exercise_names(LECTURE)


# --- straightforward student answers, written from the exercise texts ------------------------------

def vgg_features(config_list, in_channels=3, batch_norm=False):
    layers, channels = [], in_channels
    for entry in config_list:
        if entry == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        kernel, out = (3, entry) if isinstance(entry, int) else entry
        layers.append(nn.Conv2d(channels, out, kernel, padding=kernel // 2))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU())
        channels = out
    return nn.Sequential(*layers)


def inception_output_channels(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced=True):
    return ch1x1 + ch3x3 + ch5x5 + (pool_proj if reduced else in_channels)


def conv_bn_relu(c_in, c_out, k):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out, eps=0.001), nn.ReLU())


class InceptionModule(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced=True, *, large_kernel=5):
        super().__init__()
        # Registered in another order than the branches run: the check must not care.
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.b4 = conv_bn_relu(in_channels, pool_proj, 1) if reduced else nn.Identity()
        self.b1 = conv_bn_relu(in_channels, ch1x1, 1)
        if reduced:
            self.b3 = nn.Sequential(conv_bn_relu(in_channels, ch5x5red, 1), conv_bn_relu(ch5x5red, ch5x5, large_kernel))
            self.b2 = nn.Sequential(conv_bn_relu(in_channels, ch3x3red, 1), conv_bn_relu(ch3x3red, ch3x3, 3))
        else:
            self.b3 = conv_bn_relu(in_channels, ch5x5, large_kernel)
            self.b2 = conv_bn_relu(in_channels, ch3x3, 3)

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(self.pool(x))], dim=1)


class ResidualBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
                               nn.ReLU(), nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        return torch.relu(self.f(x) + self.shortcut(x))


def topk_error(logits, labels, k):
    own = logits[torch.arange(len(labels)), labels]
    higher = (logits > own[:, None]).sum(1)
    return (higher >= k).to(logits.dtype).mean()


STUDENT = {"vgg_features": vgg_features, "inception_output_channels": inception_output_channels,
           "InceptionModule": InceptionModule, "ResidualBlock": ResidualBlock, "topk_error": topk_error}


def test_every_exercise_has_a_student_answer_and_three_known_mistakes():
    assert NAMES == list(STUDENT)  # notebook order
    for name in NAMES:
        assert len(get_exercise(name).mistakes) >= 3, name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [None, 4242])
def test_a_student_answer_passes_public_and_hidden_cases(name, seed):
    result = check(name, STUDENT[name], seed=seed)
    assert result.passed and result.points == result.max_points, result.message


@pytest.mark.parametrize("factory, name", [(G._vgg_mistake, "vgg_features"), (G._inception_mistake, "InceptionModule"),
                                           (G._block_mistake, "ResidualBlock")])
def test_mistake_factories_are_right_with_no_mistake_switched_on(factory, name):
    # So each known mistake fails because of its one switch.
    result = check(name, factory())
    assert result.passed, result.message


# --- wrong answers ------------------------------------------------------------------------------------

OTHER_WRONG = {  # plausible wrong answers that are not (or not only) one known mistake
    "vgg_features": [G._vgg_mistake(relu_first=True, bias=False)],
    "inception_output_channels": [lambda i, a, b, c, d, e, p, reduced=True: a + c + e + (i if reduced else p)],
    "InceptionModule": [G._inception_mistake(order=(3, 0, 1, 2)), G._inception_mistake(bias=True, eps=1e-5)],
    "ResidualBlock": [G._block_mistake(shortcut=False, final_relu=False)],
    "topk_error": [lambda logits, labels, k: float(topk_error(logits, labels, k)),
                   lambda logits, labels, k: 1 - topk_error(logits, labels, max(k - 1, 1))],
}


@pytest.mark.parametrize("name,index", [(n, i) for n, fns in OTHER_WRONG.items() for i in range(len(fns))])
def test_other_wrong_answers_fail_with_a_named_case(name, index, assert_rejected):
    assert_rejected(name, OTHER_WRONG[name][index])


# --- what the texts state is what the checks enforce (each passed before) ---------------------------

def test_inception_branch_order_and_eps_are_checked_through_the_outputs():
    for mistake in ("branch order", "default eps"):
        fn = next(m.fn for m in get_exercise("InceptionModule").mistakes if m.key == mistake)
        result = check("InceptionModule", fn)
        assert not result.passed, result.message  # right shapes and counts, wrong values
        assert "output (your module and the reference given the same weights" in result.message


def test_ties_at_the_label_resolve_in_its_favour():
    result = check("topk_error", lambda logits, labels, k: ((logits >= logits.gather(1, labels.long()[:, None])).sum(1) - 1 >= k)
                   .to(logits.dtype).mean())
    assert not result.passed and "whose label ties with another class" in result.message
    exercise = get_exercise("topk_error")
    tied = next(c for c in exercise.cases(*case_generator()) if "every class tied" in c.label)
    assert float(exercise.expected(tied)) == 0.0  # nobody scores strictly higher than any label


def test_int32_labels_are_announced_and_used():
    assert get_exercise("topk_error").forms["labels"] == ("tensor int64", "tensor int32")
    assert any(c.args[1].dtype == torch.int32 for c in get_exercise("topk_error").cases(*case_generator()))


class TorchvisionInception(TvInception):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced=True, *, large_kernel=5):
        super().__init__(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)


def _torchvision_block(in_channels, out_channels, stride=1):
    from torchvision.models.resnet import BasicBlock

    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
    return BasicBlock(in_channels, out_channels, stride, downsample)


@pytest.mark.parametrize("name, cheat", [
    ("vgg_features", lambda config_list, in_channels=3, batch_norm=False: tv_make_layers(config_list, batch_norm)),
    ("vgg_features", A.vgg_features),
    ("inception_output_channels", A.inception_output_channels),
    ("InceptionModule", A.InceptionModule),
    ("InceptionModule", TorchvisionInception),
    ("ResidualBlock", A.ResidualBlock),
    ("ResidualBlock", _torchvision_block),
    ("topk_error", A.topk_error),
    ("topk_error", lambda logits, labels, k: 1 - (torch.topk(logits, k).indices == labels[:, None]).any(1).to(logits.dtype).mean()),
    ("topk_error", lambda logits, labels, k: 1 - (logits.topk(k).indices == labels[:, None]).any(1).to(logits.dtype).mean()),
])
def test_forbidden_calls_fail_every_case_and_say_why(name, cheat):
    result = check(name, cheat)
    assert not result.passed and result.points == 0, result.message
    assert "which this exercise asks you not to use" in result.message


def test_a_right_topk_error_in_the_wrong_dtype_is_told_so_first():
    result = check("topk_error", lambda logits, labels, k: topk_error(logits, labels, k).float())
    assert result.message.startswith("Right values, wrong dtype on all") and "float64" in result.message.splitlines()[0]


def test_a_module_output_in_the_wrong_dtype_is_told_so_first():
    class Float32Only(ResidualBlock):
        def forward(self, x):
            return super().forward(x).float()

    result = check("ResidualBlock", Float32Only)
    assert result.message.startswith("Right values, wrong dtype on all"), result.message


# --- odd answers are explained ----------------------------------------------------------------------

class Sneaky(torch.Tensor):
    def __eq__(self, other):
        return True


@pytest.mark.parametrize("answer, words", [
    (lambda logits, labels, k: None, "expected a tensor"),
    (lambda logits, labels, k: torch.tensor(float("nan")), "differ"),
    (lambda logits, labels, k: torch.zeros(len(labels)), "expected shape"),
    (lambda logits, labels, k: torch.tensor(0.5, dtype=torch.float16), "dtype"),
    (lambda logits, labels, k: torch.tensor(9.0).as_subclass(Sneaky), "differ"),
])
def test_odd_topk_answers_are_explained(answer, words):
    result = check("topk_error", answer)
    assert not result.passed and words in result.message


def test_odd_module_answers_are_explained():
    result = check("vgg_features", lambda config_list, in_channels=3, batch_norm=False: None)
    assert "must give a torch.nn.Module, got NoneType" in result.message

    class ReturnsNothing(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()

        def forward(self, x):
            return None

    result = check("ResidualBlock", ReturnsNothing)
    assert not result.passed and "the forward pass must return a tensor, got NoneType" in result.message

    class Crashes(nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, x):
            raise RuntimeError("boom")

    result = check("InceptionModule", Crashes)
    assert "raised RuntimeError: boom" in result.message


def test_stubs_report_not_implemented():
    class Stub(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            raise NotImplementedError()

    result = check("ResidualBlock", Stub)
    assert result.status == "not implemented" and result.points == 0


# --- the grader's own references ----------------------------------------------------------------------

@pytest.mark.parametrize("config", ["A", "D"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_reference_features_equal_torchvision_make_layers(config, batch_norm):
    ours = G._reference_features(tv_vgg_cfgs[config], 3, batch_norm)
    theirs = tv_make_layers(tv_vgg_cfgs[config], batch_norm=batch_norm)
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]


def test_fill_by_shape_ignores_registration_order():
    forward = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    backward = nn.Sequential()
    backward.add_module("norm", nn.BatchNorm2d(3))
    backward.add_module("conv", nn.Conv2d(2, 3, 3))
    G._fill_by_shape(forward), G._fill_by_shape(backward)
    assert torch.equal(forward[0].weight, backward.conv.weight)
    assert torch.equal(forward[1].running_var, backward.norm.running_var)
    assert not torch.equal(forward[1].weight, forward[1].bias)
