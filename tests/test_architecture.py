"""ARCHITECTURE.md's layer table is the rule: a module imports only modules of lower layers (imports deferred
into functions, as cli's are for startup time, included), and every module of workbench/ has a row."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def layers() -> dict[str, int]:
    table = {}
    for line in (REPO / "ARCHITECTURE.md").read_text().splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|(.*?)\|", line)
        if match:
            for name in re.findall(r"`(\w+)`", match.group(2)):
                table[name] = int(match.group(1))
    return table


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:  # from . import x, from .x import y
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "workbench":  # from workbench import x (a module)
            found |= {a.name for a in node.names if (REPO / "workbench" / f"{a.name}.py").exists()}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("workbench.")}
    return found


def test_every_module_imports_only_lower_layers():
    table = layers()
    modules = sorted(p for p in (REPO / "workbench").glob("*.py") if p.stem != "__init__")
    assert {p.stem for p in modules} <= set(table), "a module of workbench/ has no row in ARCHITECTURE.md"
    upward = [
        f"{p.stem} (layer {table[p.stem]}) imports {name} (layer {table[name]})"
        for p in modules
        for name in sorted(imported_modules(p))
        if table.get(name, 99) >= table[p.stem]
    ]
    assert not upward, upward


LONG_FUNCTION_LINES = 80  # ARCHITECTURE.md: no function body over this unless its docstring says why


def test_no_long_function_without_a_reason():
    """A function of workbench/ whose body (its docstring aside, as ruff formats it) runs over LONG_FUNCTION_LINES
    lines says why in its docstring: "Over 80 lines because ..."."""
    long = []
    for path in sorted((REPO / "workbench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                docstring = ast.get_docstring(node) or ""
                body = node.body[1:] if docstring else node.body
                length = body[-1].end_lineno - body[0].lineno + 1
                if length > LONG_FUNCTION_LINES and "80 lines because" not in docstring:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def test_the_model_knows_no_registry():
    """`models:/NAME@alias` is resolved to a folder by track before from_pretrained sees it (issue 20): models
    loads folders only."""
    assert not imported_modules(REPO / "workbench" / "models.py") & {"track", "registry"}
