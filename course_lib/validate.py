"""Argument checks shared by every module, so that bad input fails early with a ``ValueError`` that
names the argument and the value it got."""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["pair", "positive_int", "nonneg_int", "tensor_rank", "same_device", "floating"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1, else ``ValueError`` naming ``name``."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def nonneg_int(name: str, value) -> int:
    """``value`` as an int >= 0, else ``ValueError`` naming ``name``."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def pair(name: str, value, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints (height, width), each >= ``minimum``, as a tuple."""
    if _is_int(value):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(_is_int(v) and v >= minimum for v in value)
    ):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(value[0]), int(value[1])


def tensor_rank(name: str, value, ranks: int | tuple[int, ...]) -> torch.Tensor:
    """``value`` if it is a tensor with one of the allowed ranks, else ``ValueError``."""
    ranks = (ranks,) if isinstance(ranks, int) else ranks
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{name} must be {want}, got shape {tuple(value.shape)}")
    return value


def floating(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` if it has a floating dtype, else ``ValueError``."""
    if not value.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {value.dtype}")
    return value


def same_device(**tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` when the given tensors live on different devices."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must share one device, got {listing}")
