"""The part of instructor grading that runs inside a student's kernel.

After a submission's notebook has run, the grader executes :func:`prepare` (which imports every
lecture's exercise module, seconds of torchvision imports that no exercise's time share should pay
for), then one cell per exercise in the same kernel::

    import course_lib.grading.harness as h; h.run("conv2d", "cases/conv2d.json", "outputs/conv2d.json", globals())

which calls the student's function on the instructor's case inputs and writes the raw outputs as
data-only JSON (:mod:`~course_lib.grading.serialize`). Nothing here is trusted: the student's code
shares this process and may have replaced any of it. That is harmless, because the only thing
that leaves the kernel is that file of outputs, and the grader reads it as plain data and does
every comparison itself, against its own copy of the cases.

The kernel also starts with :class:`DiscardedOutput` as ``sys.stdout`` and ``sys.stderr``, so a
notebook that prints megabytes costs nothing: grading never looks at what a notebook prints.
"""
from __future__ import annotations

import json
import os

from ipykernel.iostream import OutStream

from . import exercise_names, get_exercise, run_cases, serialize
from .core import Case

__all__ = ["prepare", "run", "DiscardedOutput"]

MESSAGE_LIMIT = 500  # characters of an exception message worth showing in feedback


def prepare() -> None:
    """Import every exercise module now, so that the first exercise's calls are timed alone."""
    exercise_names()


def run(name: str, cases_path: str, out_path: str, namespace: dict) -> None:
    """Call ``namespace[name]`` on the cases in ``cases_path``; write outputs to ``out_path``.

    The output document is ``{"outputs": [[status, value], ...]}`` with one pair per case run
    (see :func:`~course_lib.grading.run_cases`), or ``{"missing": true}`` when the notebook
    defines no ``name``. A value the format cannot carry becomes that case's ``"error"``.
    """
    with open(cases_path, encoding="utf-8") as file:
        inputs = serialize.loads(file.read())
    fn = namespace.get(name)
    if fn is None:
        document = {"missing": True}
    else:
        cases = [Case(args, kwargs, label=str(i)) for i, (args, kwargs) in enumerate(inputs)]
        limit = serialize.MAX_BYTES // 2 // max(len(cases), 1)
        outputs = []
        for status, value in run_cases(get_exercise(name), fn, cases):
            if status == "ok":
                try:
                    value = serialize.encode(value, limit)
                except serialize.UnsupportedValue as err:
                    status, value = "error", str(err)
                except Exception as err:  # an object that breaks when read is just a wrong answer
                    status, value = "error", f"returned a value that could not be read ({type(err).__name__})"
            elif status == "error":
                value = value[:MESSAGE_LIMIT]
            outputs.append([status, value])
        document = {"outputs": outputs}
    # Written under a temporary name so that a kernel killed mid-write leaves no partial file.
    partial = f"{out_path}.partial"
    with open(partial, "w", encoding="utf-8") as file:
        file.write(json.dumps(document, allow_nan=False, separators=(",", ":")))
    os.replace(partial, out_path)


class DiscardedOutput(OutStream):
    """A kernel's ``sys.stdout``/``sys.stderr`` that sends nothing anywhere."""

    def write(self, string: str) -> int:
        return len(string)

    def flush(self) -> None:
        pass
