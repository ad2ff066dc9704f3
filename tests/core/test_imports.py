"""The library knows no process: `jobsys` imports none of its edges, the edges do not import
each other, and they reach transports only through the facade (jobsys.system).

Every import of every .py file counts, whether at the top, inside a function or under
TYPE_CHECKING, read with `ast` (nothing is imported to check)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("jobsys", "jobsys_cli", "worker", "nicegui_app", "jobsys_hub")

# package -> the modules (and their submodules) it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "jobsys": ("worker", "nicegui_app", "jobsys_cli", "jobsys_hub"),
    "worker": ("nicegui_app", "jobsys.transport", "jobsys_hub"),
    "nicegui_app": ("worker", "jobsys.transport", "jobsys_hub"),
    "jobsys_hub": ("worker", "nicegui_app", "jobsys_cli"),
}


def _module_of(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: pathlib.Path, root: pathlib.Path) -> list[tuple[int, tuple[str, ...]]]:
    """(line, candidates) for every imported name in the file. `from a import b` gives
    (a, a.b): b may be a submodule. Relative imports are resolved; a literal
    `importlib.import_module("x")` counts too."""
    module = _module_of(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, (alias.name,)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [(node.lineno, (base, f"{base}.{alias.name}")) for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.append((node.lineno, (node.args[0].value,)))
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(root: pathlib.Path = ROOT) -> list[str]:
    """'file:line: what' for each forbidden import, in file and line order."""
    found: dict[tuple[str, int, str], str] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root).as_posix()
            for line, candidates in _imported(path, root):
                for prefix in FORBIDDEN.get(package, ()):
                    if any(_within(c, prefix) for c in candidates):
                        hint = ": reach it through jobsys.system, the facade" if prefix == "jobsys.transport" else ""
                        found[(where, line, candidates[-1])] = (
                            f"{where}:{line}: {package} must not import {candidates[-1]} (no {prefix}{hint})")
    return [found[key] for key in sorted(found)]


def test_the_library_knows_no_process_and_edges_use_the_facade() -> None:
    found = violations()
    assert not found, "forbidden imports:\n  " + "\n  ".join(found)


def test_the_checker_sees_every_kind_of_import(tmp_path: pathlib.Path) -> None:
    """A guard on the guard: each form of import below is found, relative ones resolved."""
    (tmp_path / "worker" / "sub").mkdir(parents=True)
    (tmp_path / "worker" / "sub" / "probe.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import jobsys.transport.postgres\n"
        "from jobsys import transport\n"
        "if TYPE_CHECKING:\n"
        "    from jobsys.transport.base import Subscription\n"
        "def f():\n"
        "    from nicegui_app import hub\n"
        "    import importlib\n"
        "    importlib.import_module('jobsys.transport.supabase')\n"
        "from jobsys import system, errors\n"
        "from .. import options\n",
        encoding="utf-8")
    (tmp_path / "jobsys").mkdir()
    (tmp_path / "jobsys" / "__init__.py").write_text("from . import cli\nfrom jobsys_cli import main\n")
    found = violations(tmp_path)
    assert [v.split(": ")[0] for v in found] == [
        "jobsys/__init__.py:2", "worker/sub/probe.py:2", "worker/sub/probe.py:3", "worker/sub/probe.py:5",
        "worker/sub/probe.py:7", "worker/sub/probe.py:9"], found
