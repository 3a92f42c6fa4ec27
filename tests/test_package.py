"""The package's dependencies and layering: gpt2np imports only numpy, regex, requests, tqdm and
the standard library (never a reference tool), and its modules import each other as
docs/architecture.md allows."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "gpt2np"
RUNTIME_DEPS = {"numpy", "regex", "requests", "tqdm"}
REFERENCE_TOOLS = {"torch", "transformers", "tiktoken", "tensorflow", "safetensors", "keras", "jax"}


def modules() -> dict[str, tuple[str, ast.Module]]:
    """'gpt2np.model', 'gpt2np.formats.npz', ... -> (the package it is in, its syntax tree)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        package = ".".join(parts[:-1])
        name = package if parts[-1] == "__init__" else ".".join(parts)
        out[name] = (package, ast.parse(path.read_text(encoding="utf-8")))
    return out


def imported(package: str, nodes) -> set[str]:
    """Absolute names of the modules imported by these statements of a module in ``package``."""
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module)
            else:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                if node.module:
                    found.add(".".join(base + [node.module]))
                else:  # from . import hub
                    found |= {".".join(base + [a.name]) for a in node.names}
    return found


def test_every_import_is_a_runtime_dependency_or_the_standard_library():
    allowed = RUNTIME_DEPS | set(sys.stdlib_module_names) | {"gpt2np", "__future__"}
    for name, (package, tree) in modules().items():
        roots = {m.split(".")[0] for m in imported(package, ast.walk(tree))}  # also imports inside functions
        assert roots <= allowed, f"{name} imports {sorted(roots - allowed)}"


def test_modules_import_only_what_architecture_md_allows():
    """Module-level imports of gpt2np modules follow the table of docs/architecture.md (an import
    inside a function is allowed, e.g. GPT2.load's of gpt2np.formats).  Every module is in the
    table, so a new one must be placed in the layering; "gpt2np.formats" stands for the package
    and its modules."""
    allowed = {
        "gpt2np.config": set(),
        "gpt2np.tokenizer": set(),
        "gpt2np.layers": set(),
        "gpt2np.backward": {"gpt2np.layers"},
        "gpt2np.parallel": set(),
        "gpt2np.kernels": {"gpt2np.layers", "gpt2np.parallel"},
        "gpt2np.model": {"gpt2np.config", "gpt2np.layers", "gpt2np.kernels", "gpt2np.parallel"},
        "gpt2np.sampling": {"gpt2np.layers"},
        "gpt2np.generation": {"gpt2np.sampling"},
        "gpt2np.scoring": {"gpt2np.layers"},
        "gpt2np.optim": set(),
        "gpt2np.train": {"gpt2np.backward", "gpt2np.optim", "gpt2np.model", "gpt2np.layers", "gpt2np.formats"},
        "gpt2np.tasks": {"gpt2np.generation"},
        "gpt2np.formats": {"gpt2np.formats", "gpt2np.config"},
        "gpt2np.hub": {"gpt2np.config", "gpt2np.formats"},
        "gpt2np.bundled": {"gpt2np.config"},
    }
    anything = {"gpt2np", "gpt2np.__main__", "gpt2np.cli"}  # the entry points

    def permitted(module: str, rules: set) -> bool:
        return module in rules or ("gpt2np.formats" in rules and module.startswith("gpt2np.formats."))

    for name, (package, tree) in modules().items():
        if name in anything:
            continue
        key = "gpt2np.formats" if name.startswith("gpt2np.formats") else name
        assert key in allowed, f"{name} is not in the layering table (docs/architecture.md): add it"
        rules = allowed[key]
        ours = {m for m in imported(package, tree.body) if m.startswith("gpt2np.")}
        bad = sorted(m for m in ours if not permitted(m, rules))
        assert not bad, f"{name} imports {bad} at module level (see docs/architecture.md)"
    assert set(allowed) - {"gpt2np.formats"} <= set(modules()), "the table names a module that does not exist"


def test_importing_and_using_gpt2np_loads_no_reference_tool(tmp_path):
    script = f"""
import importlib, pkgutil, sys
import gpt2np
for m in pkgutil.walk_packages(gpt2np.__path__, "gpt2np."):
    if m.name != "gpt2np.__main__":
        importlib.import_module(m.name)
from gpt2np import GPT2, Config, Tokenizer, generate_text, hub
model = GPT2.random(Config(n_vocab=50257, n_ctx=16, n_embd=8, n_head=2, n_layer=1))
generate_text(model, Tokenizer.gpt2(), "Hi", max_new_tokens=2)
model.save({str(tmp_path / "m.npz")!r}); GPT2.load({str(tmp_path / "m.npz")!r})
try:  # the download path imports requests and tqdm
    hub.download_file("file:///nonexistent/x", {str(tmp_path / "x")!r}, progress=False)
except OSError:
    pass
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert {"gpt2np", "numpy", "regex", "requests", "tqdm"} <= loaded  # the script did exercise them
    assert not loaded & REFERENCE_TOOLS, f"gpt2np loaded {sorted(loaded & REFERENCE_TOOLS)}"


def test_every_fixture_records_the_script_that_made_it_and_the_versions():
    """Each file under tests/fixtures is described by a JSON record: the file itself, the .json of
    the same name beside it, or a made_by.json in its folder or a parent folder below fixtures/."""
    import json

    fixtures = PACKAGE.parent / "tests" / "fixtures"

    def record(path: pathlib.Path) -> tuple[pathlib.Path, dict]:
        candidates = [path] if path.suffix == ".json" else []
        candidates.append(path.with_suffix(".json"))
        folder = path.parent
        while folder != fixtures.parent:
            candidates.append(folder / "made_by.json")
            folder = folder.parent
        for c in candidates:
            if c.is_file():
                data = json.loads(c.read_text(encoding="utf-8"))
                if "made_by" in data or "script" in data:
                    return c, data
        raise AssertionError(f"{path.relative_to(fixtures)}: no record of the script that made it")

    files = [p for p in fixtures.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        where, data = record(path)
        script = data.get("made_by") or data.get("script")
        assert (PACKAGE.parent / script).is_file() and script.startswith("scripts/"), f"{where}: {script}"
        versions = data.get("versions", data)
        tools = {"numpy", "torch", "transformers", "tiktoken_version", "tensorflow", "safetensors"}
        assert "python" in versions and tools & set(versions), f"{where}: no versions recorded"
