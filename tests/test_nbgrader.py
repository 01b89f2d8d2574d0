"""The exercise notebooks work with nbgrader as the README says: nbgrader's own ``generate_assignment``
and ``autograde`` (through its Python API) on lecture 04's solutions, in a temporary course directory.

Under nbgrader a check cell prints its report and outputs its points, which nbgrader takes as the
cell's partial credit: a correct submission scores full marks even when the student's function raises
a warning (it is recorded, not written to stderr, which nbgrader would count as a failed cell), a
known mistake scores what ``check`` gives it, a stub scores 0, and nbgrader never warns that a check
cell's output "cannot be converted to a float".
"""
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import check, get_exercise

# nbgrader's own database code warns about its session handling; that is not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore:Object of type <Submitted:Warning")

ROOT = Path(__file__).resolve().parent.parent
LECTURE = "04_visualizing"
ASSIGNMENT = "ps04"
SOLUTION_CELL = "saliency_map"

# The saliency exercise's solution with a stray warning, and with a known mistake (|gradient| summed
# over the channels); the rest of each submission is the solution notebook's.
NOISY = '''import warnings

def saliency_map(model, image, target):
    warnings.warn("a stray warning from the student's code")
    x = image.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x[None])[0, target], x)
    return grad.abs().amax(0)'''
SUMMED = '''def saliency_map(model, image, target):
    x = image.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x[None])[0, target], x)
    return grad.abs().sum(0)'''


def submission(notebook, saliency_source=None):
    nb = nbformat.read(notebook, as_version=4)
    if saliency_source is not None:
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == SOLUTION_CELL)
        cell.source = saliency_source
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    pytest.importorskip("nbgrader")
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    course = tmp_path_factory.mktemp("course")
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / f"{LECTURE}.ipynb", course / "source" / ASSIGNMENT)
    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.course_id = "cnn-workbook"
    saved = {key: os.environ.get(key) for key in ("PATH", "COURSE_FAST", "OMP_NUM_THREADS", "PYTHONPATH")}
    # nbgrader runs `alembic` from PATH; kernels get the course library and fast, single-thread torch.
    os.environ.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", COURSE_FAST="1",
                      OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    try:
        api = NbGraderAPI(config=config)
        generated = api.generate_assignment(ASSIGNMENT)
        assert generated["success"], generated["log"] + generated.get("error", "")
        release = course / "release" / ASSIGNMENT / f"{LECTURE}.ipynb"
        source = course / "source" / ASSIGNMENT / f"{LECTURE}.ipynb"
        students = {"correct": submission(source, NOISY), "wrong": submission(source, SUMMED), "stub": submission(release)}
        logs = {}
        for student, nb in students.items():
            folder = course / "submitted" / student / ASSIGNMENT
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{LECTURE}.ipynb")
            result = api.autograde(ASSIGNMENT, student)
            assert result["success"], result["log"] + result.get("error", "")
            logs[student] = result["log"]
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            scores = {student: {grade.name: grade.score for notebook in gradebook.find_submission(ASSIGNMENT, student).notebooks
                                for grade in notebook.grades}
                      for student in students}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    autograded = {student: nbformat.read(course / "autograded" / student / ASSIGNMENT / f"{LECTURE}.ipynb", as_version=4)
                  for student in students}
    return {"scores": scores, "logs": logs, "autograded": autograded}


def points(name):
    return get_exercise(name).points


def test_a_correct_submission_scores_full_marks_despite_a_warning(graded):
    scores = graded["scores"]["correct"]
    assert scores == {f"check_{name}": points(name) for name in ("occlusion_map", "saliency_map", "class_visualization_step")}
    cell = next(c for c in graded["autograded"]["correct"].cells if c.metadata.get("nbgrader", {}).get("grade_id") == "check_saliency_map")
    assert not [out for out in cell.outputs if out.output_type == "stream" and out.name == "stderr"]
    printed = "".join(out.text for out in cell.outputs if out.output_type == "stream")
    assert "[PASS] saliency_map" in printed and "a stray warning" in printed


def test_a_known_mistake_scores_what_check_gives_it_and_is_named(graded):
    namespace = {}
    exec("import torch\n" + SUMMED, namespace)  # noqa: S102 - the test's own wrong answer
    expected = check("saliency_map", namespace["saliency_map"])
    assert 0 < expected.points < points("saliency_map") and expected.diagnosis == "sum over channels"
    assert graded["scores"]["wrong"]["check_saliency_map"] == pytest.approx(expected.points)
    assert graded["scores"]["wrong"]["check_occlusion_map"] == points("occlusion_map")
    cell = next(c for c in graded["autograded"]["wrong"].cells if c.metadata.get("nbgrader", {}).get("grade_id") == "check_saliency_map")
    printed = "".join(out.text for out in cell.outputs if out.output_type == "stream")
    assert "[FAIL] saliency_map" in printed and "adds the channels' |gradient|" in printed


def test_a_stub_scores_zero(graded):
    assert set(graded["scores"]["stub"].values()) == {0.0}


def test_nbgrader_reads_every_check_cell_as_a_number(graded):
    for student, log in graded["logs"].items():
        assert "cannot be converted" not in log and "treating other output as full credit" not in log, (student, log)
