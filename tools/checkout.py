"""Make `facesift` importable from this checkout without installing it.

The benchmarks and GPU-session scripts also run where the project is not installed (a lent GPU
machine's own Python, another tool's virtual environment). The installed layout maps folders onto
one package (setup.py's `package_dir`), which a plain `sys.path` entry cannot express, so this
builds that layout once as a tree of symlinks under `.bench/package/` and puts it on `sys.path`
and `PYTHONPATH` (for the subprocesses and spawned workers the scripts start). Not package code:
setup.py leaves it out of the install.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("common", "curate", "shards", "pretrain", "finetune", "analysis")


def package_parent() -> Path:
    """A folder holding `facesift/` as it would be installed, built from this checkout's files."""
    parent = ROOT / ".bench" / "package"
    pkg = parent / "facesift"
    pkg.mkdir(parents=True, exist_ok=True)
    sources = [p for p in (ROOT / "tools").iterdir() if p.suffix == ".py" or p.name == "commands"]
    sources += [ROOT / name for name in SUBPACKAGES]
    for src in sources:
        link = pkg / src.name
        if not link.is_symlink():
            link.symlink_to(src, target_is_directory=src.is_dir())
    return parent


def ensure_importable() -> None:
    """Use the installed `facesift` where there is one, else this checkout's files."""
    if importlib.util.find_spec("facesift") is not None:
        return
    parent = str(package_parent())
    sys.path.insert(0, parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (parent, os.environ.get("PYTHONPATH")) if p)
