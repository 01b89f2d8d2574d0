"""course_lib.conv against torch's convolution, autograd and hand-worked cases."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from course_lib import conv

SETTINGS = [  # (stride, padding, dilation), ints and pairs
    (1, 0, 1), (2, 1, 1), (3, 2, 2), ((1, 2), (0, 1), (2, 1)), (4, 0, 1), (2, (2, 0), (1, 3)),
]


@pytest.mark.parametrize("size,kernel,stride,padding,out", [(7, 3, 1, 0, 5), (7, 3, 2, 0, 3), (7, 3, 1, 1, 7), (224, 11, 4, 2, 55)])
def test_output_size_lecture_examples(size, kernel, stride, padding, out):
    assert conv.conv_output_size(size, kernel, stride, padding) == out


def test_output_size_matches_torch_everywhere():
    for size, kernel, stride, padding, dilation in itertools.product(range(1, 12), range(1, 5), range(1, 4), range(3), range(1, 3)):
        if dilation * (kernel - 1) + 1 > size + 2 * padding:
            continue
        x = torch.zeros(1, 1, size, 1)
        w = torch.zeros(1, 1, kernel, 1)
        expected = F.conv2d(x, w, stride=(stride, 1), padding=(padding, 0), dilation=(dilation, 1)).shape[2]
        assert conv.conv_output_size(size, kernel, stride, padding, dilation) == expected


@pytest.mark.parametrize("fn", [conv.conv2d, conv.conv2d_naive])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stride,padding,dilation", SETTINGS)
def test_conv2d_matches_torch(fn, dtype, stride, padding, dilation):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 11, 9, generator=gen, dtype=dtype)
    w = torch.randn(5, 4, 3, 2, generator=gen, dtype=dtype)
    b = torch.randn(5, generator=gen, dtype=dtype)
    expected = F.conv2d(x, w, b, stride, padding, dilation)
    got = fn(x, w, b, stride=stride, padding=padding, dilation=dilation)
    assert got.shape == expected.shape and got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert (got - expected).abs().max() <= tol * expected.abs().max()
    assert torch.allclose(fn(x, w, None, stride, padding, dilation), F.conv2d(x, w, None, stride, padding, dilation), rtol=1e-4, atol=1e-5)


def test_conv2d_relative_error_float64_many_shapes():
    gen = torch.Generator().manual_seed(1)
    for n, c, o, h, w, k in [(1, 1, 1, 5, 5, 1), (2, 3, 8, 16, 7, 5), (4, 16, 8, 14, 14, 3), (1, 2, 3, 4, 30, 4)]:
        x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
        weight = torch.randn(o, c, k, k, generator=gen, dtype=torch.float64)
        expected = F.conv2d(x, weight, padding=k // 2)
        rel = (conv.conv2d(x, weight, padding=k // 2) - expected).norm() / expected.norm()
        assert rel < 1e-5


def test_conv2d_hand_example():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    w = torch.tensor([[[[1.0, 0], [0, -1]]]])  # top-left minus bottom-right
    assert torch.equal(conv.conv2d(x, w), torch.full((1, 1, 3, 3), -5.0))
    assert torch.equal(conv.conv2d_naive(x, w), torch.full((1, 1, 3, 3), -5.0))


def test_conv_params_against_torch_layers():
    for cin, cout, k, bias in [(1, 100, 10, False), (3, 64, 3, True), (64, 64, 1, True), (16, 8, (3, 5), False)]:
        layer = torch.nn.Conv2d(cin, cout, k, bias=bias)
        assert conv.conv_params(cin, cout, k, bias) == sum(p.numel() for p in layer.parameters())
    assert conv.conv_params(1, 100, 10, bias=False) == 10_000


def _measured_field(layers):
    x = torch.ones(1, 1, 200, dtype=torch.float64, requires_grad=True)
    y = x
    for k, s in layers:
        y = F.conv1d(y, torch.ones(1, 1, k, dtype=torch.float64), stride=s)
    (g,) = torch.autograd.grad(y[0, 0, 0], x)
    return int((g != 0).sum())


@pytest.mark.parametrize("layers,expected", [([(3, 1)] * 2, 5), ([(3, 1)] * 3, 7), ([(3, 2), (3, 1)], 7), ([(2, 2)] * 3, 8), ([(7, 2), (3, 2), (3, 1)], 19)])
def test_receptive_field(layers, expected):
    assert conv.receptive_field(layers) == expected == _measured_field(layers)


def test_weight_grad_matches_autograd():
    gen = torch.Generator().manual_seed(2)
    for stride, padding, k in [(1, 0, 3), (2, 1, 3), (3, 2, 5), (1, 1, 1)]:
        x = torch.randn(3, 4, 10, 13, generator=gen, dtype=torch.float64)
        w = torch.zeros(6, 4, k, k, dtype=torch.float64, requires_grad=True)
        out = F.conv2d(x, w, stride=stride, padding=padding)
        g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        (expected,) = torch.autograd.grad(out, w, g)
        got = conv.conv2d_weight_grad(x, g, k, stride, padding)
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_windows_view_matches_unfold():
    x = torch.randn(2, 3, 9, 8)
    win = conv.windows(x, (3, 2), stride=(2, 1), padding=1, dilation=1)
    cols = F.unfold(x, (3, 2), padding=1, stride=(2, 1))  # [N, C*kh*kw, L]
    assert torch.equal(win.permute(0, 1, 4, 5, 2, 3).reshape(2, 3 * 6, -1), cols)


@pytest.mark.parametrize(
    "call,argument",
    [
        (lambda: conv.conv_output_size(7, 3, stride=-1), "stride"),
        (lambda: conv.conv_output_size(3, 7), "kernel"),
        (lambda: conv.conv_output_size(5, 3, padding=-1), "padding"),
        (lambda: conv.conv2d(torch.zeros(3, 5, 5), torch.zeros(1, 3, 3, 3)), "x"),
        (lambda: conv.conv2d(torch.zeros(1, 3, 5, 5), torch.zeros(1, 2, 3, 3)), "weight"),
        (lambda: conv.conv2d(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3)), "kernel"),
        (lambda: conv.conv2d(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 3, 3), stride=0), "stride"),
        (lambda: conv.conv2d(torch.zeros(1, 1, 5, 5), torch.zeros(2, 1, 3, 3), bias=torch.zeros(3)), "bias"),
        (lambda: conv.conv2d_naive(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 3, 3), padding=-2), "padding"),
        (lambda: conv.conv_params(0, 3, 3), "in_channels"),
        (lambda: conv.receptive_field([(3, 0)]), "stride"),
        (lambda: conv.receptive_field("abc"), "layers"),
        (lambda: conv.conv2d_weight_grad(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 4, 4), 3), "grad_out"),
    ],
)
def test_bad_input_names_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
