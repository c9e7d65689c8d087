"""The walkthrough notebook runs top to bottom (nbclient) on the synthetic archive and shows its
plots inline, without warnings from the package."""
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_executes_with_inline_plots(synth_archive, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("ESC50ANN_SOURCE", str(synth_archive))
    monkeypatch.setenv("ESC50ANN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the confusion matrix and the learning curves, inline
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Warning" not in stderr and "IProgress" not in stderr, stderr
    if importlib.util.find_spec("ipywidgets") is None:  # no widget bars: one line per stage and fold
        assert "\r" not in stderr and "\x1b[" not in stderr, stderr[:500]
        assert "fold 1: accuracy" in stderr
    assert (tmp_path / "walkthrough-model.npz").is_file()
    first = "".join(o.get("data", {}).get("text/plain", "") for o in notebook.cells[1].outputs)
    assert first.startswith("Pipeline('quick'")  # the switch at the top, quick unless changed
    assert os.environ["ESC50ANN_SOURCE"] == str(synth_archive)


def test_no_text_bars_in_a_kernel_without_widgets(monkeypatch):
    """Text bars (carriage returns, cursor moves, one bar per parallel fold) pile up as hundreds of
    lines in a notebook cell: without ipywidgets a kernel gets the log's one line per stage."""
    from esc50ann import progress

    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    assert not progress.interactive()
    with progress.bar(total=3, position=1) as bar:
        assert bar.disable
