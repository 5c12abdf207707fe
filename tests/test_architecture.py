"""The package's layout: dependencies point one way, nothing imports in a
circle, every module imports on its own, and the model needs no extras.

Layers (docs/architecture.md): fields, then data -> tasks, and the model core
(kernels below it); training uses both; evaluation uses training; viz uses
evaluation; bench and cli sit on top.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import torchdnc

PACKAGE = Path(torchdnc.__file__).parent
CORE = {"addressing", "memory", "controller", "recurrent", "dnc", "baselines", "sparse", "tensorfile",
        "version", "zoo"}
# What each group may import (besides itself).
ALLOWED = {
    "fields": set(),
    "data": {"fields"},
    "envs": {"fields"},
    "tasks": {"fields", "data", "envs"},
    "kernels": set(),
    "core": {"fields", "kernels"},
    "package": {"core"},
    "training": {"fields", "data", "envs", "tasks", "kernels", "core", "package"},
    "evaluation": {"fields", "data", "envs", "tasks", "kernels", "core", "package", "training"},
    "viz": {"fields", "data", "envs", "tasks", "kernels", "core", "package", "training", "evaluation"},
    "bench": {"fields", "data", "envs", "tasks", "kernels", "core", "package", "training"},
    "study": {"fields", "data", "envs", "tasks", "kernels", "core", "package", "training",
              "evaluation", "viz", "bench"},
    "cli": {"fields", "data", "envs", "tasks", "kernels", "core", "package", "training", "evaluation",
            "viz", "bench", "study"},
    "main": {"cli"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def group(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    head = parts[1]
    if head in CORE:
        return "core"
    if head == "__main__":
        return "main"
    return head


def imports(path: Path, module: str, top_level: bool) -> set[str]:
    """torchdnc modules imported by ``path``: at module level, or inside functions."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level else [n for f in ast.walk(tree)
                                         if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                                         for n in ast.walk(f)]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("torchdnc")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.startswith("torchdnc"):
                known = modules()
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in known else base)
    return found


def test_dependencies_point_one_way():
    wrong = []
    for module, path in modules().items():
        mine = group(module)
        for imported in imports(path, module, top_level=True):
            theirs = group(imported)
            if theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{module} ({mine}) imports {imported} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    known = modules()
    graph = {m: {i for i in imports(p, m, top_level=True) if i in known and i != m}
             for m, p in known.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_no_function_level_imports_of_the_package():
    """Imports inside functions would hide circles; only the benchmark workers
    import the model inside the worker process, on purpose (after setting limits)."""
    found = [f"{m}: {sorted(imports(p, m, top_level=False))}" for m, p in modules().items()
             if group(m) != "bench" and imports(p, m, top_level=False)]
    assert not found, "\n".join(found)


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module as the first torchdnc module imported (torch stays loaded)."""
    names = [m for m in modules() if m != "torchdnc.__main__"]
    script = (
        "import importlib, sys, traceback\n"
        "import torch\n"
        f"names = {names!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'torchdnc' or m.startswith('torchdnc.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_model_needs_no_extras():
    """torchdnc.DNC with tqdm, yaml, matplotlib, tensorboard and faiss unimportable."""
    pyproject = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())
    core = {d.split(">")[0].split("=")[0].split("<")[0].strip()
            for d in pyproject["project"]["dependencies"]}
    assert core == {"torch", "numpy", "ninja"}
    extras = pyproject["project"]["optional-dependencies"]
    assert {"train", "plot", "ann", "all"} <= set(extras)
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tqdm', 'yaml', 'matplotlib', 'tensorboard', 'faiss'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch, torchdnc\n"
        "from torchdnc.sparse import SparseDNC\n"
        "y, state = torchdnc.DNC(input_size=3, output_size=2, implementation='plain')(torch.randn(2, 4, 3))\n"
        "y2, _ = SparseDNC(input_size=3, output_size=2)(torch.randn(2, 4, 3))\n"
        "print(tuple(y.shape), tuple(y2.shape))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 4, 2) (2, 4, 2)"


@pytest.mark.parametrize("name", ["torchdnc.addressing", "torchdnc.memory"])
def test_the_public_module_paths_stay(name):
    __import__(name)
    assert torchdnc.DNC.__name__ == "DNC" and torchdnc.DNCConfig.__name__ == "DNCConfig"


@pytest.mark.parametrize("model", ["dnc", "sparse"])
def test_checkpoints_written_before_the_reorganisation_still_load(model, tmp_path):
    """Runs written by torchdnc at commit c53c5b0 (tests/data/runs-c53c5b0)."""
    import shutil

    from torchdnc.cli import main
    from torchdnc.training import load_trained

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "data" / "runs-c53c5b0" / f"copy-{model}", run)
    config, task, loaded, payload = load_trained(run)
    assert payload["step"] == 6 and config.model == model
    assert main(["eval", str(run), "--batches", "1", "--batch-size", "4"]) == 0
    assert main(["train", "--resume", str(run), "--iterations=8"]) == 0
    assert load_trained(run)[3]["step"] == 8
