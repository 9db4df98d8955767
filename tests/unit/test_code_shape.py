"""The shape the maintainers keep the code in (issue 30): in services/ and libs/, no module
over 400 lines and no function over 60 (ruff's C901 keeps each function's complexity <= 15)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    path
    for top in ("services", "libs")
    for path in (ROOT / top).rglob("*.py")
    if "/src/" in path.as_posix()
)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_the_sources_are_found() -> None:
    assert len(SOURCES) > 50


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in SOURCES
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_60_lines() -> None:
    long = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert long == {}
