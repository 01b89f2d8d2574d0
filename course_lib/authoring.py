"""Build ``exercises/`` from ``solutions/``: ``python -m course_lib.authoring [--check] [--annotate]``.

``solutions/NN_slug.ipynb`` is the single source of every exercise. In it, the code a student must
write sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; this module replaces each such
block with ``raise NotImplementedError()`` (the ``def`` line and docstring stay), strips outputs,
and writes ``exercises/NN_slug.ipynb``. It also

- gives solution cells and ``check(...)`` cells nbgrader-compatible metadata (``--annotate``
  writes it back into ``solutions/``, so both trees carry it),
- tags every exercise cell that would fail because it uses a stubbed function (or a name such a
  cell defines) with ``raises-exception``, so nbval can execute exercise notebooks too.

``--check`` rebuilds in memory and exits 1 if ``exercises/`` differs (CI and a test run it).
"""
from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from pathlib import Path

import nbformat

__all__ = ["strip_solutions", "build_exercise", "build_all", "annotate", "main"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\w+)["']""")
ROOT = Path(__file__).resolve().parent.parent
BANNER = (
    "> **Exercise notebook.** Generated from `solutions/` by `python -m course_lib.authoring`; "
    "edit the solution notebook, not this file. Replace each `raise NotImplementedError()` with your "
    "code and run the `check(...)` cell under it for instant feedback."
)


def strip_solutions(source: str) -> str:
    """Replace each BEGIN/END SOLUTION block with ``raise NotImplementedError()`` at its indentation."""
    out, inside, indent = [], False, ""
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"source has a nested {BEGIN} at line {number}")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}raise NotImplementedError()")
        elif stripped == END:
            if not inside:
                raise ValueError(f"source has {END} without {BEGIN} at line {number}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"source has {BEGIN} without {END}")
    return "\n".join(out)


def _defined_names(source: str) -> list[str]:
    tree = ast.parse(source)
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]


def _names(source: str) -> tuple[set[str], set[str]]:
    """Names a cell reads and names it binds at top level (IPython magics are ignored)."""
    clean = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(clean)
    except SyntaxError:
        return set(), set()
    loads, stores = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (stores if isinstance(node.ctx, ast.Store) else loads).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stores.add(node.name)
    return loads, stores


def _points(name: str) -> float:
    from .grading import get_exercise

    return get_exercise(name).points


def annotate(nb) -> None:
    """Give solution and check cells their nbgrader metadata, in place."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata
        if BEGIN in cell.source:
            names = _defined_names(cell.source)
            if not names:
                raise ValueError(f"a solution cell must define a function or class, got:\n{cell.source[:200]}")
            meta["nbgrader"] = {"grade": False, "grade_id": names[0], "locked": False, "schema_version": 3, "solution": True}
        else:
            match = CHECK_CALL.search(cell.source)
            if match:
                name = match.group(1)
                meta["nbgrader"] = {
                    "grade": True, "grade_id": f"check_{name}", "locked": True,
                    "points": _points(name), "schema_version": 3, "solution": False,
                }


def build_exercise(solution) -> nbformat.NotebookNode:
    """The exercise notebook for one solution notebook (a new object; the input is not changed)."""
    nb = copy.deepcopy(solution)
    # Execution leaves notebook-level traces (interpreter version, widget state): keep only the kernel.
    nb.metadata = nbformat.NotebookNode(
        kernelspec=nb.metadata.get("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"}),
        language_info={"name": "python"},
    )
    annotate(nb)
    stubbed: set[str] = set()
    tainted: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            tags = [t for t in cell.metadata.get("tags", []) if t != "raises-exception"]
            if BEGIN in cell.source:
                cell.source = strip_solutions(cell.source)
                stubbed.update(_defined_names(cell.source))
            elif not CHECK_CALL.search(cell.source):
                loads, stores = _names(cell.source)
                if loads & (stubbed | tainted):
                    # This cell calls a stub (or uses what such a cell would have made): it must raise.
                    tags.append("raises-exception")
                    tainted |= stores
            if tags:
                cell.metadata["tags"] = tags
            else:
                cell.metadata.pop("tags", None)
        cell.metadata.pop("execution", None)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(BANNER, id="exercise-banner"))
    return nb


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _dump(nb) -> str:
    return nbformat.writes(nb) + "\n"


def build_all(root: Path = ROOT, check: bool = False, annotate_sources: bool = False) -> list[str]:
    """Write (or, with ``check``, compare) every exercise notebook; returns the names that differ."""
    differ = []
    sources = sorted((root / "solutions").glob("*.ipynb"))
    if not sources:
        raise ValueError(f"root must contain solutions/*.ipynb, found none under {root}")
    (root / "exercises").mkdir(exist_ok=True)
    for path in sources:
        solution = _read(path)
        if annotate_sources:
            annotate(solution)
            path.write_text(_dump(solution))
        text = _dump(build_exercise(solution))
        target = root / "exercises" / path.name
        if not target.exists() or target.read_text() != text:
            differ.append(path.name)
            if not check:
                target.write_text(text)
    stale = sorted({p.name for p in (root / "exercises").glob("*.ipynb")} - {p.name for p in sources})
    differ += [f"{name} (no solution notebook)" for name in stale]
    return differ


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.authoring", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when exercises/ is out of date")
    parser.add_argument("--annotate", action="store_true", help="also write nbgrader metadata into solutions/")
    parser.add_argument("--root", type=Path, default=ROOT, help="course folder holding solutions/ and exercises/")
    args = parser.parse_args(argv)
    differ = build_all(args.root, check=args.check, annotate_sources=args.annotate)
    if args.check:
        if differ:
            print("exercises/ is out of sync with solutions/ for: " + ", ".join(differ))
            print("run `python -m course_lib.authoring` and commit the result")
            return 1
        print("exercises/ is in sync with solutions/")
        return 0
    print(f"wrote {len(differ)} exercise notebook(s)" + (": " + ", ".join(differ) if differ else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
