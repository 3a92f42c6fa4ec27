"""Build the notebooks in notebooks/ from the cell lists in scripts/notebook_cells/, run them, save them.

    python scripts/build_notebooks.py                 # build and execute all of them
    python scripts/build_notebooks.py 03 05           # only the notebooks whose name starts so
    python scripts/build_notebooks.py --no-execute    # write them without outputs

Each notebook's source is a Python file in ``scripts/notebook_cells/`` written in the "percent"
format: a line ``# %% [markdown]`` starts a markdown cell (its lines start with ``# ``), a line
``# %%`` starts a code cell. The first code cell of every notebook is ``SETUP`` below, identical
everywhere. A notebook is written only if every cell ran without error, so a failing notebook never
replaces a working one. Outputs (text and PNG figures) are kept so the notebooks read well on GitHub.

A code cell whose source contains the line ``# README picture`` marks the figure shown in the README:
building that notebook also writes the cell's first PNG to ``docs/images/<notebook>.png``
(``tests/test_notebooks.py`` checks the two stay byte-identical).

``execute(nb)`` is also what ``tests/test_notebooks.py`` uses to run the committed notebooks. It runs
them with one BLAS thread (``OMP_NUM_THREADS`` etc. default to 1), so the committed timings of
``07_kv_cache`` are single-threaded.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import sys
import tempfile
import time

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
CELLS_DIR = pathlib.Path(__file__).resolve().parent / "notebook_cells"
PICTURES_DIR = ROOT / "docs" / "images"
PICTURE_MARK = "# README picture"
CELL_TIMEOUT = 300  # seconds per cell; the cells themselves take well under a second or two

# The same first code cell in every notebook loads the model it uses: OpenAI's GPT-2 124M when its weights
# are already in the cache, otherwise the small trained model that ships inside the package; its output,
# the notebook's first, says which.
SETUP = '''\
# Shared setup (identical in every notebook).
import numpy as np
import matplotlib.pyplot as plt
import gpt2np
from gpt2np import GPT2, Config, Tokenizer

%matplotlib inline
%config InlineBackend.figure_formats = ["png"]
plt.rcParams.update({"figure.dpi": 72, "figure.figsize": (6.4, 3.6), "font.size": 9})
np.set_printoptions(precision=4, suppress=True, linewidth=110)

def load_model():
    """OpenAI's GPT-2 124M if it is in the cache (never downloads); else the bundled gpt2np-mini."""
    try:
        model = GPT2.from_pretrained("124M", offline=True, progress=False)
        print("Using OpenAI's GPT-2 124M weights from the cache.")
        return model, True
    except gpt2np.hub.DownloadError:  # not in the cache: use the model that ships with gpt2np
        model = GPT2.from_pretrained(gpt2np.BUNDLED_MODEL)
        c = model.config
        print(f"OpenAI's GPT-2 124M is not in the cache (`gpt2np download 124M` puts it there).\\n"
              f"Using the BUNDLED MODEL {gpt2np.BUNDLED_MODEL}: {c.n_layer} layers x {c.n_embd} wide, "
              f"{c.n_head} heads, {model.num_params() / 1e6:.1f} M parameters, trained by gpt2np on Austen's\\n"
              "novels, a public-domain Bible and six other novels. Same architecture and tokenizer as GPT-2,\\n"
              "far smaller.")
        return model, False

model, REAL = load_model()  # REAL: True for OpenAI's weights, False for the bundled model
'''


def parse_cells(text: str) -> list[tuple[str, str]]:
    """Split a percent-format file into (kind, source) pairs; kind is "markdown" or "code"."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' marker: {line!r}")
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            bad = [ln for ln in lines if ln and not ln.startswith("#")]
            if bad:
                raise ValueError(f"markdown line does not start with '#': {bad[0]!r}")
            lines = [ln[2:] if ln.startswith("# ") else ln[1:] for ln in lines]
        source = "\n".join(lines).strip("\n")
        out.append((kind, SETUP.rstrip("\n") if source == "SETUP" else source))
    return out


def build(name: str) -> nbformat.NotebookNode:
    """The unexecuted notebook for ``scripts/notebook_cells/<name>.py``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for kind, source in parse_cells((CELLS_DIR / f"{name}.py").read_text(encoding="utf-8")):
        maker = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(maker(source))
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name[:2]}-{i:02d}"  # stable ids: rebuilding gives small diffs
    return nb


def _kernel_manager(tmp: pathlib.Path):
    """A kernel that runs this very interpreter, whatever kernelspecs the machine has.

    ipykernel installs a "python3" kernelspec into sys.prefix, but a user-level spec of the same
    name (or none at all) could point elsewhere; a private spec pinned to sys.executable avoids that.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp / "kernels" / "gpt2np-python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (gpt2np notebooks)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])
    return KernelManager(kernel_name="gpt2np-python3", kernel_spec_manager=ksm)


# One BLAS/OpenMP thread per kernel unless the caller chose otherwise: on a small shared machine,
# multi-threaded BLAS waiting for busy cores turns millisecond matmuls into 10-20 ms stalls, which
# would make the test slower and the timings measured in 07_kv_cache meaningless.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def kernel_env() -> dict:
    """The environment the notebooks run in: this process's, with one BLAS thread by default."""
    return {**os.environ, **{k: os.environ.get(k, "1") for k in THREAD_VARS}}


def execute(nb: nbformat.NotebookNode, timeout: int = CELL_TIMEOUT) -> nbformat.NotebookNode:
    """Run every cell of ``nb`` in place, from the notebooks/ folder; raise on the first error."""
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(
            nb,
            km=_kernel_manager(pathlib.Path(tmp)),
            timeout=timeout,
            record_timing=False,
            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
        )
        # We pass our own kernel manager, so nbclient would leave the kernel running and its
        # connection file in the temp folder unless told to clean up.
        client.execute(env=kernel_env(), cleanup_kc=True)
    return nb


def marked_picture(nb: nbformat.NotebookNode) -> bytes | None:
    """The first PNG output of the code cell marked ``# README picture``, or None if no cell is."""
    for cell in nb.cells:
        if cell.cell_type == "code" and PICTURE_MARK in cell.source.splitlines():
            for out in cell.get("outputs", []):
                if "image/png" in out.get("data", {}):
                    return base64.b64decode(out["data"]["image/png"])
            raise ValueError(f"the cell marked {PICTURE_MARK!r} made no PNG figure")
    return None


def _write_atomically(path: pathlib.Path, write) -> None:
    tmp_path = path.with_name(path.name + ".tmp")
    write(tmp_path)
    os.replace(tmp_path, path)  # never a half-written file under the final name


def names() -> list[str]:
    return sorted(p.stem for p in CELLS_DIR.glob("[0-9][0-9]_*.py"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("only", nargs="*", help="build only notebooks whose name starts with these")
    parser.add_argument("--no-execute", action="store_true", help="write the notebooks without running them")
    args = parser.parse_args(argv)
    todo = [n for n in names() if not args.only or any(n.startswith(o) for o in args.only)]
    if not todo:
        parser.error(f"no notebook matches {args.only}; have {names()}")
    NOTEBOOKS_DIR.mkdir(exist_ok=True)
    for name in todo:
        start = time.perf_counter()
        nb = build(name)
        if not args.no_execute:
            execute(nb)
        path = NOTEBOOKS_DIR / f"{name}.ipynb"
        _write_atomically(path, lambda tmp: nbformat.write(nb, str(tmp)))
        picture = None if args.no_execute else marked_picture(nb)
        if picture is not None:
            PICTURES_DIR.mkdir(parents=True, exist_ok=True)
            _write_atomically(PICTURES_DIR / f"{name}.png", lambda tmp: tmp.write_bytes(picture))
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KB, "
              f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
