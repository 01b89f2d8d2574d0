"""Exercises are generated from solutions: in sync, stubbed, annotated, and graded as expected."""
import ast
import copy
import json
from pathlib import Path

import nbformat
import pytest

from course_lib import authoring
from course_lib.grading import check, exercise_names

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_exercises_are_in_sync_with_solutions():
    assert authoring.build_all(ROOT, check=True) == []


def test_strip_solutions_keeps_signature_and_docstring():
    source = 'def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n'
    stripped = authoring.strip_solutions(source)
    assert stripped == 'def f(x):\n    """Doc."""\n    raise NotImplementedError()'
    with pytest.raises(ValueError, match="BEGIN"):
        authoring.strip_solutions("### END SOLUTION\n")
    with pytest.raises(ValueError, match="END"):
        authoring.strip_solutions("### BEGIN SOLUTION\n")


def _namespace_of(nb) -> dict:
    """Execute the definition cells of a notebook (setup and solution cells) in a fresh namespace."""
    namespace: dict = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and ("nbgrader" in cell.metadata and cell.metadata.nbgrader.get("solution")
                                         or cell.source.lstrip().startswith(("import", "from"))):
            exec(compile(cell.source, "<cell>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solutions_pass_and_exercises_are_not_implemented(path):
    lecture = path.stem
    names = exercise_names(lecture)
    assert names, f"no exercises registered for {lecture}"
    solved = _namespace_of(nbformat.read(path, 4))
    stubbed = _namespace_of(nbformat.read(ROOT / "exercises" / path.name, 4))
    for name in names:
        assert check(name, solved[name]).passed, name
        result = check(name, stubbed[name])
        assert result.status == "not implemented" and result.points == 0, name


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_nbgrader_metadata_and_raises_tags(path):
    exercise = nbformat.read(ROOT / "exercises" / path.name, 4)
    solution_ids, check_ids, points = [], [], 0
    for cell in exercise.cells:
        meta = cell.metadata.get("nbgrader")
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            assert "BEGIN SOLUTION" not in cell.source
        if meta and meta["solution"]:
            solution_ids.append(meta["grade_id"])
            assert "raise NotImplementedError()" in cell.source
        if meta and meta["grade"]:
            check_ids.append(meta["grade_id"])
            points += meta["points"]
    names = exercise_names(path.stem)
    assert solution_ids == names
    assert check_ids == [f"check_{n}" for n in names]
    # The solution notebook carries the same metadata (nbgrader's source notebook).
    source_ids = [c.metadata["nbgrader"]["grade_id"] for c in nbformat.read(path, 4).cells if "nbgrader" in c.metadata]
    assert source_ids == [x for pair in zip(solution_ids, check_ids) for x in pair]
    # Cells that call a stub are allowed to raise; check cells never are.
    for cell in exercise.cells:
        if cell.cell_type != "code" or "nbgrader" in cell.metadata:
            continue
        loads = {n.id for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Name)}
        if loads & set(names):
            assert "raises-exception" in cell.metadata.get("tags", []), cell.source


def test_taint_propagates_to_cells_using_a_stubbed_result():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION'),
        nbformat.v4.new_code_cell("y = f(1)"),
        nbformat.v4.new_code_cell("print(y)"),
        nbformat.v4.new_code_cell("print(2)"),
    ]
    out = authoring.build_exercise(nb)
    tags = [c.metadata.get("tags", []) for c in out.cells if c.cell_type == "code"]
    assert tags == [[], ["raises-exception"], ["raises-exception"], []]


def test_check_mode_reports_differences(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "exercises").mkdir()
    for path in SOLUTIONS[:1]:
        (tmp_path / "solutions" / path.name).write_text(path.read_text())
    assert authoring.build_all(tmp_path, check=True) == [f"exercises/{SOLUTIONS[0].name}"]
    assert authoring.main(["--root", str(tmp_path)]) == 0
    assert authoring.main(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / "exercises" / "99_stale.ipynb").write_text(json.dumps({}))
    assert authoring.main(["--root", str(tmp_path), "--check"]) == 1


def _pyproject(folder: Path, repository: str, course: str = "") -> Path:
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "my-course"\n[project.urls]\nRepository = "{repository}"\n{course}')
    return folder


def test_course_address_comes_from_pyproject(tmp_path):
    address = authoring.course_address(_pyproject(tmp_path, "https://github.com/me/fork/", '[tool.course]\nbranch = "dev"\n'))
    assert address == {"repository": "https://github.com/me/fork", "branch": "dev",
                       "spec": "my-course @ git+https://github.com/me/fork@dev"}
    published = authoring.course_address(_pyproject(tmp_path, "https://github.com/me/fork", "[tool.course]\npublished = true\n"))
    assert published["spec"] == "my-course" and published["branch"] == "main"
    with pytest.raises(ValueError, match="Repository"):
        authoring.course_address(_pyproject(tmp_path, "https://gitlab.com/me/fork"))


def test_setup_cell_and_badge_use_the_address():
    address = {"repository": "https://github.com/me/fork", "branch": "dev", "spec": "my-course @ git+https://github.com/me/fork@dev"}
    cell = authoring.setup_cell("0.3", address)
    ast.parse(cell)
    assert '"my-course @ git+https://github.com/me/fork@dev"' in cell and 'course_lib.setup(requires="0.3")' in cell
    assert authoring.badge("exercises/01_x.ipynb", address) == (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        "(https://colab.research.google.com/github/me/fork/blob/dev/exercises/01_x.ipynb)")


def test_stamp_keeps_the_required_version_and_is_idempotent():
    address = authoring.course_address()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Lecture 99 · Test"),
                nbformat.v4.new_code_cell('import course_lib\ndevice = course_lib.setup(requires="0.7")'),
                nbformat.v4.new_code_cell("x = 1")]
    authoring.stamp(nb, "lectures/99_test.ipynb", address)
    once = copy.deepcopy(nb)
    authoring.stamp(nb, "lectures/99_test.ipynb", address)
    assert nb == once
    assert nb.cells[0].source == f"{authoring.badge('lectures/99_test.ipynb', address)}\n\n# Lecture 99 · Test"
    assert nb.cells[1].source == authoring.setup_cell("0.7", address) and nb.cells[2].source == "x = 1"
    nb.cells[1].source = "import course_lib"
    with pytest.raises(ValueError, match="course_lib.setup"):
        authoring.stamp(nb, "lectures/99_test.ipynb", address)


def test_setup_cell_off_colab_only_sets_up(monkeypatch, capsys):
    """Outside Colab the first cell never starts pip (tests/test_colab.py runs it on a simulated Colab)."""
    import subprocess
    import sys

    import course_lib

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"the set-up cell ran {a}"))
    namespace: dict = {}
    exec(authoring.setup_cell("0.1", authoring.course_address()), namespace)
    assert namespace["device"] == course_lib.device()
    assert capsys.readouterr().out.startswith("course_lib ")


def test_readme_badge_points_at_the_course():
    """The README's Colab badge is written by hand: a fork that moves the course must update it too."""
    badge = authoring.badge("lectures/01_conv_arithmetic.ipynb", authoring.course_address())
    assert badge in (ROOT / "README.md").read_text()
