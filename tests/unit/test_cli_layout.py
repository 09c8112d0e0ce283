"""The command line's modules: one per area, none importing `custody.cli` (no cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

CUSTODY = Path(__file__).resolve().parents[2] / "custody"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_command_modules_never_import_the_parser() -> None:
    modules = sorted(CUSTODY.glob("cli_*.py"))
    assert len(modules) >= 8
    for path in modules:
        assert "custody.cli" not in _imports(path), f"{path.name} imports custody.cli"


def test_cli_only_builds_the_parser() -> None:
    tree = ast.parse((CUSTODY / "cli.py").read_text(encoding="utf-8"))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert functions <= {"build_parser", "main"}
