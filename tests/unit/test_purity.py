"""The pure ledger core and the verifier import no I/O, cloud or media libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PURE = [
    "ledger/tree.py",
    "ledger/tiles.py",
    "ledger/note.py",
    "ledger/checkpoint.py",
    "ledger/proof.py",
    "ledger/entry.py",
    "ledger/integrate.py",
    "ledger/audit.py",
    "ledger/cosignature.py",
    "ledger/policy.py",
    "ledger/keys.py",
    "witness/protocol.py",
    "ingest/damage.py",
]
FORBIDDEN_IN_PURE = {
    "os",
    "subprocess",
    "sqlite3",
    "boto3",
    "botocore",
    "watchdog",
    "apscheduler",
    "ffmpeg",
    "av",
    "shutil",
    "socket",
    "fcntl",
}
FORBIDDEN_IN_VERIFY = {
    "boto3",
    "botocore",
    "watchdog",
    "apscheduler",
    "ffmpeg",
    "av",
    "custody",
    "ingest",
    "archive",
    "retention",
    "sqlite3",
}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("module", PURE)
def test_pure_core_has_no_io_imports(module: str) -> None:
    found = {m.split(".")[0] for m in imports(REPO / module)}
    assert not found & FORBIDDEN_IN_PURE, f"{module} imports {found & FORBIDDEN_IN_PURE}"
    ledger_deps = {m for m in imports(REPO / module) if m.startswith("ledger.")}
    allowed = {"ledger." + Path(p).stem for p in PURE} | {"ledger.errors"}
    assert ledger_deps <= allowed, f"{module} imports impure {ledger_deps - allowed}"


def test_ledger_imports_nothing_from_other_packages() -> None:
    for path in (REPO / "ledger").glob("*.py"):
        top = {m.split(".")[0] for m in imports(path)}
        assert not top & {"custody", "ingest", "archive", "retention", "verify"}, path


def test_verify_uses_only_pure_parts() -> None:
    pure_modules = {"ledger." + Path(p).stem for p in PURE}
    for path in (REPO / "verify").glob("*.py"):
        mods = imports(path)
        top = {m.split(".")[0] for m in mods}
        assert not top & FORBIDDEN_IN_VERIFY, path
        ledger_deps = {m for m in mods if m.startswith("ledger")}
        assert ledger_deps <= pure_modules, f"{path} imports {ledger_deps - pure_modules}"


@pytest.mark.parametrize("module", ["retention/policy.py", "retention/plan.py"])
def test_retention_rules_and_plans_are_pure(module: str) -> None:
    found = {m.split(".")[0] for m in imports(REPO / module)}
    assert not found & FORBIDDEN_IN_PURE, f"{module} imports {found & FORBIDDEN_IN_PURE}"
    assert not found & {"ledger", "archive", "ingest", "custody", "time"}, found


def test_retention_reaches_stores_only_through_its_port() -> None:
    """Dependencies point one way: retention -> ledger, never to archive or ingest."""
    for path in (REPO / "retention").glob("*.py"):
        top = {m.split(".")[0] for m in imports(path)}
        assert not top & {"custody", "ingest", "archive", "verify", "boto3"}, path


# The rule for the pure modules: no file I/O, no threads, no clock. A pure
# function gets its time, its bytes and its parallelism from the caller.
FORBIDDEN_MODULES_NO_EFFECTS = {
    "io",
    "pathlib",
    "tempfile",
    "threading",
    "_thread",
    "concurrent",
    "multiprocessing",
    "asyncio",
    "time",
}
CLOCK_READS = {"now", "utcnow", "today"}  # datetime.now(), date.today(), ...

RETENTION_PURE = ["retention/policy.py", "retention/plan.py"]


def effects(path: Path) -> list[str]:
    """Where ``path`` opens files, starts threads or reads the clock (line: what)."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "open"
        ):
            found.append(f"{node.lineno}: open()")
        elif isinstance(node, ast.Attribute) and node.attr in CLOCK_READS:
            found.append(f"{node.lineno}: .{node.attr} (reads the clock)")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in FORBIDDEN_MODULES_NO_EFFECTS:
                    found.append(f"{node.lineno}: import {a.name}")
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] in FORBIDDEN_MODULES_NO_EFFECTS
        ):
            found.append(f"{node.lineno}: from {node.module} import ...")
    return found


@pytest.mark.parametrize("module", PURE + RETENTION_PURE)
def test_pure_modules_open_no_files_start_no_threads_read_no_clock(module: str) -> None:
    found = effects(REPO / module)
    assert not found, f"{module} is not pure: {found}"


def test_the_purity_check_sees_open_threads_and_the_clock(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import threading\nfrom concurrent.futures import ThreadPoolExecutor\n"
        "from datetime import datetime\nimport time\n"
        "def f():\n    open('x')\n    return datetime.now(), time.time()\n"
    )
    found = " ".join(effects(src))
    for what in ("threading", "concurrent.futures", "open()", ".now", "import time"):
        assert what in found, what


def test_the_witness_protocol_is_pure() -> None:
    """The witness decides from bytes and stored values alone: no I/O, no clock (the
    caller passes the cosignature's time), no database, no web framework."""
    module = "witness/protocol.py"
    mods = imports(REPO / module)
    found = {m.split(".")[0] for m in mods}
    assert not found & (FORBIDDEN_IN_PURE | {"starlette", "uvicorn", "custody"}), found
    ledger_deps = {m for m in mods if m.startswith("ledger.")}
    allowed = {"ledger." + Path(p).stem for p in PURE} | {"ledger.cosignature"}
    assert ledger_deps <= allowed, f"{module} imports impure {ledger_deps - allowed}"
    assert not {m for m in mods if m.startswith("witness.")}, "the core imports no shell"
    assert not effects(REPO / module), effects(REPO / module)


def test_disclose_points_only_down() -> None:
    """disclose -> ledger: it never imports a composition root or a store."""
    for path in (REPO / "disclose").glob("*.py"):
        top = {m.split(".")[0] for m in imports(path)}
        bad = top & {"custody", "hub", "web", "archive", "ingest", "retention", "boto3"}
        assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("module", ["disclose/rules.py", "disclose/figures.py"])
def test_disclosure_rules_and_figures_read_no_clock(module: str) -> None:
    """The figures get their period from the caller: publishing a past year gives the
    same figures whenever it is run over the same log."""
    found = [f for f in effects(REPO / module) if "open()" not in f and "pathlib" not in f]
    assert not found, f"{module} is not pure: {found}"
