"""The layers of DESIGN.md: production code never imports the test package.

The one composition root, the command line (cli.py and its commands, cli_commands.py),
loads it inside the functions that serve ``--fake`` and ``fake-server`` (the user asked
for fakes), never at import time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "antiphon"


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_no_production_module_imports_the_test_package() -> None:
    offenders = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "testing":
            continue
        imported = _imports(path, top_level_only=str(rel) in ("cli.py", "cli_commands.py"))
        bad = sorted(m for m in imported if m.split(".")[:2] == ["antiphon", "testing"])
        if bad:
            offenders[str(rel)] = bad
    assert offenders == {}


def test_serving_and_the_command_line_load_no_fake() -> None:
    code = (
        "import sys, antiphon.server.app, antiphon.cli, antiphon.agent.pipeline;"
        "print([m for m in sys.modules if m.startswith('antiphon.testing')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
