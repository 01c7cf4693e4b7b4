"""Check that the layout shows the architecture: the import contracts, then the size limits.

    .venv/bin/python scripts/check_layout.py      # exit 1 on any breach (CI runs it)

1. Imports: the import-linter contracts in ``pyproject.toml`` (``[tool.importlinter]``):
   ``sourcing`` never imports ``oms``; inside ``sourcing`` the CLI sits over the
   what-if tooling, which sits over batch, which sits over the single-order
   engine, itself layered top-down (menu, the legs, the solver, the lower
   modules); no import cycle at any depth of ``sourcing`` or ``oms``.
2. Sizes, in ``src/`` (generated protobuf code aside): no module over
   1,000 lines, no class over 600, no function or method over 150. A long
   module, class or function is a sign that several concerns share a room;
   split it along its meaning, not by line count.

The store (``oms.store``) is one repository per aggregate; it never imports
the servicers or the jobs above it.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "src"
GENERATED = (SOURCES / "oms" / "v1",)
MAX_MODULE_LINES = 1000
MAX_CLASS_LINES = 600
MAX_FUNCTION_LINES = 150
#: Files exempt from the size limits, with the reason (and the work that removes it).
EXEMPT: dict[Path, str] = {}


@dataclass(frozen=True)
class Breach:
    path: Path
    line: int
    what: str
    lines: int
    limit: int

    def __str__(self) -> str:
        where = self.path.relative_to(ROOT)
        return f"{where}:{self.line}: {self.what} has {self.lines:,} lines (limit {self.limit:,})"


def size_breaches(path: Path) -> list[Breach]:
    """The module, classes and functions of ``path`` over their limits."""
    text = path.read_text(encoding="utf-8")
    found = []
    total = len(text.splitlines())
    if total > MAX_MODULE_LINES:
        found.append(Breach(path, 1, "module", total, MAX_MODULE_LINES))
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.ClassDef):
            kind, limit = f"class {node.name}", MAX_CLASS_LINES
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            kind, limit = f"function {node.name}", MAX_FUNCTION_LINES
        else:
            continue
        # From the decorators (part of the definition) to the last line of the body.
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        size = (node.end_lineno or node.lineno) - first + 1
        if size > limit:
            found.append(Breach(path, node.lineno, kind, size, limit))
    return found


def main() -> int:
    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    breaches = []
    for path in sorted(SOURCES.rglob("*.py")):
        if path in EXEMPT or any(path.is_relative_to(g) for g in GENERATED):
            continue
        breaches.extend(size_breaches(path))
    for breach in breaches:
        print(breach)
    print(
        f"sizes: {len(breaches)} breach(es) in {SOURCES.relative_to(ROOT)} "
        f"(exempt: {', '.join(str(p.relative_to(ROOT)) for p in EXEMPT)})"
    )
    return 1 if code or breaches else 0


if __name__ == "__main__":
    sys.exit(main())
