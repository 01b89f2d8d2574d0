"""Runtime facts a notebook needs: which device, which mode, which library version.

Everything here is cheap and side-effect free except :func:`setup` (prints one line) and
:func:`seed_everything` (seeds the global generators).
"""
from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Settings", "settings", "device", "seed_everything", "in_colab", "check_version", "choose_threads", "setup"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Settings:
    """Course-wide switches, read from the environment once at import.

    ``fast``: ``COURSE_FAST=1`` shrinks data and epochs so every notebook runs in well under a
    minute on two CPU cores (CI uses it). Students normally run in full mode.
    """

    fast: bool = False

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(fast=_env_flag("COURSE_FAST"))

    def pick(self, fast, full):
        """Return ``fast`` in fast mode and ``full`` otherwise (epochs, dataset sizes, ...)."""
        return fast if self.fast else full


settings = Settings.from_env()


def device() -> torch.device:
    """The best available device: cuda > mps > cpu. ``COURSE_DEVICE`` (e.g. ``cpu``) overrides."""
    forced = os.environ.get("COURSE_DEVICE", "").strip()
    if forced:
        try:
            return torch.device(forced)
        except RuntimeError as err:
            raise ValueError(f"COURSE_DEVICE={forced!r} is not a torch device name: {err}") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU generator seeded the same way."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def _parse(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_version(required: str | None) -> None:
    """Raise ``RuntimeError`` with an upgrade hint when the installed library is older than ``required``."""
    from . import __version__

    if required is None:
        return
    if not isinstance(required, str) or not required[:1].isdigit():
        raise ValueError(f"required must be a version string like '0.1', got {required!r}")
    if _parse(__version__) < _parse(required):
        raise RuntimeError(
            f"this notebook needs course_lib >= {required}, but {__version__} is installed; "
            "run `pip install -U -e .` in the course folder; on Colab, Runtime > Disconnect and delete runtime, "
            "then run the notebook's first cell again (it installs the current course)"
        )


def _cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_threads(cores: int | None = None, load: float | None = None) -> tuple[int, str]:
    """How many threads torch should use here, and why (for :func:`setup`'s status line).

    Torch's default, one thread per core, is right on a quiet machine and badly wrong on a busy one:
    its worker threads spin while they wait for each other, so on two cores that another process
    already keeps busy, small operations get several times slower (a lecture ran 8x slower with two
    threads than with one). The rule: ``COURSE_THREADS`` (or ``OMP_NUM_THREADS``) when set; else one
    thread per core that the last minute's load average leaves idle, at least one and at most
    torch's own default. On one or two cores it is one thread, because the notebook's own kernel and
    the browser need the other.
    """
    for name in ("COURSE_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(name, "").strip()
        if raw:
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {raw!r}")
            return value, f"{name}={value}"
    cores = _cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows has no load average
            load = 0.0
    if cores <= 2:
        return 1, f"{cores} cores: one thread leaves a core to Jupyter"
    idle = int(cores - load)
    threads = max(1, min(idle, torch.get_num_threads(), cores))
    return threads, f"{cores} cores, load {load:.1f}"


def setup(requires: str | None = None, seed: int = 0, quiet: bool = False) -> torch.device:
    """Start a notebook: check the library version, seed everything, choose the torch thread count
    (:func:`choose_threads`), make widgets render on Colab, and print one status line.

    Returns the device the notebook should use.
    """
    from . import __version__

    check_version(requires)
    seed_everything(seed)
    threads, why = choose_threads()
    torch.set_num_threads(threads)
    dev = device()
    if in_colab():
        _enable_colab_widgets()
    if not quiet:
        mode = "fast (COURSE_FAST=1)" if settings.fast else "full"
        where = " on Colab" if in_colab() else ""
        print(f"course_lib {__version__} | torch {torch.__version__} | device {dev}{where} | "
              f"{threads} CPU thread{'s' if threads > 1 else ''} ({why}) | {mode} mode | seed {seed}")
    return dev


def _enable_colab_widgets() -> None:
    """Colab renders ipywidgets 8 (the explorers) only through its custom widget manager."""
    try:
        from google.colab import output
    except ImportError:  # "google.colab" imported but without its output module: nothing to enable
        return
    output.enable_custom_widget_manager()
