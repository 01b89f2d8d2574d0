"""The grading engine: exercises, cases, comparison and the result a student sees.

An :class:`Exercise` knows how to draw its cases (the lecture's worked examples first, then random
ones from a seed), how to run a student's function on a case (:meth:`Exercise.run`, returning plain
data only), what an *independent* oracle says the answer is, and how to compare the two. The same
pieces serve the student-side :func:`check` and the instructor's isolated grading, which runs
``Exercise.run`` inside the student's kernel and everything else outside it.
"""
from __future__ import annotations

import html
import importlib
import inspect
import math
import os
import sys
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
    "form_of",
    "render_contract",
    "Mistake",
    "section",
    "ForbiddenWatch",
    "plain_scalars",
    "WRONG_DTYPE",
    "HIDDEN_SEED_ENV",
]

HIDDEN_SEED_ENV = "COURSE_GRADING_SEED"
PUBLIC_SEED = 1234
WRONG_DTYPE = "wrong dtype"  # how every comparison starts a reason that is about the dtype alone


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
    # What each known mistake returns on this case, filled in the first time a diagnosis needs it
    # (instructor grading shares one Case between all students).
    mistake_outputs: dict = field(default_factory=dict, repr=False, compare=False)

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
    diagnosis: str | None = None  # the key of the known mistake that reproduces every failing case

    def __str__(self) -> str:
        mark = "PASS" if self.passed else ("TODO" if self.status == "not implemented" else "FAIL")
        head = f"[{mark}] {self.name}: {self.points:g}/{self.max_points:g} points"
        return f"{head}\n{self.message}" if self.message else head

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else ("#9a6700" if self.status == "not implemented" else "#cf222e")
        mark = "passed" if self.passed else self.status if self.status != "graded" else "failed"
        ticks = "".join("&#10003;" if ok else "&#10007;" for _, ok, _ in self.cases)
        body = f"<pre style='margin:4px 0;white-space:pre-wrap;word-break:normal;overflow-wrap:anywhere'>{html.escape(self.message)}</pre>" if self.message else ""
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
    expected = expected.detach()
    if tuple(got.shape) != tuple(expected.shape):
        return f"expected shape {list(expected.shape)}, got {list(got.shape)}"
    if check_dtype and got.dtype != expected.dtype:
        return f"{WRONG_DTYPE}: expected {_dtype_name(expected.dtype)}, got {_dtype_name(got.dtype)}"
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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _integer_like(value) -> bool:
    return (type(value) is int or (isinstance(value, torch.Tensor) and value.dim() == 0
            and not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool))


def compare_value(expected, got, rel: float = 1e-9) -> str | None:
    """Compare plain numbers, tuples/lists element by element.

    Where an int is expected, every integer-like answer counts: a Python ``int`` or a 0-d integer
    tensor (NumPy integers arrive as ``int``, see :func:`plain_scalars`); ``bool`` and floats do not,
    and the message says what to return. Where a float is expected, a number or a 0-d floating
    tensor within ``rel``; a float32 answer that misses only by float32 rounding is told that its
    dtype is the problem.
    """
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
        if not _integer_like(got):
            return f"expected an int ({expected}), got {type(got).__name__} {_short(got)}: return a Python int or a 0-d integer tensor"
        got = int(got)
        return None if got == expected else f"expected {expected}, got {got}"
    if isinstance(expected, float):
        low_precision = isinstance(got, torch.Tensor) and got.dtype in (torch.float32, torch.float16, torch.bfloat16)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and (got.is_floating_point() or _integer_like(got)):
            got = float(got)
        if type(got) not in (int, float):
            return f"expected a number close to {expected:.6g}, got {type(got).__name__} {_short(got)}"
        if math.isfinite(got) and abs(got - expected) <= rel * max(1.0, abs(expected)):
            return None
        if low_precision and math.isfinite(got) and abs(got - expected) <= 1e-5 * max(1.0, abs(expected)):
            return f"{WRONG_DTYPE}: expected a float64 value, got a float32 one ({got!r}): keep the inputs' float64 dtype"
        return f"expected {expected:.6g}, got {got!r}"
    raise TypeError(f"compare_value cannot compare {type(expected).__name__}")


def plain_scalars(value):
    """A student's return value with NumPy scalars turned into Python ones (``numpy.int64`` -> ``int``,
    ``numpy.float64`` -> ``float``, ``numpy.float32`` -> a 0-d float32 tensor, keeping its precision
    visible), inside tuples, lists and dicts too. Everything else is returned as it is."""
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "dtype") and getattr(value, "shape", None) == ():
        kind = value.dtype.kind
        if kind == "b":
            return bool(value)
        if kind in "iu":
            return int(value)
        if kind == "f":
            return float(value) if value.dtype.itemsize == 8 else torch.tensor(float(value), dtype=torch.float32)
        return value
    if type(value) in (list, tuple):
        return type(value)(plain_scalars(v) for v in value)
    if type(value) is dict:
        return {k: plain_scalars(v) for k, v in value.items()}
    return value


def _short(value, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # a student object whose __repr__ raises must not crash the grader
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the contract between an exercise's text and its grader -------------------------------------

def form_of(value) -> set[str]:
    """The argument forms ``value`` shows, as the tokens an exercise announces in its text.

    ``"int"``, ``"float"``, ``"bool"``, ``"None"``, ``"str"``, ``"(int, int)"`` (a pair),
    ``"tensor float32"`` (one token per dtype), ``"empty tensor"`` (a tensor with a zero-length
    axis), ``"list of (int, int)"`` (lists and tuples by their elements' forms), ``"model"``
    (an ``nn.Module``), ``"function"``.
    """
    if value is None:
        return {"None"}
    if isinstance(value, bool):
        return {"bool"}
    if isinstance(value, int):
        return {"int"}
    if isinstance(value, float):
        return {"float"}
    if isinstance(value, str):
        return {"str"}
    if isinstance(value, torch.Tensor):
        forms = {f"tensor {_dtype_name(value.dtype)}"}
        if value.numel() == 0:
            forms.add("empty tensor")
        return forms
    if isinstance(value, torch.nn.Module):
        return {"model"}
    if isinstance(value, (tuple, list)):
        if len(value) == 2 and all(type(v) is int for v in value):
            return {"(int, int)"}
        if not value:
            return {"empty list"}
        inner = sorted(set().union(*(form_of(v) for v in value)))
        return {f"list of {' / '.join(inner)}"}
    if callable(value):
        return {"function"}
    return {type(value).__name__}


def _article(word: str) -> str:
    return "an" if word[:1] in "aeio" else "a"  # "a uint8", "an int64", "an (int, int) pair"


def _render_forms(forms) -> str:
    dtypes = [f.removeprefix("tensor ") for f in forms if f.startswith("tensor ")]
    rest = [f for f in forms if not f.startswith("tensor ") and f not in ("empty tensor", "None")]
    words = []
    if dtypes:
        empty = " (possibly empty)" if "empty tensor" in forms else ""
        words.append(f"{_article(dtypes[0])} {' or '.join(dtypes)} tensor{empty}")
    for form in rest:
        if form.startswith("("):
            words.append(f"an `{form}` pair")
        elif form.startswith("list of "):
            words.append(f"a list or tuple of {form.removeprefix('list of ').replace(' / ', ', ')} items")
        else:
            words.append(f"{_article(form)} {form}")
    if "None" in forms:
        words.append("`None`")
    return " or ".join(words)


def render_contract(exercise: "Exercise", cases: int | None = None) -> str:
    """The paragraph an exercise's text carries about its check, generated from the grader so the two
    cannot drift: the argument forms the checker passes, the calls it refuses, how points are given."""
    parts = [f"`{name}`: {_render_forms(forms)}" for name, forms in exercise.forms.items()]
    text = f"{CONTRACT_PREFIX} " + "; ".join(parts) + "."
    if exercise.forbidden:
        text += " Not allowed: " + ", ".join(f"`{name}`" for name in exercise.forbidden) + " (the check stops these calls)."
    count = f"{cases} cases" if cases is not None else "several cases"
    text += (f" Points: {exercise.points:g} times the share of the {count} that pass (the lecture's worked examples first,"
             " then random ones; your instructor's hidden cases are drawn the same way).")
    return text


CONTRACT_PREFIX = "**The check calls it with**"


@dataclass(frozen=True)
class Mistake:
    """A classic wrong version of an exercise, kept next to its oracle so a failing check can name it.

    ``fn`` has the student's signature and makes exactly that one mistake; ``message`` is the one
    sentence a student reads when ``fn`` reproduces their output on every failing case (what they
    did, and the lecture section that explains the right way).
    """

    key: str
    fn: Callable
    message: str


def section(lecture: str, title: str) -> str:
    """How a mistake's message points at the lecture that explains it: ``section("07", "Mean IoU")`` gives
    ``"lecture 07, section 'Mean IoU'"`` (a title, not a number, so that renumbering cannot break it;
    ``tests/test_grading_contract.py`` checks that every cited title is a heading of that lecture)."""
    return f"lecture {lecture}, section '{title}'"


def _resolve(name: str):
    """``"torch.nn.functional.conv2d"`` -> the object; ``"course_lib.visualize"`` -> the module."""
    module_name, _, attr = name.rpartition(".")
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    return getattr(importlib.import_module(module_name), attr)


class ForbiddenWatch:
    """Notices, while a student's function runs, any call of the functions an exercise forbids.

    ``forbidden`` holds dotted names: a function (``"torch.nn.functional.conv2d"``, caught under any
    alias, e.g. ``from torch.nn.functional import conv2d`` or through ``nn.Conv2d``), a tensor method
    (``"torch.Tensor.topk"``, caught as ``x.topk(...)``), a whole module (``"course_lib.visualize"``) or
    a package (``"torchvision.ops"``: every Python file under it).
    It uses ``sys.setprofile`` and only records: :attr:`hit` is the first forbidden name called.
    """

    def __init__(self, forbidden=()):
        self.names = tuple(forbidden)
        self.hit: str | None = None
        self._objects, self._codes, self._files, self._methods = {}, {}, {}, {}
        self._folders: list[tuple[str, str]] = []
        for name in self.names:
            if name.startswith("torch.Tensor."):
                self._methods[name.rpartition(".")[2]] = name
                continue
            target = _resolve(name)
            if inspect.ismodule(target) and hasattr(target, "__path__"):  # a package: every file under it
                self._folders += [(os.path.join(folder, ""), name) for folder in target.__path__]
            elif inspect.ismodule(target):
                self._files[getattr(target, "__file__", None)] = name
            elif hasattr(target, "__code__"):
                # A function made by a factory (torch's F.max_pool2d is one of several functions sharing
                # boolean_dispatch's code) is recognised by the functions it dispatches to.
                inner = [cell.cell_contents for cell in target.__closure__ or () if inspect.isfunction(cell.cell_contents)]
                for function in inner or [target]:
                    self._codes[function.__code__] = name
            else:
                self._objects[id(target)] = (target, name)
        self._previous = None

    def _profile(self, frame, event, arg):
        if self.hit is not None:
            return
        if event == "c_call":
            found = self._objects.get(id(arg))
            if found is not None and found[0] is arg:
                self.hit = found[1]
            elif self._methods and isinstance(getattr(arg, "__self__", None), torch.Tensor):
                self.hit = self._methods.get(getattr(arg, "__name__", None))
        elif event == "call":
            code = frame.f_code
            self.hit = self._codes.get(code) or self._files.get(code.co_filename)
            if self.hit is None and self._folders:
                self.hit = next((name for folder, name in self._folders if code.co_filename.startswith(folder)), None)

    def __enter__(self):
        if self.names:
            self._previous = sys.getprofile()
            sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        if self.names:
            if sys.getprofile() != self._profile and self.hit is None:  # the student's code replaced the watch
                self.hit = "sys.setprofile"
            sys.setprofile(self._previous)
        return False

    def message(self) -> str:
        return f"calls {self.hit}, which this exercise asks you not to use (write it yourself)"


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
    # The contract with the exercise's text (rendered into it by the authoring tool, checked by tests):
    # ``params`` the student's parameter names in order, ``forms`` the forms each argument takes in
    # the cases (tokens of :func:`form_of`), ``arguments(case)`` the case as {parameter: value} when
    # the default (``params`` zipped with ``case.args``, then ``case.kwargs``) does not fit.
    params: tuple = ()
    forms: dict = field(default_factory=dict)
    arguments: Callable = None
    forbidden: tuple = ()  # dotted names the student's code must not call (see ForbiddenWatch)
    mistakes: tuple = ()  # the classic wrong versions (:class:`Mistake`) a failing check can name

    def call(self, fn, case: Case):
        """Run the student's ``fn`` on ``case`` and return plain data."""
        if self.run is not None:
            return self.run(fn, case)
        return fn(*case.args, **case.kwargs)

    def expected(self, case: Case):
        """The right answer for ``case``: its hand-worked value, or the oracle's."""
        return case.expected if case.expected is not None else self.oracle(case)

    def bind(self, case: Case) -> dict:
        """``case`` as ``{parameter name: value}``, for checking its argument forms."""
        if self.arguments is not None:
            return self.arguments(case)
        if len(case.args) > len(self.params):
            raise ValueError(f"exercise {self.name} declares {len(self.params)} params, a case passes {len(case.args)} arguments")
        return {**dict(zip(self.params, case.args)), **case.kwargs}


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
