"""The data-only format between the grader and a student's kernel: faithful for honest values,
refusing everything else with a message, and never trusting what it decodes."""
import json
import math

import numpy as np
import pytest
import torch

from course_lib.grading import serialize
from course_lib.grading.serialize import UnsupportedValue, decode, dumps, encode, loads, parse


def roundtrip(value, **kwargs):
    return loads(dumps(value), **kwargs)


@pytest.mark.parametrize("dtype", [
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
])
def test_tensors_round_trip_exactly_for_every_dtype(dtype):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64) * 50).to(dtype)
    y = roundtrip(x)
    assert type(y) is torch.Tensor and y.dtype == dtype and y.shape == x.shape
    assert torch.equal(y, x)


def test_tensor_layouts_that_need_care():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 6, generator=gen)
    for value in [x.transpose(0, 2), x[:, ::2, 1:], torch.tensor(2.5), torch.empty(0, 3, dtype=torch.float64),
                  x.clone().requires_grad_(True), torch.nn.Parameter(x.clone())]:
        back = roundtrip(value)
        assert type(back) is torch.Tensor and back.shape == value.shape and back.dtype == value.dtype
        assert torch.equal(back, value.detach())


def test_nonfinite_values_survive_and_stay_strict_json():
    x = torch.tensor([math.nan, math.inf, -math.inf, 1.0])
    back = roundtrip({"t": x, "f": [math.nan, math.inf, -math.inf]})
    assert torch.equal(back["t"].isnan(), x.isnan()) and back["t"][1:].tolist() == [math.inf, -math.inf, 1.0]
    assert math.isnan(back["f"][0]) and back["f"][1:] == [math.inf, -math.inf]
    assert "NaN" not in dumps(math.nan) and "Infinity" not in dumps([math.inf])


def test_containers_keep_their_kind():
    value = {"size": torch.Size([2, 3]), "pair": (1, (2.5, None)), "list": [True, "x", [1]], "empty": ()}
    back = roundtrip(value)
    assert back == {"size": (2, 3), "pair": (1, (2.5, None)), "list": [True, "x", [1]], "empty": ()}
    assert type(back["size"]) is tuple and type(back["list"]) is list and type(back["list"][0]) is bool


def test_huge_ints_and_plain_scalars():
    for value in [0, -7, 2**80, 1.5, -0.0, "ünïcode", None, False]:
        back = roundtrip(value)
        assert back == value and type(back) is type(value)


class AlwaysEqual:
    def __eq__(self, other):
        return True


class LyingInt(int):
    def __eq__(self, other):
        return True


@pytest.mark.parametrize("value, message", [
    (np.arange(3), "unsupported numpy.ndarray"),
    (np.float64(1.0), "unsupported numpy.float64"),
    (AlwaysEqual(), "unsupported"),
    (LyingInt(3), "unsupported"),
    ({1: 2}, "keys are not all strings"),
    ({1, 2}, "unsupported set"),
    (lambda: 0, "unsupported function"),
    (torch.zeros(2, device="meta"), "meta device"),
    (torch.zeros(3).to_sparse(), "dense"),
    (torch.zeros(2, dtype=torch.float8_e4m3fn), "dtype"),
])
def test_unsupported_values_are_refused_with_a_message(value, message):
    with pytest.raises(UnsupportedValue, match=message):
        encode(value)


def test_self_containing_and_deep_values_are_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(UnsupportedValue, match="nested"):
        encode(loop)
    deep = []
    for _ in range(serialize.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(UnsupportedValue, match="nested"):
        encode(deep)


def test_size_budget_stops_a_flood():
    with pytest.raises(UnsupportedValue, match="too large"):
        encode(torch.zeros(1000, 1000), limit=1_000_000)
    with pytest.raises(UnsupportedValue, match="too large"):
        encode(["x" * 1000] * 2000, limit=1_000_000)
    assert decode(encode(torch.zeros(10, 10), limit=1_000_000)).shape == (10, 10)


def tensor_doc(**changes):
    doc = encode(torch.arange(6, dtype=torch.int32).view(2, 3))
    doc["$tensor"].update(changes)
    return doc


@pytest.mark.parametrize("data, message", [
    (tensor_doc(dtype="object"), "malformed tensor"),
    (tensor_doc(shape=[3, 3]), "bytes for shape"),
    (tensor_doc(shape=[-2, -3]), "shape"),
    (tensor_doc(data="***"), "not base64"),
    (tensor_doc(device="cuda:0"), "returned a tensor on cuda:0, but the inputs were on cpu"),
    ({"$pickle": "gASV"}, "malformed value tagged"),
    ({"$tuple": [1], "$dict": {}}, "malformed value of type dict"),
    ({"$float": "1e400"}, "malformed"),
])
def test_decoding_refuses_malformed_data(data, message):
    with pytest.raises(ValueError, match=message):
        decode(data, device="cpu")


def test_decoding_sanitises_bool_bytes_and_checks_device_only_when_asked():
    doc = encode(torch.tensor([True, False]))
    doc["$tensor"]["data"] = "AgA="  # bytes 2, 0: not a valid bool
    assert decode(doc).tolist() == [True, False]
    assert decode(tensor_doc(device="cuda:0")).shape == (2, 3)


def test_parse_is_strict_and_bounded():
    with pytest.raises(ValueError, match="bare NaN"):
        parse('[NaN]')
    with pytest.raises(ValueError):
        parse("{not json")
    with pytest.raises(ValueError, match="nested too deeply"):
        parse("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="limit"):
        parse(" " * (serialize.MAX_BYTES + 1))
    assert parse(json.dumps({"a": [1, 2.5]})) == {"a": [1, 2.5]}
