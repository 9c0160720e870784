"""The house rules of docs/architecture.md, read from the code's own imports.

Every `import` and `from ... import` in the package (module level or inside a function, absolute
or relative) is an arrow; an arrow may only point at the module's own package or at a package
the layer table allows, and the arrows may not close a loop. Then, from outside the checkout,
`facesift` is the one import name the install provides.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"facesift": ROOT / "tools", "facesift.common": ROOT / "common", "facesift.shards": ROOT / "shards",
           "facesift.curate": ROOT / "curate", "facesift.pretrain": ROOT / "pretrain",
           "facesift.analysis": ROOT / "analysis", "facesift.finetune": ROOT / "finetune"}
# Scripts beside the package root, not package code (setup.py leaves them out of the install).
SCRIPTS = ("bench_", "gpu_", "checkout")
# Which package may import which (besides itself): docs/architecture.md.
ALLOWED = {
    "common": set(),
    "shards": {"common"},
    "curate": {"shards", "common"},
    "pretrain": {"shards", "common"},
    "analysis": {"shards", "pretrain", "common"},
    "finetune": {"shards", "pretrain", "common"},
    "top": {"common", "shards", "curate", "pretrain", "analysis", "finetune"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if package == "facesift" and len(rel.parts) == 1 and rel.name.startswith(SCRIPTS):
                continue
            parts = [*package.split("."), *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and f"facesift.{parts[1]}" in FOLDERS else "top"


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            # the longest known module the name starts with (a `from x import function` names x)
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("facesift") and name != module:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, set(modules)) for m, p in modules.items()}


def test_every_arrow_points_down_or_sideways_within_a_package():
    wrong = []
    for module, targets in _graph().items():
        room = _room(module)
        for target in targets:
            to = _room(target)
            if to != room and to not in ALLOWED[room] and not (target == "facesift" and room == "top"):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layer table:\n" + "\n".join(sorted(wrong))


def test_the_import_graph_has_no_loops():
    graph = _graph()
    state: dict[str, int] = {}
    loops = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                loops.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not loops, "import loops:\n" + "\n".join(loops)


def test_the_table_sees_the_real_arrows():
    """A guard against a reader that finds nothing: known arrows must be in the graph."""
    graph = _graph()
    assert "facesift.shards.writer" in graph["facesift.curate.pipeline"]
    assert "facesift.common.atomic" in graph["facesift.shards.index"]
    assert any(t.startswith("facesift.pretrain") for t in graph["facesift.analysis.embed"])


@pytest.mark.parametrize("name", ["tools", "analysis", "curate", "shards", "pretrain", "finetune", "common"])
def test_only_facesift_is_importable_from_outside_the_checkout(name):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", f"import {name}"], cwd="/", env=env,
                         capture_output=True, text=True)
    assert run.returncode != 0, f"`import {name}` works outside the checkout: {run.stdout}{run.stderr}"


def test_facesift_imports_from_outside_the_checkout():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import facesift, facesift.curate.pipeline, facesift.common.config, facesift.analysis.redundancy, "
            "facesift.finetune.grid, facesift.pretrain.train, facesift.cli; print(facesift.__version__)")
    run = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    help_run = subprocess.run([sys.executable, "-m", "facesift", "--help"], cwd="/", env=env,
                              capture_output=True, text=True)
    assert help_run.returncode == 0 and "curate" in help_run.stdout, help_run.stderr
