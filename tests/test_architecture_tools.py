"""Lecture 03's explorer (widgets.architecture_table) and bench row (one resnet18 training step)."""
import re

import pytest
import torch

from course_lib import architectures as A
from course_lib import bench, widgets


@pytest.mark.parametrize("name", list(widgets.ARCHITECTURES))
def test_architecture_table_totals_match_the_model(name):
    builder, args, channels = widgets.ARCHITECTURES[name]
    size = 32 if name == "lenet5" else 96
    text = widgets.architecture_table(name, size=size, max_depth=1)
    with torch.device("meta"):
        model = getattr(A, builder)(*args)
        out = model(torch.empty(1, channels, size, size))
    assert text.startswith(f"{name} on a {channels}x{size}x{size} input")
    assert f"all parameters (count_parameters): {A.count_parameters(model):,}" in text
    assert f"output {out.shape[1]} |" in text


def test_architecture_table_rows_follow_max_depth_and_reject_bad_input():
    assert len(widgets.architecture_table("resnet18", 64).splitlines()) > len(
        widgets.architecture_table("resnet18", 64, max_depth=1).splitlines())
    assert re.search(r"receptive field of the last conv/pool layer 16x16", widgets.architecture_table("lenet5", 32))
    with pytest.raises(ValueError, match="name"):
        widgets.architecture_table("resnet20")
    with pytest.raises(ValueError, match="input_size"):
        widgets.architecture_table("lenet5", 64)


def test_bench_train_step_updates_the_model_even_under_no_grad():
    torch.manual_seed(0)
    model = A.resnet(18, num_classes=4)
    step = bench._train_step(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 3]))
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():  # bench.run times every row under no_grad
        step()
    assert all(p.grad is not None for p in model.parameters())
    assert not torch.equal(before[0], model.conv1.weight)


def test_bench_resnet18_row_is_reduced_on_cpu_and_runs():
    (row,) = bench._architecture_rows(torch.device("cpu"), quick=False)
    assert row.shape == "x[8,3,112,112] reduced: CPU/quick"
    assert row.reference_name == "torchvision resnet18"
    with torch.no_grad():
        row.ours(), row.reference()
