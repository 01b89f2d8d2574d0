"""course_lib.pooling against torch's pooling and autograd."""
import pytest
import torch
import torch.nn.functional as F

from course_lib import pooling

SLIDE = torch.tensor([[1.0, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]).view(1, 1, 4, 4)
CASES = [(2, None, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 1)), (2, 3, 0), (4, 4, 2)]


def test_lecture_example():
    assert pooling.max_pool2d(SLIDE, 2, 2).squeeze().tolist() == [[6, 8], [3, 4]]
    assert pooling.avg_pool2d(SLIDE, 2).squeeze().tolist() == [[3.25, 5.25], [2, 2]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel,stride,padding", CASES)
def test_pooling_matches_torch(dtype, kernel, stride, padding):
    x = torch.randn(3, 4, 11, 9, dtype=dtype, generator=torch.Generator().manual_seed(0)) - 1  # mostly negative
    assert torch.equal(pooling.max_pool2d(x, kernel, stride, padding), F.max_pool2d(x, kernel, stride, padding))
    assert torch.allclose(pooling.avg_pool2d(x, kernel, stride, padding), F.avg_pool2d(x, kernel, stride, padding))


def test_unbatched_input_and_channel_independence():
    x = torch.randn(3, 8, 10)
    assert torch.equal(pooling.max_pool2d(x, 2), F.max_pool2d(x, 2))
    per_channel = torch.cat([pooling.max_pool2d(x[c : c + 1], 2) for c in range(3)])
    assert torch.equal(pooling.max_pool2d(x, 2), per_channel)


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 1), (3, 2), ((2, 3), (1, 2)), (2, 3)])
def test_max_pool_backward_matches_autograd(kernel, stride):
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = F.max_pool2d(x, kernel, stride)
    g = torch.randn_like(out)
    (expected,) = torch.autograd.grad(out, x, g)
    assert torch.allclose(pooling.max_pool2d_backward(g, x.detach(), kernel, stride), expected)


def test_max_pool_backward_routes_to_winners_and_first_of_ties():
    grad = pooling.max_pool2d_backward(torch.ones(1, 1, 2, 2), SLIDE, 2)
    assert grad.squeeze().tolist() == [[0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]]
    ties = torch.ones(1, 1, 2, 2, requires_grad=True)
    F.max_pool2d(ties, 2).backward(torch.ones(1, 1, 1, 1))
    assert torch.equal(pooling.max_pool2d_backward(torch.ones(1, 1, 1, 1), ties.detach(), 2), ties.grad)


@pytest.mark.parametrize(
    "call,argument",
    [
        (lambda: pooling.max_pool2d(torch.zeros(5, 5), 2), "x"),
        (lambda: pooling.max_pool2d(torch.zeros(1, 1, 5, 5), 0), "kernel"),
        (lambda: pooling.avg_pool2d(torch.zeros(1, 1, 5, 5), 2, stride=-1), "stride"),
        (lambda: pooling.max_pool2d(torch.zeros(1, 1, 5, 5), 2, padding=2), "padding"),
        (lambda: pooling.max_pool2d(torch.zeros(1, 1, 2, 2), 3), "kernel"),
        (lambda: pooling.max_pool2d_backward(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 4, 4), 2), "grad_out"),
    ],
)
def test_bad_input_names_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
