"""Build ``exercises/`` from ``solutions/`` and stamp every notebook: ``python -m course_lib.authoring
[--check]``.

``solutions/NN_slug.ipynb`` is the single source of every exercise. In it, the code a student must
write sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; this module replaces each such
block with ``raise NotImplementedError()`` (the ``def`` line and docstring stay), strips outputs,
and writes ``exercises/NN_slug.ipynb``. It also

- gives solution cells and ``check(...)`` cells nbgrader-compatible metadata, and ends the text of
  each exercise with the paragraph its grader generates (:func:`~course_lib.grading.core.render_contract`:
  the argument forms the check passes, the calls it refuses, how points are given); both are
  written back into ``solutions/`` too, so both trees carry them;
- tags every exercise cell that would fail because it uses a stubbed function (or a name such a
  cell defines) with ``raises-exception``, so nbval can execute exercise notebooks too;
- stamps every notebook of ``lectures/``, ``solutions/`` and ``exercises/`` with the same first code
  cell (on Colab it installs the course from the address in ``pyproject.toml``; elsewhere it only
  imports and sets up) and an "Open in Colab" badge built from that address, so a fork of the
  course changes one line of ``pyproject.toml`` and runs ``make exercises``.

``--check`` rebuilds in memory and exits 1 if any notebook differs (CI and a test run it).
"""
from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from pathlib import Path

import nbformat

__all__ = ["strip_solutions", "build_exercise", "build_all", "annotate", "stamp", "setup_cell", "badge", "course_address", "main"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\w+)["']""")
ROOT = Path(__file__).resolve().parent.parent
TREES = ("lectures", "solutions", "exercises")
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\n*")
REQUIRES = re.compile(r"""course_lib\.setup\(\s*requires\s*=\s*["']([\d.]+)["']""")
SETUP_CELL = """\
import sys
if "google.colab" in sys.modules:  # on Colab only: install the course library once, keeping Colab's torch
    import importlib.util, importlib.metadata as meta, os, subprocess
    if importlib.util.find_spec("course_lib") is None:
        with open("/tmp/keep-colab-torch.txt", "w") as pins:
            pins.write("".join(f"{{name}}=={{meta.version(name)}}\\n" for name in ("torch", "torchvision")))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", pins.name,
                        os.environ.get("COURSE_PIP_SPEC", "{spec}")], check=True)
        importlib.invalidate_caches()

import course_lib
device = course_lib.setup(requires="{requires}")"""


def course_address(root: Path = ROOT) -> dict:
    """Where the course lives, from ``pyproject.toml``: ``repository`` (``[project.urls] Repository``,
    a GitHub address), ``branch`` and ``spec``, what the Colab cell gives pip: the package name once
    ``[tool.course] published = true``, else the repository as a ``git+`` address."""
    import tomllib

    path = root / "pyproject.toml" if (root / "pyproject.toml").exists() else ROOT / "pyproject.toml"
    meta = tomllib.loads(path.read_text())
    repository = meta["project"]["urls"]["Repository"].rstrip("/")
    if not repository.startswith("https://github.com/"):
        raise ValueError(f"[project.urls] Repository must be a https://github.com/ address, got {repository!r}")
    tool = meta.get("tool", {}).get("course", {})
    branch = tool.get("branch", "main")
    name = meta["project"]["name"]
    spec = name if tool.get("published", False) else f"{name} @ git+{repository}@{branch}"
    return {"repository": repository, "branch": branch, "spec": spec}


def setup_cell(requires: str, address: dict) -> str:
    """The first code cell of every notebook (see the module docstring)."""
    return SETUP_CELL.format(spec=address["spec"], requires=requires)


def badge(path: str, address: dict) -> str:
    """The "Open in Colab" badge of the notebook at ``path`` (relative to the course folder)."""
    where = address["repository"].removeprefix("https://github.com/")
    return f"[![Open In Colab]({BADGE_IMAGE})](https://colab.research.google.com/github/{where}/blob/{address['branch']}/{path})"


def stamp(nb, path: str, address: dict) -> None:
    """Give notebook ``nb`` (at ``path``, e.g. ``"lectures/01_conv_arithmetic.ipynb"``) the course's
    first code cell, keeping the library version it requires, and a badge atop its first markdown
    cell. In place."""
    code = next((cell for cell in nb.cells if cell.cell_type == "code"), None)
    if code is None or "course_lib.setup(" not in code.source:
        raise ValueError(f"{path}: the first code cell must call course_lib.setup(...), got {code.source[:80] if code else None!r}")
    found = REQUIRES.search(code.source)
    if found is None:
        raise ValueError(f"{path}: the first code cell must call course_lib.setup(requires=\"X.Y\")")
    code.source = setup_cell(found.group(1), address)
    title = next(cell for cell in nb.cells if cell.cell_type == "markdown")
    title.source = f"{badge(path, address)}\n\n{BADGE.sub('', title.source)}"


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


def _exercise(name: str):
    from .grading import get_exercise

    return get_exercise(name)


def _registered() -> set[str]:
    from .grading import exercise_names

    return set(exercise_names())


def _contract(name: str) -> str | None:
    """The grader-generated paragraph for exercise ``name`` (None while it declares no forms)."""
    from .grading.core import PUBLIC_SEED, case_generator, render_contract

    exercise = _exercise(name)
    if not exercise.forms:
        return None
    return render_contract(exercise, len(exercise.cases(*case_generator(PUBLIC_SEED))))


def _with_contract(markdown: str, contract: str | None) -> str:
    from .grading.core import CONTRACT_PREFIX

    kept = [p for p in markdown.rstrip().split("\n\n") if not p.startswith(CONTRACT_PREFIX)]
    return "\n\n".join(kept + ([contract] if contract else []))


def annotate(nb) -> None:
    """Give solution and check cells their nbgrader metadata, and end each exercise's text (the
    markdown cell above its solution cell) with its grader's contract paragraph. In place."""
    text = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            text = cell
            continue
        meta = cell.metadata
        if BEGIN in cell.source:
            names = _defined_names(cell.source)
            if not names:
                raise ValueError(f"a solution cell must define a function or class, got:\n{cell.source[:200]}")
            meta["nbgrader"] = {"grade": False, "grade_id": names[0], "locked": False, "schema_version": 3, "solution": True}
            contract = _contract(names[0]) if names[0] in _registered() else None
            if text is not None:
                text.source = _with_contract(text.source, contract)
            elif contract:
                raise ValueError(f"exercise {names[0]} needs a markdown cell above its solution cell")
        else:
            match = CHECK_CALL.search(cell.source)
            if match:
                name = match.group(1)
                meta["nbgrader"] = {
                    "grade": True, "grade_id": f"check_{name}", "locked": True,
                    "points": _exercise(name).points, "schema_version": 3, "solution": False,
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
    return nb


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _dump(nb) -> str:
    return nbformat.writes(nb) + "\n"


def _update(path: Path, text: str, check: bool, differ: list, root: Path) -> None:
    if not path.exists() or path.read_text() != text:
        differ.append(str(path.relative_to(root)))
        if not check:
            path.write_text(text)


def build_all(root: Path = ROOT, check: bool = False) -> list[str]:
    """Stamp every notebook, annotate the solutions in place and write the exercises (with ``check``,
    only compare); returns the paths (relative to ``root``) that differ. Only generated parts of a
    solution notebook change: its first cell, badge, nbgrader metadata and contract paragraphs."""
    differ: list[str] = []
    sources = sorted((root / "solutions").glob("*.ipynb"))
    if not sources:
        raise ValueError(f"root must contain solutions/*.ipynb, found none under {root}")
    address = course_address(root)
    (root / "exercises").mkdir(exist_ok=True)
    for path in sorted((root / "lectures").glob("*.ipynb")):
        lecture = _read(path)
        stamp(lecture, f"lectures/{path.name}", address)
        _update(path, _dump(lecture), check, differ, root)
    for path in sources:
        solution = _read(path)
        stamp(solution, f"solutions/{path.name}", address)
        annotate(solution)
        _update(path, _dump(solution), check, differ, root)
        exercise = build_exercise(solution)
        stamp(exercise, f"exercises/{path.name}", address)
        _update(root / "exercises" / path.name, _dump(exercise), check, differ, root)
    stale = sorted({p.name for p in (root / "exercises").glob("*.ipynb")} - {p.name for p in sources})
    differ += [f"exercises/{name} (no solution notebook)" for name in stale]
    return differ


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.authoring", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a notebook is out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="course folder holding lectures/, solutions/ and exercises/")
    args = parser.parse_args(argv)
    differ = build_all(args.root, check=args.check)
    if args.check:
        if differ:
            print("out of date (the first cell, badge, nbgrader metadata, contract paragraphs or exercises): " + ", ".join(differ))
            print("run `python -m course_lib.authoring` (make exercises) and commit the result")
            return 1
        print("every notebook is stamped and exercises/ is in sync with solutions/")
        return 0
    print(f"wrote {len(differ)} notebook(s)" + (": " + ", ".join(differ) if differ else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
