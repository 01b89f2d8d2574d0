"""The grading engine: exercises, cases, comparison and the result a student sees.

An :class:`Exercise` knows how to draw its cases (the lecture's worked examples first, then random
ones from a seed), how to run a student's function on a case (:meth:`Exercise.run`, returning plain
data only), what an *independent* oracle says the answer is, and how to compare the two. The same
pieces serve the student-side :func:`check` and the instructor's isolated grading, which runs
``Exercise.run`` inside the student's kernel and everything else outside it.
"""
from __future__ import annotations

import html
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = [
    "Case",
    "CheckResult",
    "Exercise",
    "REGISTRY",
    "register",
    "exercise_names",
    "get_exercise",
    "case_generator",
    "rand_int",
    "rand_dtype",
    "compare_tensor",
    "compare_value",
    "describe",
    "HIDDEN_SEED_ENV",
]

HIDDEN_SEED_ENV = "COURSE_GRADING_SEED"
PUBLIC_SEED = 1234


def describe(value) -> str:
    """Short human description of a case argument: tensors by shape and dtype, the rest by repr."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if value.numel() <= 6 and value.dim() <= 1:
            return f"tensor({value.tolist()}, {dtype})"
        return f"tensor{list(value.shape)} {dtype}"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{type(value).__name__} of {len(value)}"
    return repr(value)


@dataclass
class Case:
    """One call of a student's function: positional ``args`` and keyword ``kwargs`` (plain data)."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    expected: object = None  # a hand-worked answer; None means "ask the oracle"

    def __post_init__(self):
        if not self.label:
            parts = [describe(a) for a in self.args] + [f"{k}={describe(v)}" for k, v in self.kwargs.items()]
            self.label = ", ".join(parts)


@dataclass
class CheckResult:
    """Outcome of checking one exercise: ``passed``, ``points`` of ``max_points`` and a ``message``.

    ``cases`` lists ``(label, ok, detail)`` for every case run. Shown as HTML in Jupyter and as
    text elsewhere.
    """

    name: str
    passed: bool
    points: float
    max_points: float
    message: str
    cases: list = field(default_factory=list)
    status: str = "graded"  # "graded", "not implemented", "error"

    def __str__(self) -> str:
        mark = "PASS" if self.passed else ("TODO" if self.status == "not implemented" else "FAIL")
        head = f"[{mark}] {self.name}: {self.points:g}/{self.max_points:g} points"
        return f"{head}\n{self.message}" if self.message else head

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else ("#9a6700" if self.status == "not implemented" else "#cf222e")
        mark = "passed" if self.passed else self.status if self.status != "graded" else "failed"
        ticks = "".join("&#10003;" if ok else "&#10007;" for _, ok, _ in self.cases)
        body = f"<pre style='margin:4px 0;white-space:pre-wrap'>{html.escape(self.message)}</pre>" if self.message else ""
        return (
            f"<div style='border-left:4px solid {colour};padding:4px 10px'>"
            f"<b style='color:{colour}'>{html.escape(self.name)}: {mark}</b> "
            f"&mdash; {self.points:g}/{self.max_points:g} points <span style='color:#57606a'>{ticks}</span>{body}</div>"
        )


def case_generator(seed: int | None = None) -> tuple[torch.Generator, bool]:
    """The generator random cases are drawn from, and whether they are hidden.

    The instructor sets ``COURSE_GRADING_SEED`` to draw cases students never saw; otherwise the
    public seed gives every student the same visible cases.
    """
    if seed is None:
        raw = os.environ.get(HIDDEN_SEED_ENV, "").strip()
        if raw:
            try:
                seed = int(raw)
            except ValueError:
                raise ValueError(f"{HIDDEN_SEED_ENV} must be an integer, got {raw!r}") from None
            return torch.Generator().manual_seed(seed), True
        return torch.Generator().manual_seed(PUBLIC_SEED), False
    return torch.Generator().manual_seed(seed), seed != PUBLIC_SEED


def rand_int(gen: torch.Generator, low: int, high: int) -> int:
    """A random int in [low, high] from ``gen`` (how every lecture draws its random cases)."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def rand_dtype(gen: torch.Generator) -> torch.dtype:
    """float32 or float64, at random from ``gen``."""
    return torch.float64 if rand_int(gen, 0, 1) else torch.float32


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return {torch.float64: (1e-7, 1e-9), torch.float16: (1e-2, 1e-3), torch.bfloat16: (2e-2, 1e-2)}.get(dtype, (1e-4, 1e-5))


def compare_tensor(expected: torch.Tensor, got, check_dtype: bool = True, rtol=None, atol=None) -> str | None:
    """``None`` when ``got`` is a tensor equal to ``expected`` (shape, dtype, values), else why not.

    Written with plain arithmetic on fresh tensors rather than ``torch.allclose`` so that odd return
    values (subclasses, objects with a custom ``__eq__``) cannot pass by accident.
    """
    if not isinstance(got, torch.Tensor):
        return f"expected a tensor of shape {list(expected.shape)}, got {type(got).__name__} {_short(got)}"
    got = got.detach().as_subclass(torch.Tensor)
    if tuple(got.shape) != tuple(expected.shape):
        return f"expected shape {list(expected.shape)}, got {list(got.shape)}"
    if check_dtype and got.dtype != expected.dtype:
        return f"expected dtype {expected.dtype}, got {got.dtype}"
    got = got.to("cpu", expected.dtype if expected.is_floating_point() else torch.float64)
    exp = expected.to("cpu", got.dtype)
    if got.numel() == 0:
        return None
    if not expected.is_floating_point():
        bad = got != exp
    else:
        default_rtol, default_atol = _tolerance(expected.dtype)
        rtol = default_rtol if rtol is None else rtol
        atol = default_atol if atol is None else atol
        nonfinite = ~torch.isfinite(got)
        bad = nonfinite | ((got - exp).abs() > atol + rtol * exp.abs())
        bad &= ~(torch.isinf(exp) & (got == exp))
    if not bool(bad.any()):
        return None
    index = tuple(int(i) for i in torch.nonzero(bad)[0])
    where = f" at index {list(index)}" if index else ""
    count = int(bad.sum())
    return (
        f"{count} of {got.numel()} values differ; first{where}: expected {float(exp[index]):.6g}, "
        f"got {float(got[index]):.6g}"
    )


def compare_value(expected, got, rel: float = 1e-9) -> str | None:
    """Compare plain numbers (ints exactly, floats within ``rel``), tuples/lists element by element."""
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected {expected!r}, got {_short(got)}"
        for e, g in zip(expected, got):
            if compare_value(e, g, rel) is not None:
                return f"expected {expected!r}, got {_short(got)}"
        return None
    if isinstance(expected, bool) or isinstance(got, bool):
        return None if type(got) is type(expected) and got == expected else f"expected {expected!r}, got {_short(got)}"
    if isinstance(expected, int):
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
            got = int(got)
        if type(got) is not int:
            return f"expected the int {expected}, got {type(got).__name__} {_short(got)}"
        return None if got == expected else f"expected {expected}, got {got}"
    if isinstance(expected, float):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = float(got)
        if type(got) not in (int, float):
            return f"expected a number close to {expected:.6g}, got {type(got).__name__} {_short(got)}"
        if math.isfinite(got) and abs(got - expected) <= rel * max(1.0, abs(expected)):
            return None
        return f"expected {expected:.6g}, got {got!r}"
    raise TypeError(f"compare_value cannot compare {type(expected).__name__}")


def _short(value, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # a student object whose __repr__ raises must not crash the grader
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Exercise:
    """A gradable exercise.

    ``cases(gen, hidden)`` returns the list of :class:`Case` (worked examples first);
    ``oracle(case)`` gives the expected answer from an independent source (torch built-ins, an
    empirical measurement, a hand-worked value); ``run(fn, case)`` calls the student's function and
    reduces what it returns to plain data (tensors, numbers, lists) — it is the only part that runs
    in the student's process during instructor grading; ``compare(expected, got)`` returns ``None``
    or a one-line reason.
    """

    name: str
    lecture: str
    points: float
    cases: Callable
    oracle: Callable
    compare: Callable = compare_tensor
    run: Callable = None
    kind: str = "function"  # or "class": what the student writes

    def call(self, fn, case: Case):
        """Run the student's ``fn`` on ``case`` and return plain data."""
        if self.run is not None:
            return self.run(fn, case)
        return fn(*case.args, **case.kwargs)

    def expected(self, case: Case):
        """The right answer for ``case``: its hand-worked value, or the oracle's."""
        return case.expected if case.expected is not None else self.oracle(case)


REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    if exercise.name in REGISTRY:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    REGISTRY[exercise.name] = exercise
    return exercise


def get_exercise(name: str) -> Exercise:
    from . import _load_all

    _load_all()
    if name not in REGISTRY:
        raise ValueError(f"name must be one of the exercises {sorted(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def exercise_names(lecture: str | None = None) -> list[str]:
    """Names of all exercises (in lecture order), or of one lecture's (e.g. ``"01_conv_arithmetic"``)."""
    from . import _load_all

    _load_all()
    chosen = [ex for ex in REGISTRY.values() if lecture is None or ex.lecture == lecture]
    return [ex.name for ex in sorted(chosen, key=lambda ex: ex.lecture)]  # stable: notebook order within a lecture
