"""Graders of lecture 03: the course_lib answers pass, plausible wrong answers fail with a message that
names the failing case, and odd answers are explained rather than crashing the checker."""
import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs as tv_vgg_cfgs
from torchvision.models.vgg import make_layers as tv_make_layers

from course_lib import architectures as A
from course_lib.grading import check, exercise_names
from course_lib.grading import architectures as G

LECTURE = "03_architectures"


# --- plausible wrong answers ------------------------------------------------------------------------

def make_features(relu_first=False, no_relu=False, kernel_three=False, padding=True, fixed_in=False, avg_pool=False):
    def vgg_features(config_list, in_channels=3, batch_norm=False):
        layers, channels = [], 3 if fixed_in else in_channels
        for entry in config_list:
            if entry == "M":
                layers.append(nn.AvgPool2d(2) if avg_pool else nn.MaxPool2d(2, 2))
                continue
            kernel, out = entry if isinstance(entry, tuple) else (3, entry)
            kernel = 3 if kernel_three else kernel
            layers.append(nn.Conv2d(channels, out, kernel, padding=kernel // 2 if padding else 0))
            norm = [nn.BatchNorm2d(out)] if batch_norm else []
            relu = [] if no_relu else [nn.ReLU()]
            layers += relu + norm if relu_first else norm + relu
            channels = out
        return nn.Sequential(*layers)

    return vgg_features


def conv_unit(c_in, c_out, k, bias=False, norm=True):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias),
                         *([nn.BatchNorm2d(c_out, eps=1e-3)] if norm else []), nn.ReLU())


def make_inception(bias=False, norm=True, project_naive_pool=False, fixed_kernel=None, no_padding=False):
    class InceptionModule(nn.Module):
        def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced=True, *,
                     large_kernel=5):
            super().__init__()
            k = fixed_kernel or large_kernel

            def unit(c_in, c_out, kernel):
                layer = conv_unit(c_in, c_out, kernel, bias, norm)
                if no_padding:
                    layer[0].padding = (0, 0)
                return layer

            pool = nn.MaxPool2d(3, 1, 1)
            self.b1 = unit(in_channels, ch1x1, 1)
            if reduced:
                self.b2 = nn.Sequential(unit(in_channels, ch3x3red, 1), unit(ch3x3red, ch3x3, 3))
                self.b3 = nn.Sequential(unit(in_channels, ch5x5red, 1), unit(ch5x5red, ch5x5, k))
                self.b4 = nn.Sequential(pool, unit(in_channels, pool_proj, 1))
            else:
                self.b2, self.b3 = unit(in_channels, ch3x3, 3), unit(in_channels, ch5x5, k)
                self.b4 = nn.Sequential(pool, unit(in_channels, pool_proj, 1)) if project_naive_pool else pool

        def forward(self, x):
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)

    return InceptionModule


def make_block(shortcut=True, relu_before_add=False, always_project=False, stride_on_second=False,
               projection_norm=True, final_relu=True):
    class ResidualBlock(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            s1, s2 = (1, stride) if stride_on_second else (stride, 1)
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, s1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, s2, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.proj = None
            if always_project or stride != 1 or in_channels != out_channels:
                self.proj = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          *([nn.BatchNorm2d(out_channels)] if projection_norm else []))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            if relu_before_add:
                out = torch.relu(out)
            if shortcut:
                out = out + (x if self.proj is None else self.proj(x))
            return torch.relu(out) if final_relu else out

    return ResidualBlock


def topk_accuracy(logits, labels, k):
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(1).to(logits.dtype).mean()


WRONG = {
    "vgg_features": [
        make_features(relu_first=True),  # BatchNorm after the ReLU
        make_features(no_relu=True),
        make_features(kernel_three=True),  # ignores (kernel, channels) pairs' kernel
        make_features(padding=False),
        make_features(fixed_in=True),  # ignores in_channels
        make_features(avg_pool=True),
    ],
    "inception_output_channels": [
        lambda i, a, b, c, d, e, p, reduced=True: a + c + e + p,  # naive module still counts pool_proj
        lambda i, a, b, c, d, e, p, reduced=True: a + c + e + (i if reduced else p),  # branches swapped
        lambda i, a, b, c, d, e, p, reduced=True: a + b + c + d + e + p,  # adds the reductions too
        lambda i, a, b, c, d, e, p, reduced=True: a + c + e,  # forgets the pooling branch
    ],
    "InceptionModule": [
        make_inception(bias=True),  # conv bias next to BatchNorm's shift
        make_inception(norm=False),
        make_inception(project_naive_pool=True),
        make_inception(fixed_kernel=5),  # ignores large_kernel
        make_inception(no_padding=True),  # branches no longer line up
    ],
    "ResidualBlock": [
        make_block(shortcut=False),  # a plain block
        make_block(relu_before_add=True),
        make_block(always_project=True),
        make_block(stride_on_second=True),
        make_block(projection_norm=False),
        make_block(final_relu=False),
    ],
    "topk_error": [
        topk_accuracy,
        lambda logits, labels, k: 1 - (logits.topk(k, dim=1, largest=False).indices == labels[:, None]).any(1).to(logits.dtype).mean(),
        lambda logits, labels, k: 1 - topk_accuracy(logits, labels, max(k - 1, 1)),  # off by one
        lambda logits, labels, k: float(1 - topk_accuracy(logits, labels, k)),  # a Python float, not a tensor
        lambda logits, labels, k: (1 - topk_accuracy(logits, labels, k)) * len(labels),  # a count, not a fraction
    ],
}

REFERENCE = {
    "vgg_features": A.vgg_features,
    "inception_output_channels": A.inception_output_channels,
    "InceptionModule": A.InceptionModule,
    "ResidualBlock": A.ResidualBlock,
    "topk_error": A.topk_error,
}


def test_every_exercise_has_wrong_answers_listed():
    assert exercise_names(LECTURE) == list(REFERENCE)  # notebook order
    assert set(WRONG) == set(REFERENCE)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_solution_passes(name):
    result = check(name, REFERENCE[name])
    assert result.passed and result.points == result.max_points, result.message


@pytest.mark.parametrize("name,index", [(n, i) for n, fns in WRONG.items() for i in range(len(fns))])
def test_wrong_answers_fail_with_a_named_case(name, index, assert_rejected):
    assert_rejected(name, WRONG[name][index])


@pytest.mark.parametrize("factory, name", [(make_features, "vgg_features"), (make_inception, "InceptionModule"),
                                           (make_block, "ResidualBlock")])
def test_wrong_answer_factories_are_right_with_no_mistake_switched_on(factory, name):
    # So each wrong answer above fails because of its one mistake.
    result = check(name, factory())
    assert result.passed, result.message


def test_reference_passes_hidden_cases():
    for name in ("ResidualBlock", "InceptionModule", "vgg_features"):
        result = check(name, REFERENCE[name], seed=4242)
        assert result.passed, result.message


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
