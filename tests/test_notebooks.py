"""Every Colab notebook runs top to bottom with small settings; outputs are stripped in git."""

import glob
import os

import nbformat
import pytest
from conftest import FAST_COMPILE, REPO_ROOT
from nbclient import NotebookClient

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO_ROOT, "colabs", "*.ipynb")))
# Settings that shrink each notebook for the test suite; appended after its parameters cell.
SMALL_SETTINGS = {
    "01_quickstart.ipynb": "NUM_STEPS = 40",
    "02_learning_to_optimize.ipynb": "NUM_TRAIN = 6\nNUM_TEST = 8\nNUM_STEPS = 20\n"
                                     "GPS_ITERATIONS = 1",
    "03_neural_optimizer_search.ipynb": "SEARCH_BUDGET = 40\nFINAL_EPOCHS = 1",
}


def _load(path):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_outputs_are_stripped(path):
    for cell in _load(path).cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path, monkeypatch):
    notebook = _load(path)
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "each notebook has one cell tagged 'parameters'"
    overrides = SMALL_SETTINGS[os.path.basename(path)]
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(overrides))
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name, value in FAST_COMPILE.items():  # the kernel inherits the environment
        monkeypatch.setenv(name, value)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
