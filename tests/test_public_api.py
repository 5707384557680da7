"""Every public module says what it exports (``__all__``), and exports what it says."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import antiphon

SRC = Path(antiphon.__file__).parent


def _public_modules() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = rel.parts
        if any(p.startswith("_") and p != "__init__" for p in parts) or parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _public_modules()


def test_every_public_module_declares_all() -> None:
    missing = []
    for name in MODULES:
        path = SRC.parent.joinpath(*name.split("."))
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        tree = ast.parse(file.read_text(encoding="utf-8"))
        declared = any(
            isinstance(node, ast.Assign | ast.AnnAssign)
            and any(
                isinstance(t, ast.Name) and t.id == "__all__"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
            for node in tree.body
        )
        if not declared:
            missing.append(name)
    assert not missing, f"public modules without __all__: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)  # every optional extra is in the dev install
    for export in getattr(module, "__all__", []):
        assert hasattr(module, export), f"{name}.__all__ names {export!r}, which it lacks"
