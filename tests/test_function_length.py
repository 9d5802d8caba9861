"""No function of ``pipeline/`` or ``flows/`` is longer than 60 lines, measured with ``ast``.

A function's length runs from its ``def`` line to its last line, docstring included, decorators
not; nested functions count inside their parent and on their own. Past 60 lines a function
usually does several things that read better as functions of their own.
"""

from __future__ import annotations

import ast

from tests.conftest import REPO

MAX_LINES = 60
# Functions allowed to be longer, each with why; an entry fails once its function fits.
ALLOWED: set[str] = set()


def _lengths(source: str) -> dict[str, int]:
    """``name: lines`` of every function in ``source``, by qualified name (``Class.method``,
    ``outer.inner``)."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _long_functions() -> dict[str, int]:
    long = {}
    for root in ("pipeline", "flows"):
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for name, length in _lengths(path.read_text()).items():
                if length > MAX_LINES:
                    long[f"{rel}:{name}"] = length
    return long


def test_the_measure_on_known_source():
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    source = f"@decorator\ndef fits():\n{body}\n\n\nasync def over():\n{body}\n    return x0\n"
    source += "class C:\n    def method(self):\n        def inner():\n            pass\n"
    assert _lengths(source) == {"fits": 60, "over": 61, "C.method": 3, "C.method.inner": 2}


def test_no_function_is_longer_than_60_lines():
    long = _long_functions()
    over = {k: v for k, v in long.items() if k not in ALLOWED}
    assert not over, f"functions over {MAX_LINES} lines (split them): {over}"
    fitting = ALLOWED - set(long)
    assert not fitting, f"these fit in {MAX_LINES} lines now: remove them from ALLOWED: {fitting}"
