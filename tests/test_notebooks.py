"""The notebooks in notebooks/ run top to bottom, offline, and are committed executed and current.

Each notebook is executed with nbclient in a kernel running this interpreter, from the notebooks/
folder, with a per-cell timeout; any error in any cell fails the test. The notebooks check their own
step-by-step NumPy computations against gpt2np's functions (assert_allclose / assert), so running
them is itself a test of both.
"""

from __future__ import annotations

import ast
import copy
import json
import pathlib
import re

import nbformat
import pytest

import gpt2np
from helpers import load_script

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
NAMES = [
    "01_tokenizer",
    "02_embeddings",
    "03_attention",
    "04_transformer_block",
    "05_gpt2_forward",
    "06_sampling",
    "07_kv_cache",
    "08_checkpoints_and_applications",
    "09_backprop",
    "10_training",
    "11_inside_the_model",
]
CELL_TIMEOUT = 150  # seconds; 10_training's training cell is the longest, under a minute alone
MAX_BYTES = 300 * 1024


def _load_builder():
    return load_script("build_notebooks")


builder = _load_builder()


def _read(name: str) -> nbformat.NotebookNode:
    path = NOTEBOOKS_DIR / f"{name}.ipynb"
    assert path.exists(), f"{path} is missing"
    return nbformat.read(str(path), as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_exactly_the_listed_notebooks_are_there():
    found = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    assert found == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_without_error(name):
    nb = copy.deepcopy(_read(name))
    for cell in _code_cells(nb):
        cell.outputs = []
    builder.execute(nb, timeout=CELL_TIMEOUT)  # raises CellExecutionError naming the cell on failure
    errors = [o for c in _code_cells(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}: error outputs {errors}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_executed_small_and_current(name):
    nb = _read(name)
    size = (NOTEBOOKS_DIR / f"{name}.ipynb").stat().st_size
    assert size < MAX_BYTES, f"{name}.ipynb is {size} bytes; keep it under {MAX_BYTES} (lower the figure dpi)"
    cells = _code_cells(nb)
    assert cells and cells[0].source == builder.SETUP.rstrip("\n"), f"{name}: first code cell is not the shared setup"
    not_run = [i for i, c in enumerate(cells) if c.source.strip() and c.execution_count is None]
    assert not not_run, f"{name}: code cells {not_run} were committed without being executed"
    errors = [o.get("ename") for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}: committed with errors {errors}"
    assert any("image/png" in o.get("data", {}) for c in cells for o in c.outputs), f"{name}: no plot"
    # the first output (the shared setup's) says plainly whether it is OpenAI's GPT-2 or the bundled model
    text = "".join(o.get("text", "") for o in cells[0].outputs if o.output_type == "stream")
    assert "OpenAI's GPT-2 124M weights" in text or f"BUNDLED MODEL {gpt2np.BUNDLED_MODEL}" in text, (
        f"{name}: the setup cell's output does not say which model the notebook uses"
    )
    again = [i for i, c in enumerate(cells) if i and "load_model()" in c.source]
    assert not again, f"{name}: code cells {again} load the model again; the setup cell's `model` is the one"
    assert "SMALL RANDOM MODEL" not in json.dumps(nb), f"{name}: still speaks of the old random stand-in"
    # The committed notebook is what the generator makes (edit scripts/notebook_cells, then rebuild).
    expected = [(c.cell_type, c.source) for c in builder.build(name).cells]
    assert [(c.cell_type, c.source) for c in nb.cells] == expected, (
        f"{name}.ipynb differs from scripts/notebook_cells/{name}.py; run scripts/build_notebooks.py {name[:2]}"
    )


def _library_function_names() -> set[str]:
    names = set()
    for path in (ROOT / "gpt2np").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    return names


@pytest.mark.parametrize("name", NAMES)
def test_notebook_imports_gpt2np_and_never_redefines_its_functions(name):
    nb = _read(name)
    source = "\n".join(c.source for c in _code_cells(nb))
    assert "gpt2np" in source
    assert "assert" in source, f"{name}: no check of the step-by-step computation against the library"
    defined = set()
    for cell in _code_cells(nb):
        code = "\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith("%"))
        defined |= {n.name for n in ast.walk(ast.parse(code)) if isinstance(n, ast.FunctionDef)}
    copies = defined & _library_function_names()
    assert not copies, f"{name} defines its own {sorted(copies)}; import them from gpt2np instead"


def test_readme_shows_a_picture_made_by_a_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pictures = re.findall(r"!\[[^\]]*\]\((docs/images/([0-9]{2}_\w+)\.png)\)", readme)
    assert pictures, "README.md shows no picture from docs/images/<notebook>.png"
    for rel, name in pictures:
        assert name in NAMES, f"README.md shows {rel}, which no notebook makes"
        made = builder.marked_picture(_read(name))
        assert made is not None, f"{name} has no cell marked {builder.PICTURE_MARK!r}"
        assert made == (ROOT / rel).read_bytes(), (
            f"{rel} is not the figure {name}.ipynb holds; run scripts/build_notebooks.py {name[:2]}"
        )
