"""Notebooks full of widget explorers run to the end (the sliced-poll kernel client, nbclient#312)."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from course_lib.kernel_client import SlicedPollClient

# The flag `make lectures` passes to nbconvert.
FLAG = f"--AsyncKernelManager.client_class={SlicedPollClient.__module__}.{SlicedPollClient.__name__}"


def test_make_lectures_uses_the_sliced_poll_client():
    assert FLAG in (Path(__file__).resolve().parent.parent / "Makefile").read_text()


def test_explorer_cells_do_not_stall_nbconvert(tmp_path):
    """Thirty explorer cells, each followed by a print, run while two busy loops load the cores. With
    nbclient's own client this stalled at some explorer in 3 of 3 runs, until the cell timeout (an hour,
    as in `make lectures`); with the sliced-poll client it ran to the end in 20-24 s."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import torch\ntorch.set_num_threads(1)\nfrom course_lib import widgets")]
    for i in range(30):
        nb.cells += [nbformat.v4.new_code_cell("widgets.conv_explorer();"), nbformat.v4.new_code_cell(f"print({i})")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "explorers.ipynb"
    nbformat.write(nb, path)
    command = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
               "--ExecutePreprocessor.timeout=3600", FLAG, str(path)]
    # The lectures' inline figures (make test's MPLBACKEND=Agg shows none): the stall needs their traffic.
    environment = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=300, env=environment)
    except subprocess.TimeoutExpired:
        raise AssertionError("nbconvert stalled at an explorer cell (a missed execute_reply)") from None
    finally:
        for process in busy:
            process.kill()
            process.wait()
    done = nbformat.read(path, as_version=4)
    printed = [out.text.strip() for cell in done.cells for out in cell.outputs if out.output_type == "stream"]
    assert printed == [str(i) for i in range(30)]
