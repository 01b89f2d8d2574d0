"""Helpers for test_wheel.py and test_colab.py: the course's wheel built from this checkout, and bare
virtual environments to install it in, far from the checkout.

A bare environment reuses this test environment's packages (torch, ipykernel, pip, ...) instead of
installing gigabytes again, but not the course itself: its site-packages lists, in a ``.pth`` file, a
folder of links to everything in our site-packages except the course's own entries. A folder listed
that way is only added to ``sys.path``; it is not a site directory, so the ``.pth`` files inside it
(the editable install's import hook) never run, and ``course_lib`` can only come from an install.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a build must not see: version control, environments, caches, build and grading outputs.
NOT_SOURCES = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", "grading-out", "release"}
COURSE_ENTRIES = ("course_lib", "cnn_workbook", "__editable__")


def build_wheel(where: Path) -> Path:
    """Build the wheel of the checkout's working tree into ``where`` and return its path.

    The build runs on a copy, so that setuptools' ``build/`` and ``*.egg-info`` folders never land in
    the checkout (and two test workers never share them), and without build isolation, which would
    download setuptools."""
    source = where / "source"
    shutil.copytree(ROOT, source, ignore=lambda _, names: [
        n for n in names if n in NOT_SOURCES or n.endswith((".egg-info", ".pyc"))])
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(where), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    shutil.rmtree(source)
    (wheel,) = where.glob("*.whl")
    return wheel


def bare_venv(where: Path) -> Path:
    """A new virtual environment at ``where`` that reaches this environment's packages but not the
    course (see the module docstring); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    shared = where / "shared-site-packages"
    shared.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(COURSE_ENTRIES) and entry.suffix != ".pth":
            (shared / entry.name).symlink_to(entry)
    (site / "shared-site-packages.pth").write_text(f"{shared}\n")
    return python


def run_python(python: Path, code: str, cwd: Path, **env) -> str:
    """Run ``code`` with ``python`` in ``cwd`` (one thread, no display, no PYTHONPATH); return stdout."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(OMP_NUM_THREADS="1", COURSE_THREADS="1", MPLBACKEND="Agg", **env)
    done = subprocess.run([str(python), "-c", code], cwd=cwd, env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout
