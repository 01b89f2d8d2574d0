"""The wheel alone is the course library a student installs: it holds every module the notebooks import,
the licence and the metadata the package index shows, and nothing else (no tests, solutions or notebooks)."""
import ast
import subprocess
import sys
import zipfile
from email.parser import Parser

import nbformat
import pytest

import course_lib
from course_lib.authoring import course_address
from wheel_env import ROOT, bare_venv, build_wheel, run_python

NOTEBOOKS = sorted(path for tree in ("lectures", "solutions", "exercises") for path in (ROOT / tree).glob("*.ipynb"))
DIST_INFO = f"cnn_workbook-{course_lib.__version__}.dist-info"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def notebook_imports() -> list[str]:
    """Every statement in the notebooks that imports from course_lib, as one line of code each."""
    lines = set()
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    lines |= {f"import {alias.name}" for alias in node.names if alias.name.split(".")[0] == "course_lib"}
                elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "course_lib":
                    lines.add(f"from {node.module} import {', '.join(alias.name for alias in node.names)}")
    return sorted(lines)


def test_notebook_imports_are_found():
    imports = notebook_imports()
    assert "import course_lib" in imports
    assert "from course_lib.grading import check, summary" in imports


def test_wheel_holds_the_library_licence_and_metadata_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"course_lib", DIST_INFO}
    assert not [name for name in names if name.endswith(".ipynb") or {"tests", "solutions", "exercises", "lectures"} & set(name.split("/"))]
    library = {path.relative_to(ROOT).as_posix() for path in (ROOT / "course_lib").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert library <= set(names), f"files of course_lib/ missing from the wheel: {sorted(library - set(names))}"

    archive = zipfile.ZipFile(wheel)
    assert archive.read(f"{DIST_INFO}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    meta = Parser().parsestr(archive.read(f"{DIST_INFO}/METADATA").decode())
    assert meta["Name"] == "cnn-workbook" and meta["Version"] == course_lib.__version__
    assert meta["License-Expression"] == "MIT"
    assert f"Repository, {course_address()['repository']}" in meta.get_all("Project-URL")
    assert meta["Description-Content-Type"] == "text/markdown"
    assert any(req.startswith("torch>=") for req in meta.get_all("Requires-Dist"))
    assert not any(req.startswith("jupyterlab") and "extra" not in req for req in meta.get_all("Requires-Dist"))


def test_twine_accepts_the_metadata(wheel):
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASSED" in checked.stdout


def test_the_wheel_alone_runs_every_notebook_import(wheel, tmp_path):
    python = bare_venv(tmp_path / "venv")
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert run_python(python, "import importlib.util; print(importlib.util.find_spec('course_lib'))", empty) == "None\n"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check", str(wheel)],
                               cwd=empty, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    imports = "\n".join(notebook_imports())
    every_module = (
        "import importlib, pkgutil\n"
        "for module in pkgutil.walk_packages(course_lib.__path__, 'course_lib.'):\n"
        "    importlib.import_module(module.name)\n"
    )
    out = run_python(python, f"{imports}\nimport course_lib\n{every_module}print(course_lib.__file__, course_lib.__version__)", empty)
    where, version = out.split()
    assert where.startswith(str(tmp_path / "venv" / "lib")) and version == course_lib.__version__

    for script in ("course-grade", "course-release"):
        helped = subprocess.run([str(tmp_path / "venv" / "bin" / script), "--help"], cwd=empty, capture_output=True, text=True)
        assert helped.returncode == 0 and "usage" in helped.stdout, helped.stdout + helped.stderr
