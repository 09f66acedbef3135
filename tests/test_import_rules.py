"""The engine's rooms keep their one-way imports (issue #30): import-linter's contracts in
pyproject.toml hold, a broken rule fails the check, and engine/'s module graph has no cycle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")
pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "breastus_cli.engine"


def _lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` with ``root``'s pyproject.toml (no cache
    written)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(root)},
                          timeout=120)


def test_import_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_rule_fails_the_check(tmp_path):
    """stats importing apply (a room importing a room above it) breaks three contracts."""
    shutil.copytree(ROOT / "breastus_cli", tmp_path / "breastus_cli",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    metrics = tmp_path / "breastus_cli/engine/stats/metrics.py"
    metrics.write_text(metrics.read_text()
                       + "\n\ndef _late():\n    from breastus_cli.engine.apply import inference\n")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "runs and stats import nothing else in engine BROKEN" in result.stdout
    assert "breastus_cli.engine.stats.metrics -> breastus_cli.engine.apply.inference" \
        in result.stdout


def _cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in imports.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(imports):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_engine_module_graph_has_no_cycle():
    """Every import counts, inside functions too (grimp reads them all)."""
    graph = grimp.build_graph("breastus_cli", cache_dir=None)
    modules = {m for m in graph.modules if m == ENGINE or m.startswith(ENGINE + ".")}
    imports = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules}
               for m in modules}
    assert len(modules) > 25  # the rooms and their modules were all found
    assert _cycles(imports) == []
