"""Data-only JSON for the values that cross between the grader and a student's kernel.

Instructor grading sends each case's inputs into the student's kernel and takes the raw outputs
back. Neither direction may carry code, so this format has no pickle and no classes: only
``None``, ``bool``, ``int``, ``float`` (``nan`` and ``inf`` included), ``str``, ``list``,
``tuple``, ``dict`` with ``str`` keys, and strided tensors, written as their dtype, shape, device
and raw bytes in base64 (little-endian, the byte order of every platform torch runs on).
Anything else is refused with a message a student can act on ("returned an unsupported
numpy.ndarray"), and a budget on the encoded size stops a flood from exhausting memory.

Scalars are matched by exact type, as :func:`~course_lib.grading.core.compare_value` does: a
``numpy.float64`` is refused rather than quietly becoming a ``float``. Tuples, lists and dicts
keep their kind (a ``torch.Size`` arrives as a tuple), and tensor subclasses arrive as plain
tensors, so nothing a subclass overrides survives the trip.
"""
from __future__ import annotations

import base64
import binascii
import json
import math

import torch

__all__ = ["UnsupportedValue", "encode", "decode", "dumps", "loads", "parse", "MAX_BYTES", "MAX_DEPTH"]

MAX_BYTES = 64 * 2**20  # the most one encoded document may hold
MAX_DEPTH = 32  # nesting deeper than any case or answer needs (and it stops self-containing lists)

_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
        torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    )
}
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class UnsupportedValue(ValueError):
    """A value this format cannot carry, or one over the size budget; the message says which."""


def _type_name(value) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


class _Budget:
    def __init__(self, limit: int):
        self.left = limit

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise UnsupportedValue("returned a value too large to grade")


def encode(value, limit: int = MAX_BYTES):
    """``value`` as JSON-ready data (see the module docstring); ``UnsupportedValue`` otherwise."""
    return _encode(value, _Budget(limit), 0)


def _encode(value, budget: _Budget, depth: int):
    if depth > MAX_DEPTH:
        raise UnsupportedValue(f"returned a value nested more than {MAX_DEPTH} levels deep")
    kind = type(value)
    budget.spend(8)
    if value is None or kind is bool or kind is str:
        budget.spend(len(value) if kind is str else 0)
        return value
    if kind is int:
        budget.spend(value.bit_length() // 3)
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, torch.Tensor):
        return {"$tensor": _encode_tensor(value, budget)}
    if isinstance(value, (list, tuple)):
        items = [_encode(item, budget, depth + 1) for item in value]
        return items if isinstance(value, list) else {"$tuple": items}
    if isinstance(value, dict):
        if not all(type(key) is str for key in value):
            raise UnsupportedValue("returned a dict whose keys are not all strings")
        return {"$dict": {key: _encode(item, budget, depth + 1) for key, item in value.items()}}
    raise UnsupportedValue(f"returned an unsupported {_type_name(value)}")


def _encode_tensor(tensor: torch.Tensor, budget: _Budget) -> dict:
    if tensor.layout != torch.strided:
        raise UnsupportedValue(f"returned a {tensor.layout} tensor; return a dense (strided) one")
    tensor = tensor.as_subclass(torch.Tensor)
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise UnsupportedValue(f"returned a tensor of unsupported dtype {tensor.dtype}")
    if tensor.device.type == "meta":
        raise UnsupportedValue("returned a tensor on the meta device, which holds no values")
    budget.spend(tensor.numel() * tensor.element_size() * 4 // 3)
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return {"dtype": name, "shape": list(tensor.shape), "device": str(tensor.device), "data": base64.b64encode(raw).decode("ascii")}


def decode(data, device: str | None = None):
    """Rebuild a value from :func:`encode`'s output; ``ValueError`` for anything malformed.

    Tensors come back on the CPU. With ``device`` given (``"cpu"``), a tensor recorded on another
    device type is refused, so a function that moves data to the GPU is told so instead of passing.
    """
    return _decode(data, device, 0)


def _decode(data, device, depth: int):
    if depth > MAX_DEPTH:
        raise ValueError(f"value nested more than {MAX_DEPTH} levels deep")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [_decode(item, device, depth + 1) for item in data]
    if kind is not dict or len(data) != 1:
        raise ValueError(f"malformed value of type {kind.__name__}")
    (tag, body), = data.items()
    if tag == "$tuple" and type(body) is list:
        return tuple(_decode(item, device, depth + 1) for item in body)
    if tag == "$dict" and type(body) is dict:
        return {key: _decode(item, device, depth + 1) for key, item in body.items()}
    if tag == "$float" and body in _NONFINITE:
        return _NONFINITE[body]
    if tag == "$tensor" and type(body) is dict:
        return _decode_tensor(body, device)
    raise ValueError(f"malformed value tagged {tag!r}")


def _decode_tensor(body: dict, device) -> torch.Tensor:
    dtype = _DTYPES.get(body.get("dtype"))
    shape, where, data = body.get("shape"), body.get("device"), body.get("data")
    if dtype is None or type(where) is not str or type(data) is not str or type(shape) is not list:
        raise ValueError("malformed tensor")
    if not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"malformed tensor shape {shape!r}")
    if device is not None and where.split(":")[0] != device:
        raise ValueError(f"returned a tensor on {where}, but the inputs were on {device}")
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise ValueError("malformed tensor data (not base64)") from None
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(raw) != numel * itemsize:
        raise ValueError(f"malformed tensor: {len(raw)} bytes for shape {shape} of {body['dtype']}")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    if dtype == torch.bool:  # a byte other than 0 or 1 would make an invalid bool
        return (torch.frombuffer(bytearray(raw), dtype=torch.uint8) != 0).reshape(shape)
    return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)


def dumps(value, limit: int = MAX_BYTES) -> str:
    """:func:`encode` then JSON text (strict JSON: no bare NaN)."""
    return json.dumps(encode(value, limit), allow_nan=False, separators=(",", ":"))


def loads(text: str | bytes, device: str | None = None):
    """JSON text from :func:`dumps` back to a value; ``ValueError`` for anything malformed."""
    return decode(parse(text), device)


def parse(text: str | bytes):
    """Strict JSON text to JSON data, refusing documents over ``MAX_BYTES`` and bare ``NaN``."""
    if len(text) > MAX_BYTES:
        raise ValueError(f"{len(text)} bytes is over the {MAX_BYTES // 2**20} MB limit")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _refuse_constant(name: str):
    raise ValueError(f"bare {name} is not allowed; non-finite floats are tagged")
