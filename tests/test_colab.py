"""Colab, simulated honestly: a notebook opened alone in a runtime that has torch but not the course.

The simulated runtime is a fresh virtual environment that reuses this environment's packages (torch,
ipykernel, pip; see wheel_env.py) but where ``course_lib`` is not importable, with a stand-in
``google.colab`` package that the interpreter imports at start-up, as Colab's kernel does. One lecture
is copied alone into an empty folder and run there by a kernel of that environment in fast mode. Its
first cell must install the course from the wheel built from this checkout (``COURSE_PIP_SPEC`` stands
in for the repository address, which a test cannot reach), quietly, without touching torch; running the
cell again must do nothing; ``setup()`` must enable Colab's custom widget manager; and the lecture must
run to its end.
"""
import json
import os
import shutil
from pathlib import Path

import nbformat
import torch
import torchvision
from nbclient import NotebookClient
from traitlets.config import Config

import course_lib
from wheel_env import ROOT, bare_venv, build_wheel, run_python

NOTEBOOK = ROOT / "lectures" / "02_pooling.ipynb"  # quick in fast mode, with plots and a widget explorer
SLICED_POLLS = Config({"AsyncKernelManager": {"client_class": "course_lib.kernel_client.SlicedPollClient"}})

FAKE_OUTPUT = '''"""Stands in for Colab's google.colab.output: records what the notebook asked of it."""
calls = []


def enable_custom_widget_manager():
    calls.append("enable_custom_widget_manager")
'''

# The cell after the notebook: spies on subprocess.run, so that re-running the first cell shows
# whether it starts pip again.
SPY = """import subprocess
pip_runs = []
real_run = subprocess.run
subprocess.run = lambda *args, **kwargs: pip_runs.append(args) or real_run(*args, **kwargs)"""

PROBE = """import json, os, sys, torch, torchvision, course_lib
from google.colab import output
print(json.dumps({"course_lib": course_lib.__file__, "torch": os.path.realpath(torch.__file__),
                  "versions": [torch.__version__, torchvision.__version__],
                  "widget_manager": output.calls, "pip_runs": len(pip_runs)}))"""


def colab_runtime(where: Path, wheel: Path) -> tuple[Path, Path]:
    """The simulated runtime's python and site-packages, and a kernelspec ``colab`` for it under
    ``where / "jupyter"``."""
    python = bare_venv(where / "venv")
    site = Path(run_python(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])", where).strip())
    fake = site / "google" / "colab"  # `google` stays a namespace package, as on Colab
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "output.py").write_text(FAKE_OUTPUT)
    (site / "colab-kernel-startup.pth").write_text("import google.colab\n")
    spec = where / "jupyter" / "kernels" / "colab"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (simulated Colab)",
        "language": "python",
        "env": {
            "COURSE_FAST": "1", "OMP_NUM_THREADS": "1", "COURSE_THREADS": "1",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "COURSE_PIP_SPEC": str(wheel),
            # Every dependency is already there, as on Colab; never reach for the network.
            "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        },
    }))
    return python, site


def test_a_lecture_alone_on_colab_installs_the_wheel_and_runs(tmp_path, monkeypatch):
    (tmp_path / "wheel").mkdir()
    wheel = build_wheel(tmp_path / "wheel")
    python, site = colab_runtime(tmp_path, wheel)
    content = tmp_path / "content"  # Colab's working folder, holding the notebook only
    content.mkdir()
    shutil.copy(NOTEBOOK, content)
    before = run_python(python, "import sys, importlib.util; print(importlib.util.find_spec('course_lib'), 'google.colab' in sys.modules)", content)
    assert before == "None True\n", "the simulated runtime must start without course_lib and with google.colab imported"

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    nb = nbformat.read(content / NOTEBOOK.name, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "google.colab" in first.source and "COURSE_PIP_SPEC" in first.source
    count = len(nb.cells)
    nb.cells += [nbformat.v4.new_code_cell(source) for source in (SPY, first.source, PROBE)]
    client = NotebookClient(nb, timeout=300, kernel_name="colab", resources={"metadata": {"path": str(content)}},
                            config=SLICED_POLLS)
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)  # raises CellExecutionError on an error

    assert [(out.output_type, out.get("name")) for out in first.outputs] == [("stream", "stdout")], "the first cell must be quiet"
    line = first.outputs[0].text
    assert line.startswith(f"course_lib {course_lib.__version__} | torch {torch.__version__}") and " on Colab" in line and "fast" in line
    spy, again, probe = nb.cells[count:]
    assert [out.text for out in again.outputs] == [line], "running the first cell again must print only the status line"
    facts = json.loads(probe.outputs[0].text)
    assert facts["pip_runs"] == 0, "running the first cell again must not start pip"
    assert Path(facts["course_lib"]).is_relative_to(site), facts["course_lib"]
    assert facts["torch"] == os.path.realpath(torch.__file__)
    assert facts["versions"] == [torch.__version__, torchvision.__version__]
    assert facts["widget_manager"] == ["enable_custom_widget_manager"] * 2  # once per setup() call

    installed = sorted(entry.name for entry in site.iterdir())
    assert f"cnn_workbook-{course_lib.__version__}.dist-info" in installed
    assert not [name for name in installed if name.lower().startswith("torch")], installed
    assert all(cell.execution_count for cell in nb.cells if cell.cell_type == "code")
    assert not [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"]
