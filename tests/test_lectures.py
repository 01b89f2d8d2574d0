"""The committed lectures: executed top to bottom in full mode, with nothing a reader should not see."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))


def _text(output) -> str:
    text = output.get("text") or output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_lecture_is_committed_executed_in_full_mode_and_clean(path):
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not run top to bottom in one kernel: {counts}"
    outputs = [(i, out) for i, cell in enumerate(code) for out in cell.outputs]
    assert any("full mode" in _text(out) for _, out in outputs), f"{path.name}: setup() does not say full mode"
    for i, out in outputs:
        assert out.output_type != "error", f"{path.name}, code cell {i}: {out.ename}: {out.evalue}"
        assert out.get("name") != "stderr", f"{path.name}, code cell {i} wrote to stderr: {_text(out)[:200]!r}"
        assert not re.search(r"Traceback|Warning:|WARNING", _text(out)), f"{path.name}, code cell {i}: {_text(out)[:200]!r}"
